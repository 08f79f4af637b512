"""The LLM tier for real: the ``openai`` client against llama-cpp-python's server on 127.0.0.1."""

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from tierflow.agents.llm import OpenAIChatModel
from tierflow.agents.server import EmbeddedLLM, EmbeddedServer, free_port
from tierflow.errors import LLMUnavailableError, ServerStartError

pytestmark = pytest.mark.real_llm

CHOICE = {
    "type": "object",
    "properties": {"tool": {"type": "string", "enum": ["alpha", "beta"]}},
    "required": ["tool"],
}


@pytest.fixture(scope="module")
def server(slm_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    log = tmp_path_factory.mktemp("server") / "server.log"
    with EmbeddedServer(slm_path, alias="test-llm", log_path=log, n_ctx=2048, n_threads=2) as running:
        yield running


def client(base_url: str, **kwargs: object) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key="local", max_retries=0, **kwargs)  # type: ignore[arg-type]


def test_structured_completion_through_the_openai_client(server: EmbeddedServer) -> None:
    assert server.base_url.startswith("http://127.0.0.1:")
    model = OpenAIChatModel(client(server.base_url), "test-llm", response_format="llamacpp")
    reply = model.complete(
        [{"role": "user", "content": 'Reply {"tool": "gamma"}.'}], schema=CHOICE, max_tokens=20
    )
    assert json.loads(reply.text)["tool"] in {"alpha", "beta"}  # the server applied the schema
    assert reply.tier == "llm" and reply.model == "test-llm"
    assert reply.prompt_tokens > 0 and reply.completion_tokens > 0 and reply.latency_ms > 0


def test_plain_text_and_the_cap(server: EmbeddedServer) -> None:
    model = OpenAIChatModel(client(server.base_url), "test-llm", response_format="llamacpp")
    reply = model.complete([{"role": "user", "content": "List the numbers from 1 to 50."}], max_tokens=6)
    assert reply.truncated and reply.completion_tokens <= 6


def test_embedded_llm_starts_on_first_call_and_stops(slm_path: Path, tmp_path: Path) -> None:
    server = EmbeddedServer(slm_path, alias="lazy", log_path=tmp_path / "log", n_ctx=1024, n_threads=2)
    llm = EmbeddedLLM(server)
    assert not server.running
    reply = llm.complete([{"role": "user", "content": "Say yes."}], max_tokens=4)
    assert server.running and reply.text
    text = "The quick brown fox jumps over the lazy dog. " * 20
    counted = llm.count_tokens(text)  # by the server's tokenizer: a chunk is cut in its own tokens
    assert counted != -(-len(text) // 3) and 150 <= counted <= 250
    port = server.port
    llm.close()
    assert not server.running
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0  # nothing listens any more


def test_a_server_that_cannot_start_says_why(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"GGUF" + b"\x00" * 128)
    server = EmbeddedServer(bogus, alias="bogus", log_path=tmp_path / "server.log", startup_timeout=60)
    with pytest.raises(ServerStartError, match="exited while starting") as info:
        server.start()
    assert str(tmp_path / "server.log") in info.value.hint


def test_unreachable_endpoint_is_a_clear_error() -> None:
    port = free_port()  # nothing listens there
    model = OpenAIChatModel(client(f"http://127.0.0.1:{port}/v1", timeout=5), "any")
    with pytest.raises(LLMUnavailableError, match="could not reach the LLM") as info:
        model.complete([{"role": "user", "content": "hi"}], max_tokens=4)
    assert "TIERFLOW_LLM_BASE_URL" in info.value.hint


def test_a_rejected_response_format_points_at_the_setting(server: EmbeddedServer) -> None:
    # llama-cpp-python's server refuses OpenAI's json_schema form (it takes json_object + schema)
    model = OpenAIChatModel(client(server.base_url), "test-llm", response_format="json_schema")
    with pytest.raises(LLMUnavailableError, match="failed the request") as info:
        model.complete([{"role": "user", "content": "Pick one."}], schema=CHOICE, max_tokens=20)
    assert "TIERFLOW_LLM_RESPONSE_FORMAT=llamacpp" in info.value.hint


def test_concurrent_first_calls_share_one_server_that_outlives_their_threads(
    slm_path: Path, tmp_path: Path
) -> None:
    """Threads that come and go (Streamlit sessions) start the server once; it survives them."""
    server = EmbeddedServer(slm_path, alias="shared", log_path=tmp_path / "log", n_ctx=1024, n_threads=2)
    llm = EmbeddedLLM(server)
    replies: list[str] = []
    errors: list[BaseException] = []

    def ask() -> None:
        try:
            replies.append(llm.complete([{"role": "user", "content": "Say hi."}], max_tokens=4).text)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    try:
        threads = [threading.Thread(target=ask) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        assert not errors and len(replies) == 2
        pid = server._process.pid if server._process else None
        time.sleep(1.0)  # the threads that started it are gone
        assert server.running and server._process is not None and server._process.pid == pid
        assert llm.complete([{"role": "user", "content": "Again."}], max_tokens=4).completion_tokens > 0
    finally:
        llm.close()


def test_a_long_job_restarts_the_server_at_the_address_its_workers_were_given(
    slm_path: Path, tmp_path: Path
) -> None:
    """A llama.cpp server gains memory with every request; a long batch job restarts it
    between documents (``--recycle-after``). Its worker processes keep the address they were
    given, so the new server must answer there, to a client made before the restart."""
    from tierflow.agents.scripted import ScriptedModel
    from tierflow.agents.tiers import Tiers
    from tierflow.app import App
    from tierflow.batch.job import _JobProgress, _restart_servers
    from tierflow.records import Progress
    from tierflow.settings import Settings

    server = EmbeddedServer(slm_path, alias="again", log_path=tmp_path / "log", n_ctx=1024, n_threads=2)
    llm = EmbeddedLLM(server)
    notes: list[Progress] = []
    with App(Settings(data_dir=tmp_path / "data"), tiers=Tiers(ScriptedModel(), llm)) as app:
        try:
            _restart_servers(app, _JobProgress(notes.append), 200)
            assert not server.running and not notes  # a server the job never started stays off
            llm.load()
            address, first = server.base_url, server.pid
            worker = OpenAIChatModel(client(address), "again", response_format="llamacpp")
            _restart_servers(app, _JobProgress(notes.append), 200)
            assert server.base_url == address and server.pid not in (None, first)
            assert "the LLM server after 200 documents" in (notes[-1].note or "")
            reply = worker.complete([{"role": "user", "content": "Say yes."}], max_tokens=4)
            assert reply.completion_tokens > 0
        finally:
            llm.close()
