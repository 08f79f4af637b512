"""The embedded LLM: llama-cpp-python's OpenAI-compatible server on 127.0.0.1.

When no endpoint is configured, tierflow starts ``python -m llama_cpp.server`` with the
bundled larger model, waits until ``/v1/models`` answers, reuses it for the life of the
process and stops it on exit (also when the parent dies: Linux ``PR_SET_PDEATHSIG``).
The LLM path then goes through the real ``openai`` client and a real HTTP server.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from functools import partial
from pathlib import Path
from typing import Any

from tierflow.agents.cores import turn
from tierflow.agents.llm import OpenAIChatModel
from tierflow.agents.protocol import Completion, Message, Tier
from tierflow.errors import ServerStartError

__all__ = ["EmbeddedServer", "EmbeddedLLM", "free_port", "server_command"]

log = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:  # runs in the child between fork and exec
    """The server is killed outright when its parent dies: uvicorn answers SIGTERM by
    finishing the requests in flight, and a generation nobody will read kept an orphaned
    server computing for minutes on the cores the next run needs. It holds no state."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class _Spawner:
    """Starts child processes from one long-lived thread.

    ``PR_SET_PDEATHSIG`` fires when the *thread* that forked the child ends, not the process:
    a server started from a short-lived thread (a Streamlit script run, a worker) would be
    killed when that thread returns. This daemon thread lives as long as the process.
    """

    def __init__(self) -> None:
        self._requests: queue.Queue[tuple[Callable[[], Any], Future[Any]]] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _serve(self) -> None:
        while True:
            call, future = self._requests.get()
            try:
                future.set_result(call())
            except BaseException as exc:  # handed to the caller
                future.set_exception(exc)

    def run(self, call: Callable[[], Any]) -> Any:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="tierflow-spawner", daemon=True)
                self._thread.start()
        future: Future[Any] = Future()
        self._requests.put((call, future))
        return future.result()


_spawner = _Spawner()


def server_command(
    model_path: Path,
    *,
    alias: str,
    host: str,
    port: int,
    n_ctx: int,
    n_threads: int | None = None,
    logits_all: bool = False,
    lora_path: Path | None = None,
    api_key: str | None = None,
) -> list[str]:
    """The command line of llama-cpp-python's server on one GGUF. ``logits_all`` keeps the
    logits of every position, which its server needs to return log-probabilities (an SLM's
    escalation signals) and costs time on every prompt, so the LLM's server goes without."""
    command = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(model_path),
        "--model_alias",
        alias,
        "--host",
        host,
        "--port",
        str(port),
        "--n_ctx",
        str(n_ctx),
        "--logits_all",
        str(logits_all).lower(),
        # its default ends a streamed reply as soon as another request arrives: workers
        # sharing the server would cut each other's replies off
        "--interrupt_requests",
        "false",
    ]
    if n_threads:
        command += ["--n_threads", str(n_threads)]
    if lora_path is not None:
        command += ["--lora_path", str(lora_path)]
    if api_key:
        command += ["--api_key", api_key]
    return command


