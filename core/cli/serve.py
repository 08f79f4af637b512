"""``tierflow serve-slm``: one llama.cpp server on the SLM, for many workers and users.

Every batch worker, Ray actor and console process otherwise loads its own copy of the SLM.
This serves the configured SLM (a catalog name, a GGUF path or an ``hf:`` spec, with its
active LoRA adapter) once, through llama-cpp-python's OpenAI-compatible server, with the
log-probabilities the escalation signals need. Point every process at it with
``TIERFLOW_SLM=llamacpp:NAME`` (the address it prints).
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Annotated

import typer
from tierflow.cli.support import err, progress_display, remote_secret, settings
from tierflow.errors import TaskInputError
from tierflow.optional import require

__all__ = ["serve_slm"]

DEFAULT_PORT = 8080  # the llamacpp provider's default address (TIERFLOW_SLM=llamacpp:NAME)
API_KEY_VARIABLE = "TIERFLOW_SLM_API_KEY"


def serve_slm(
    host: Annotated[str, typer.Option(help="Address to bind (default: this machine only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port.")] = DEFAULT_PORT,
    remote: Annotated[
        bool,
        typer.Option(
            "--remote",
            help="Allow an address other machines can reach; every client must then send the API "
            f"key ({API_KEY_VARIABLE}, or a random one printed here).",
        ),
    ] = False,
    threads: Annotated[
        int | None, typer.Option(min=1, help="CPU threads (default: TIERFLOW_SLM_THREADS, else all cores).")
    ] = None,
    signals: Annotated[
        bool,
        typer.Option(
            help="Return log-probabilities, the SLM's escalation signals (--no-signals: faster prompts, "
            "judged without them)."
        ),
    ] = True,
) -> None:
    """Serve the SLM on an OpenAI-compatible server for many workers (Ctrl-C stops it)."""
    require("llama_cpp", "uvicorn", purpose="the SLM server")
    from tierflow.agents.server import server_command
    from tierflow.app import model_file, slm_adapter, slm_name

    conf = settings()
    if conf.slm_base_url:
        raise TaskInputError(
            "the SLM is already set to a server (TIERFLOW_SLM or TIERFLOW_SLM_BASE_URL)",
            hint="Unset it in this shell: serve-slm serves the in-process SLM (TIERFLOW_SLM_MODEL).",
        )
    given = os.environ.get(API_KEY_VARIABLE)
    api_key = (
        remote_secret(host, remote, given, what="the SLM server", needs="each client then needs the API key")
        or given
    )
    path = model_file(conf, conf.slm_model, "TIERFLOW_SLM_MODEL", progress_display())
    adapter = slm_adapter(conf, path)
    alias = slm_name(conf, adapter)
    command = server_command(
        path,
        alias=alias,
        host=host,
        port=port,
        n_ctx=conf.slm_n_ctx,
        n_threads=threads or conf.slm_threads,
        logits_all=signals,
        lora_path=adapter[1] if adapter else None,
        api_key=api_key or None,
    )
    shown = "::1" if host == "::1" else host
    err.print(f"the SLM {alias} on http://{shown}:{port}/v1 (Ctrl-C stops it)")
    err.print(
        f"point workers at it: TIERFLOW_SLM=llamacpp:{alias} TIERFLOW_SLM_BASE_URL=http://{shown}:{port}/v1"
    )
    if not signals:
        err.print("[yellow]warning:[/] no log-probabilities: SLM steps are judged without their signals.")
    if api_key and not os.environ.get(API_KEY_VARIABLE):
        # printed once, to the person who started it; never logged or traced
        sys.stderr.write(f"API key: {api_key}  (clients: {API_KEY_VARIABLE}={api_key})\n")
    try:
        code = subprocess.run(command, check=False, stdin=subprocess.DEVNULL).returncode
    except KeyboardInterrupt:
        code = 0
    raise typer.Exit(code)
