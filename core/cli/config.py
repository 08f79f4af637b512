"""``tierflow config``: the effective settings and where they come from."""

from __future__ import annotations

import json

from tierflow.cli.support import JsonOption, emit_json, err, out, settings, state

__all__ = ["show_config"]


def show_config(as_json: JsonOption = False) -> None:
    """Print the effective settings (secrets masked) and where they come from."""
    data = settings().masked()
    if as_json:
        emit_json(data)
        return
    for key, value in data.items():
        out.print(f"[bold]{key}[/] = {json.dumps(value, ensure_ascii=False)}", highlight=False)
    source = state.get("config_file") or "TIERFLOW_CONFIG or ~/.config/tierflow/config.toml if present"
    err.print(f"[dim]Sources: TIERFLOW_* environment variables, then {source}.[/]")