class EmbeddedServer:
    """One llama.cpp server process serving one GGUF on the loopback interface."""

    def __init__(
        self,
        model_path: Path,
        *,
        alias: str,
        log_path: Path,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        startup_timeout: float = 120.0,
        host: str = "127.0.0.1",
        port: int | None = None,
        logits_all: bool = False,
        lora_path: Path | None = None,
        role: str = "LLM",
    ) -> None:
        self.model_path = model_path
        self.alias = alias
        self.log_path = log_path
        self.host = host
        self.port = port
        self._n_ctx = n_ctx
        self._n_threads = n_threads
        self._startup_timeout = startup_timeout
        self.logits_all = logits_all  # whether it returns log-probabilities
        self._lora_path = lora_path
        self.role = role  # whom the server serves, in messages: the embedded LLM, or the shared SLM
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    @property
    def _fix(self) -> str:
        if self.role == "LLM":
            return "Check TIERFLOW_EMBEDDED_LLM_MODEL, or set TIERFLOW_LLM_BASE_URL to use another endpoint."
        return "Check TIERFLOW_SLM_MODEL, or leave --shared-slm out to load the SLM in each worker."

    @property
    def _what(self) -> str:
        return "embedded LLM" if self.role == "LLM" else f"shared {self.role}"

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """The server process's id while it runs (``None`` before it starts or once it stops)."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    def start(self) -> str:
        """Start the server if it is not running; return its base URL once it answers."""
        with self._lock:
            if self.running:
                return self.base_url
            self.port = self.port or free_port(self.host)
            command = server_command(
                self.model_path,
                alias=self.alias,
                host=self.host,
                port=self.port,
                n_ctx=self._n_ctx,
                n_threads=self._n_threads,
                logits_all=self.logits_all,
                lora_path=self._lora_path,
            )
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            log.info("starting the %s server (%s) on %s", self._what, self.alias, self.base_url)
            with self.log_path.open("ab") as log_file:
                self._process = _spawner.run(
                    partial(
                        subprocess.Popen,
                        command,
                        stdout=log_file,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                        preexec_fn=_die_with_parent if sys.platform == "linux" else None,
                    )
                )
            atexit.register(self.stop)
            self._wait_healthy()
            return self.base_url

    def _wait_healthy(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self._startup_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                tail = _tail(self.log_path)
                self._process = None
                raise ServerStartError(
                    f"the {self._what} server exited while starting:\n{tail}",
                    hint=f"Full log: {self.log_path}. {self._fix}",
                )
            try:
                with urllib.request.urlopen(f"{self.base_url}/models", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        self.stop()
        raise ServerStartError(
            f"the {self._what} server did not answer within {self._startup_timeout:.0f} s",
            hint=f"See {self.log_path}; raise TIERFLOW_EMBEDDED_LLM_STARTUP_TIMEOUT on slow machines.",
        )

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def __enter__(self) -> EmbeddedServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


TOKENIZER = "/extras/tokenize/count"
"""Where llama-cpp-python's server counts a text's tokens."""


class EmbeddedLLM:
    """A ``ChatModel`` that starts its ``EmbeddedServer`` on the first call."""

    tier: Tier = "llm"

    def __init__(
        self, server: EmbeddedServer, *, timeout: float = 180.0, seed: int = 0, take_turns: bool = True
    ) -> None:
        """``take_turns``: compute only while no other local model of this process does
        (``tierflow.agents.cores``)."""
        self.server = server
        self._take_turns = take_turns
        self.name = server.alias
        self._timeout = timeout
        self._seed = seed
        self._model: OpenAIChatModel | None = None
        self._lock = threading.Lock()

    def _client_model(self) -> OpenAIChatModel:
        with self._lock:  # a second thread waits until the server answers, then shares it
            return self._client_model_locked()

    def _client_model_locked(self) -> OpenAIChatModel:
        if self._model is None or not self.server.running:
            from tierflow.agents.llm import bounded_client

            base_url = self.server.start()
            client = bounded_client(base_url, "embedded", timeout=self._timeout, max_retries=1)
            self._model = OpenAIChatModel(
                client, self.server.alias, response_format="llamacpp", seed=self._seed, tokenizer=TOKENIZER
            )
        return self._model

    @property
    def needs_start(self) -> bool:
        """Whether the next call would start the server first (a run traces that start as
        a step of its own, so that it is not counted as the first LLM step's time)."""
        return self._model is None or not self.server.running

    def load(self) -> None:
        """Start the server now rather than on the first call (idempotent)."""
        self._client_model()

    def count_tokens(self, text: str) -> int:
        """How many tokens ``text`` is for the model, counted by its server (started if it
        is not): a document is cut into chunks of the LLM's own tokens, not an estimate."""
        return self._client_model().count_tokens(text)

    def complete(
        self,
        messages: Sequence[Message],
        *,
        schema: dict[str, Any] | None = None,
        max_tokens: int,
    ) -> Completion:
        model = self._client_model()
        with turn(self._take_turns):
            return model.complete(messages, schema=schema, max_tokens=max_tokens)

    def close(self) -> None:
        self.server.stop()


def _tail(path: Path, lines: int = 15) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return "(no log)"
