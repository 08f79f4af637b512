"""Concurrent task runs sharing one real SLM queue for it: none crashes, every run and step
is stored, and no run starves (throughput and p95 by concurrency: `tierflow eval load`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tierflow.agents.slm import LlamaCppModel
from tierflow.evals.load import TASK, concurrent_runs, load_runner
from tierflow.memory import TraceStore

from tests.scripted import model_calls

pytestmark = pytest.mark.real_slm

WORKERS = 4


def test_concurrent_runs_share_one_slm(slm_path: Path, store: TraceStore, tmp_path: Path) -> None:
    slm = LlamaCppModel(slm_path, name="qwen2.5-coder-0.5b", n_threads=2)
    runner = load_runner(slm, store, tmp_path, WORKERS)
    outcome = concurrent_runs(runner, WORKERS, WORKERS)
    assert outcome["succeeded"] == WORKERS, outcome
    runs = store.list_runs(limit=100)
    assert len(runs) == WORKERS and {run.status for run in runs} == {"succeeded"}
    for run in runs:
        trace = store.get_run(run.id)
        assert [step.node for step in trace.steps] == ["plan", "select_tool", "extract_args", "act", "answer"]
        assert [call.tier for call in model_calls(trace)] == ["llm", "slm", "slm", "slm"]
        assert trace.task == TASK
    # Fair queueing: the SLM serves the runs in turn, so the last to finish waited for the
    # others' calls, not for ever (at most about WORKERS times the fastest run).
    assert outcome["fairness"] < WORKERS * 2.5, outcome
