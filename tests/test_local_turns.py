"""Local models take turns on the cores: the in-process SLM and the embedded LLM never
compute at once within a process, unless told they may (``local_models_take_turns``)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from tierflow.agents.cores import LOCAL_TURNS
from tierflow.agents.protocol import Completion


class CountingLlama:
    """Stands in for a ``llama_cpp.Llama``: records when it is asked to compute."""

    def __init__(self) -> None:
        self.calls = 0

    def create_chat_completion(self, **_: Any) -> dict[str, Any]:
        self.calls += 1
        return {"choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}], "usage": {}}


class ReadyClient:
    def __init__(self) -> None:
        self.calls = 0

    def complete(self, messages: Any, *, schema: Any = None, max_tokens: int) -> Completion:
        self.calls += 1
        return Completion(
            text="ok", model="big", tier="llm", prompt_tokens=1, completion_tokens=1, latency_ms=1.0
        )


class RunningServer:
    alias = "big"
    running = True


@pytest.fixture(autouse=True)
def ready_llama(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stand-in llama is loaded already: nothing reaches a GGUF."""
    from tierflow.agents.slm import LlamaCppModel

    monkeypatch.setattr(LlamaCppModel, "_load_locked", lambda self: self._llama)


def _slm(take_turns: bool) -> tuple[Any, CountingLlama]:
    from tierflow.agents.slm import LlamaCppModel

    llama = CountingLlama()
    return LlamaCppModel(name="tiny", llama=llama, take_turns=take_turns), llama


def _llm(take_turns: bool) -> tuple[Any, ReadyClient]:
    from tierflow.agents.server import EmbeddedLLM

    client = ReadyClient()
    model = EmbeddedLLM(RunningServer(), take_turns=take_turns)  # type: ignore[arg-type]
    model._model = client  # type: ignore[assignment]  # the server has answered
    return model, client


@pytest.mark.parametrize("build", [_slm, _llm], ids=["slm", "embedded llm"])
def test_a_local_model_waits_while_another_computes(build: Any) -> None:
    model, counter = build(True)
    done = threading.Event()
    with LOCAL_TURNS:  # another local model is computing
        worker = threading.Thread(
            target=lambda: (model.complete([{"role": "user", "content": "hi"}], max_tokens=4), done.set())
        )
        worker.start()
        time.sleep(0.3)
        assert counter.calls == 0 and not done.is_set()
    worker.join(timeout=10)
    assert done.is_set() and counter.calls == 1


@pytest.mark.parametrize("build", [_slm, _llm], ids=["slm", "embedded llm"])
def test_models_on_split_cores_may_compute_at_once(build: Any) -> None:
    model, counter = build(False)
    with LOCAL_TURNS:
        assert model.complete([{"role": "user", "content": "hi"}], max_tokens=4).text == "ok"
    assert counter.calls == 1


def test_the_setting_reaches_both_tiers(tmp_path: Any) -> None:
    from tierflow.app import build_llm
    from tierflow.settings import Settings

    conf = Settings(
        data_dir=tmp_path, local_models_take_turns=False, embedded_llm_model=str(tmp_path / "m.gguf")
    )
    (tmp_path / "m.gguf").write_bytes(b"GGUF" + b"\0" * 64)
    assert build_llm(conf)._take_turns is False  # type: ignore[attr-defined]
    assert Settings(data_dir=tmp_path).local_models_take_turns is True
