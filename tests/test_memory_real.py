"""The document memory's answers on the real local SLM (the LLM tier scripted, so only the
SLM's behaviour is under test): the support FAQ example through the kit, and
``tierflow memory add`` / ``memory ask`` end to end in a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tierflow import run_graph
from tierflow.agents.slm import LlamaCppModel
from tierflow.agents.tiers import Tiers
from tierflow.graphs.examples import support_faq
from tierflow.memory import TraceStore
from tierflow.memory.documents import DocumentMemory
from tierflow.memory.embeddings import OfflineEmbeddings

from tests.kit_support import scripted_tiers

pytestmark = pytest.mark.real_slm


@pytest.fixture(scope="module")
def slm(slm_path: Path) -> LlamaCppModel:
    return LlamaCppModel(slm_path, n_ctx=4096, n_threads=2)


def test_the_support_faq_bot_answers_with_its_source_on_the_real_slm(
    slm: LlamaCppModel, store: TraceStore, embeddings: OfflineEmbeddings
) -> None:
    memory = DocumentMemory.open(None, embeddings)
    memory.forget_all()
    graph = support_faq.build_graph(memory)
    tiers = Tiers(slm, scripted_tiers().llm)  # policy slm: the LLM is never asked
    result = run_graph(
        graph,
        {"question": "How long does the password reset link stay valid?"},
        tiers=tiers,
        store=store,
        policy="slm",
    )
    assert result.ok, result.error
    assert "30 minutes" in result.state["answer"] and not result.state["handoff"]
    assert [Path(c["source"]).name for c in result.state["citations"]][:1] == ["account.md"]
    trace = store.get_run(result.run_id)
    assert [s.node for s in trace.steps] == ["ingest", "retrieve", "answer"]
    answer_step = trace.steps[-1]
    assert answer_step.evidence is not None and answer_step.evidence["cited"]
    assert {c.tier for c in answer_step.model_calls} == {"slm"}


def test_memory_add_and_ask_from_the_command_line(isolated_env: Path) -> None:
    env = dict(os.environ)  # a data folder of this test's own, the installed models
    tierflow = [sys.executable, "-m", "tierflow"]

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*tierflow, *args], env=env, capture_output=True, text=True, timeout=600)

    added = cli("memory", "add", str(support_faq.SAMPLE_DOCS), "--collection", "support", "--json")
    assert added.returncode == 0, added.stderr
    assert {entry["status"] for entry in json.loads(added.stdout)} == {"added"}

    asked = cli(
        "memory", "ask", "How many requests per minute does the API allow?", "--policy", "slm", "--json"
    )
    assert asked.returncode == 0, asked.stderr
    result = json.loads(asked.stdout)
    assert "120" in result["state"]["answer"] and "Sources: export.md" in result["state"]["answer"]

    empty = cli("memory", "ask", "  ")
    assert empty.returncode == 2 and "the question is empty" in empty.stderr
