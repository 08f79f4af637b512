"""The SLM tier on llama-cpp-python's real server, started by ``tierflow serve-slm``: the task
graph and a kit graph run through ``tierflow run`` with option probabilities and value-token
log-probabilities in the trace, and a choice below the confidence floor escalates. The same
server stands in for the LLM endpoint, so the whole path is real."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from tierflow.agents.server import free_port
from tierflow.memory import TraceStore
from tierflow.records import StoredModelCall

pytestmark = [pytest.mark.real_slm, pytest.mark.real_llm]

SLM = "qwen2.5-coder-0.5b"


@pytest.fixture(scope="module")
def slm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``tierflow serve-slm`` on a free port, until the module's tests are done."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve-slm.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERFLOW_SLM")}
    command = [sys.executable, "-m", "tierflow", "serve-slm", "--port", str(port), "--threads", "2"]
    with log.open("wb") as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, log.read_text()
            try:
                with urllib.request.urlopen(f"{url}/models", timeout=2) as answer:
                    assert SLM in answer.read().decode()
                    break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)


def tierflow_run(url: str, data: Path, *arguments: str, **env: str) -> dict[str, object]:
    settings = {
        "TIERFLOW_SLM": f"llamacpp:{SLM}",
        "TIERFLOW_SLM_BASE_URL": url,
        "TIERFLOW_LLM_BASE_URL": url,  # the same small model stands in for the LLM
        "TIERFLOW_LLM_MODEL": SLM,
        "TIERFLOW_LLM_RESPONSE_FORMAT": "llamacpp",
        "TIERFLOW_MEMORY": "false",
        "TIERFLOW_DATA_DIR": str(data),
        **env,
    }
    done = subprocess.run(
        [sys.executable, "-m", "tierflow", "run", "--json", *arguments],
        env={**os.environ, **settings},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    return result


def slm_calls(data: Path, run_id: str) -> dict[str, list[StoredModelCall]]:
    store = TraceStore.from_url(f"sqlite:///{data / 'tierflow.db'}")
    calls: dict[str, list[StoredModelCall]] = {}
    for step in store.get_run(run_id).steps:
        for call in step.model_calls:
            calls.setdefault(call.node, []).append(call)
    return calls


def test_the_task_graph_on_a_served_slm_traces_its_signals(slm_server: str, tmp_path: Path) -> None:
    result = tierflow_run(slm_server, tmp_path, "Use the calculator: what is 17 * 23?", "--policy", "slm")
    calls = slm_calls(tmp_path, str(result["run_id"]))
    (select,) = calls["select_tool"][:1]
    assert select.tier == "slm" and select.model == SLM
    assert select.choice_probabilities and sum(select.choice_probabilities.values()) == pytest.approx(
        1, abs=0.02
    )
    assert select.missing_signals is None
    extract = calls["extract_args"][0]
    assert extract.signals is not None and extract.signals.tokens > 0
    assert result["status"] == "succeeded"  # (what the 0.5B answers is not under test here)


def test_a_kit_graph_on_a_served_slm_escalates_an_unsure_choice(slm_server: str, tmp_path: Path) -> None:
    report = "My card was charged twice for the March invoice. Please refund one payment."
    arguments = [
        "--graph",
        "tierflow.graphs.examples.triage:graph",
        "--input",
        json.dumps({"report": report}),
    ]
    result = tierflow_run(slm_server, tmp_path, *arguments, TIERFLOW_POLICY__MIN_CONFIDENCE="1.0")
    calls = slm_calls(tmp_path, str(result["run_id"]))
    slm, *escalated = calls["classify"]
    assert slm.tier == "slm" and slm.choice_probabilities and slm.confidence is not None
    assert slm.confidence < 1 and slm.escalated
    assert (slm.escalation_reason or "").startswith("low_confidence")
    assert [call.tier for call in escalated] == ["llm"]
    fields = calls["extract_fields"][0]
    assert fields.tier == "slm" and fields.signals is not None and fields.signals.min_logprob <= 0


@pytest.mark.parametrize("backend", ["local", "ray"])
def test_two_workers_share_one_slm_server(backend: str, tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    reports.mkdir()
    for name, text in {
        "outage.txt": "The payment service was down for 40 minutes on Monday. A expired certificate "
        "caused it. The team renewed it and added an alert for certificates close to expiry.",
        "release.md": "# Release 2.4\n\nVersion 2.4 adds dark mode and CSV export. It drops support "
        "for Python 3.8. Upgrading takes one command.",
    }.items():
        (reports / name).write_text(text, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIERFLOW_SLM", "RAY_ADDRESS"))}
    done = subprocess.run(
        [sys.executable, "-m", "tierflow", "summarize", str(reports), "--workers", "2", "--shared-slm"]
        + ["--backend", backend, "--policy", "slm", "--no-synthesis", "--json"],
        env={**env, "TIERFLOW_DATA_DIR": str(tmp_path / "data")},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["totals"]["succeeded"] == 2
    store = TraceStore.from_url(f"sqlite:///{tmp_path / 'data' / 'tierflow.db'}")
    calls = [
        call for run in store.list_runs() for step in store.get_run(run.id).steps for call in step.model_calls
    ]
    assert calls and all(call.tier == "slm" and call.model == SLM for call in calls)
    # nothing escalates under slm: the server goes without log-probabilities, and none is missed
    assert all(call.missing_signals is None and call.signals is None for call in calls)
    assert (tmp_path / "data" / "logs" / "slm-server.log").exists()
