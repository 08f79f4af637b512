"""``tierflow ui``: serve the task console (Streamlit)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from tierflow.cli.support import err, remote_secret, settings, state
from tierflow.optional import require

__all__ = ["serve_console"]


def serve_console(
    host: Annotated[
        str | None, typer.Option(help="Address to bind (default 127.0.0.1: this machine only).")
    ] = None,
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="Port (default 8501).")] = None,
    remote: Annotated[
        bool,
        typer.Option(
            "--remote",
            help="Allow an address other machines can reach; every session must then give the "
            "access token (TIERFLOW_UI_TOKEN, or a random one printed here).",
        ),
    ] = False,
) -> None:
    """Serve the task console (Streamlit) and print its address."""
    import subprocess

    require("streamlit", "pandas", "altair", purpose="the console")
    conf = settings()
    import tierflow.ui
    from tierflow.ui.auth import TOKEN_VARIABLE

    address, number = host or conf.ui_host, port or conf.ui_port
    env = dict(os.environ)
    token = remote_secret(
        address,
        remote,
        env.get(TOKEN_VARIABLE),
        what="the console",
        needs="each session then needs the access token",
    )
    if token:
        env[TOKEN_VARIABLE] = token
        err.print(f"[yellow]warning:[/] the console is reachable from other machines on {address}.")
    if state.get("config_file"):
        env["TIERFLOW_CONFIG"] = str(Path(state["config_file"]).resolve())
    command = _streamlit_command(Path(tierflow.ui.__file__).parent / "app.py", address, number)
    err.print(f"tierflow console on http://{address}:{number} (Ctrl-C stops it)")
    if token and not os.environ.get(TOKEN_VARIABLE):
        # printed once, to the person who started it; never logged or traced
        sys.stderr.write(f"access token: {token}  (open http://{address}:{number}/?token={token})\n")
    try:
        code = subprocess.run(command, env=env, check=False).returncode
    except KeyboardInterrupt:
        code = 0
    raise typer.Exit(code)


def _streamlit_command(script: Path, address: str, port: int) -> list[str]:
    return [
        sys.executable, "-m", "streamlit", "run", str(script),
        "--server.address", address, "--server.port", str(port), "--server.headless", "true",
        "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
        "--client.toolbarMode", "minimal", "--global.developmentMode", "false",
        "--client.showErrorDetails", "none",  # tracebacks go to the server's log, never the browser
        # the SLM tier's green as the accent: Streamlit's default red reads as "failed"
        "--theme.primaryColor", "#2e7d32",
    ]  # fmt: skip
