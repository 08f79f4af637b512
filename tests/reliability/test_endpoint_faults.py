"""LLM endpoint faults, from a real local HTTP server that misbehaves on purpose: bounded
retries with backoff (honouring Retry-After), then a clear error, stored on the run; never
a traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import openai
import pytest
from tierflow.agents.llm import OpenAIChatModel
from tierflow.errors import LLMUnavailableError

from tests.reliability.faulty_server import Fault, completion, faulty_server
from tests.test_cli import no_traceback, tierflow

RETRIES = 2


def model(base_url: str, timeout: float = 2.0) -> OpenAIChatModel:
    client = openai.OpenAI(base_url=base_url, api_key="unused", timeout=timeout, max_retries=RETRIES)
    return OpenAIChatModel(client, "faulty")


def ask(llm: OpenAIChatModel) -> str:
    return llm.complete([{"role": "user", "content": "hi"}], max_tokens=8).text


FAULTS = {
    "500": (Fault(status=500, body={"error": {"message": "boom"}}), RETRIES + 1, "failed the request (500)"),
    "503 with Retry-After": (
        Fault(status=503, headers={"Retry-After": "0"}, body={"error": {"message": "busy"}}),
        RETRIES + 1,
        "failed the request (503)",
    ),
    "502 HTML": (Fault(status=502, body=b"<html>bad gateway</html>"), RETRIES + 1, "(502)"),
    "429 forever": (Fault(status=429, body={"error": {"message": "rate"}}), RETRIES + 1, "(429)"),
    "slow past the timeout": (Fault(delay_s=3), RETRIES + 1, "did not answer in time"),
    "cut mid-answer": (Fault(cut_after=40), RETRIES + 1, "broke mid-answer"),
    "not JSON": (Fault(body=b"<html>login page</html>"), 1, "a body that is not JSON"),
    "wrong shape": (Fault(body={"result": "ok"}), 1, "no choices"),
    "empty choices": (Fault(body={**completion(), "choices": []}), 1, "no choices"),
    "content not text": (
        Fault(body={**completion(), "choices": [{"index": 0, "message": {"content": 7}}]}),
        1,
        "without a text message",
    ),
}


@pytest.mark.parametrize("name", list(FAULTS))
def test_each_fault_ends_in_a_clear_error_after_bounded_retries(name: str, tally: Any) -> None:
    tally(faults_injected=1)
    fault, attempts, says = FAULTS[name]
    with faulty_server(fault) as server, pytest.raises(LLMUnavailableError) as info:
        ask(model(server.base_url, timeout=1.0))
    assert says in info.value.message
    assert info.value.hint
    assert len(server.requests) == attempts  # retried what may pass, not what cannot


def test_a_dripping_server_is_cut_off_at_the_total_deadline(tally: Any) -> None:
    """Headers at once, then a byte every 0.2 s: each read is quick, the whole reply would
    take minutes. Each attempt ends at the timeout, so the call ends within (1 + retries) ×
    timeout plus the back-off."""
    import time

    from tierflow.agents.llm import bounded_client

    tally(faults_injected=1)
    with faulty_server(Fault(drip_s=0.2)) as server:
        client = bounded_client(server.base_url, "unused", timeout=1.0, max_retries=RETRIES)
        started = time.monotonic()
        with pytest.raises(LLMUnavailableError, match="did not answer in time"):
            ask(OpenAIChatModel(client, "faulty"))
        elapsed = time.monotonic() - started
    assert elapsed < (1 + RETRIES) * 1.0 + 5.0, elapsed
    assert len(server.requests) == RETRIES + 1


def test_a_reply_over_the_size_cap_is_refused_not_stored(tally: Any) -> None:
    from tierflow.agents.llm import MAX_REPLY_BYTES, bounded_client

    tally(faults_injected=1)
    huge = {**completion(), "padding": "x" * (MAX_REPLY_BYTES + 10)}
    with faulty_server(Fault(body=huge)) as server:
        client = bounded_client(server.base_url, "unused", timeout=10.0, max_retries=0)
        with pytest.raises(LLMUnavailableError, match="over 4,194,304 bytes"):
            ask(OpenAIChatModel(client, "faulty"))


def test_unreachable_endpoint(tally: Any) -> None:
    tally(faults_injected=1)
    with faulty_server() as server:
        url = server.base_url
    with pytest.raises(LLMUnavailableError, match="could not reach the LLM") as info:
        ask(model(url))
    assert "TIERFLOW_LLM_BASE_URL" in info.value.hint


def test_retry_after_is_honoured_and_the_retry_succeeds(tally: Any) -> None:
    tally(faults_injected=1)
    limited = Fault(status=429, headers={"Retry-After": "1"}, body={"error": {"message": "slow down"}})
    with faulty_server(limited, Fault()) as server:
        assert json.loads(ask(model(server.base_url))) == {"steps": [], "answer": "ok"}
    first, second = server.requests
    assert second["at"] - first["at"] >= 0.9


def test_backoff_without_retry_after_waits_and_grows(tally: Any) -> None:
    tally(faults_injected=2)
    failing = Fault(status=500, body={"error": {"message": "boom"}})
    with faulty_server(failing, failing, Fault()) as server:
        ask(model(server.base_url))
    gaps = [b["at"] - a["at"] for a, b in zip(server.requests, server.requests[1:], strict=False)]
    assert len(gaps) == 2 and all(gap >= 0.2 for gap in gaps)  # backoff, not a tight loop


def test_a_failing_endpoint_fails_the_run_with_its_reason_stored(isolated_env: Path, tally: Any) -> None:
    with faulty_server(Fault(body=b"<html>proxy login</html>")) as server:
        env = {
            "TIERFLOW_LLM_BASE_URL": server.base_url,
            "TIERFLOW_LLM_MODEL": "faulty",
            "TIERFLOW_LLM_MAX_RETRIES": "0",
        }
        result = tierflow("run", "Plan my week", "--policy", "llm", "--json", env=env)
        no_traceback(result)
        assert result.returncode == 1
        run = json.loads(result.stdout)
        assert run["status"] == "failed" and "not JSON" in run["error"]
        shown = tierflow("runs", "show", run["run_id"], "--json", env=env)
    stored = json.loads(shown.stdout)
    assert stored["status"] == "failed" and "not JSON" in stored["error"]
    tally(faults_injected=1, runs_survived=1)
