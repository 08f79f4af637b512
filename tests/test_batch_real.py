"""Fitting text to the real SLM's context: chunks never exceed it (property-based, with its
own tokenizer), a 20,000-character file read by the task graph is summarized instead of
crashing the run, and `tierflow summarize` on real documents with the real SLM."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langgraph.checkpoint.memory import InMemorySaver
from tierflow.agents.fitting import MARGIN_TOKENS, split_to_fit
from tierflow.agents.policy import TierPolicy
from tierflow.agents.prompting import render_messages
from tierflow.agents.scripted import ScriptedModel
from tierflow.agents.slm import LlamaCppModel
from tierflow.agents.tiers import Tiers
from tierflow.evals.batch_corpus import CORPUS_DIR
from tierflow.graphs.runner import TaskRunner
from tierflow.graphs.summaries import CHUNK_INSTRUCTIONS, CHUNK_SUMMARY_TOKENS, chunk_budget
from tierflow.memory import TraceStore
from tierflow.tools.builtins import default_registry

pytestmark = pytest.mark.real_slm

SMALL_CONTEXT = 768  # small, so that texts of a few thousand characters need several chunks


@pytest.fixture(scope="module")
def slm(slm_path: Path) -> LlamaCppModel:
    model = LlamaCppModel(slm_path, name="qwen2.5-coder-0.5b", n_ctx=SMALL_CONTEXT, n_threads=2)
    model.load()
    return model


texts = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=0, max_size=4000
) | st.lists(
    st.sampled_from(["word", "Straße", "数据", "🙂", "x" * 300, "\n\n", ". ", " ", "1,234.5"]), max_size=600
).map("".join)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=texts, chunk_tokens=st.integers(min_value=16, max_value=1500))
def test_chunks_never_exceed_the_context(slm: LlamaCppModel, text: str, chunk_tokens: int) -> None:
    budget = chunk_budget(slm, chunk_tokens)
    assert budget <= chunk_tokens
    pieces = split_to_fit(slm, text, budget)
    for piece in pieces:
        assert slm.count_tokens(piece) <= budget
        prompt = render_messages(
            "step_summarize", instructions=CHUNK_INSTRUCTIONS, max_sentences=4, text=piece
        )
        sent = sum(slm.count_tokens(message["content"]) for message in prompt)
        assert sent + CHUNK_SUMMARY_TOKENS + MARGIN_TOKENS <= SMALL_CONTEXT
    assert "".join(pieces).split() == text.split() or "".join("".join(pieces).split()) == "".join(
        text.split()
    )


def test_a_long_file_read_by_the_task_graph_is_summarized_not_a_crash(
    slm_path: Path, store: TraceStore, tmp_path: Path
) -> None:
    text = "\n\n".join(
        (CORPUS_DIR / name).read_text()
        for name in ("git-2.39-release-notes.txt", "xz-utils-faq.txt", "python-dealing-with-bugs.txt")
    )[:20_000]
    (tmp_path / "notes.txt").write_text(text)
    slm = LlamaCppModel(slm_path, name="qwen2.5-coder-0.5b", n_ctx=4096, n_threads=2)
    llm = ScriptedModel(
        tier="llm",
        name="big",
        by_node={
            "plan": ['{"steps": ["Read notes.txt"], "answer": ""}'],
            "select_tool": ['{"tool": "read_file"}'],
            "extract_args": ['{"path": "notes.txt"}'],
            "answer": ["Release notes and FAQs."],
        },
    )
    policy = TierPolicy(
        nodes={"select_tool": "llm", "extract_args": "llm", "summarize": "slm", "answer": "llm"}
    )
    runner = TaskRunner(
        Tiers(slm, llm), default_registry(tmp_path), store, policy=policy, checkpointer=InMemorySaver()
    )
    result = runner.run("What is in notes.txt?")
    assert result.status == "succeeded", result.error
    trace = store.get_run(result.run_id)
    (read,) = [t for step in trace.steps for t in step.tool_calls]
    assert read.tool == "read_file" and len(read.result or "") == 20_000
    (summarize,) = [step for step in trace.steps if step.node == "summarize"]
    calls = summarize.model_calls
    assert len(calls) >= 3  # pieces that fit, then their summaries summarized
    assert all(c.tier == "slm" and not c.escalated and c.prompt_tokens + 256 <= 4096 for c in calls)
    answer_prompt = llm.calls[-1]["messages"][-1]["content"]
    assert len(answer_prompt) < 5000  # the answer saw the summary, not the 20,000 characters


def test_summarize_on_real_documents_with_the_real_slm(tmp_path: Path) -> None:
    folder = tmp_path / "reports"
    folder.mkdir()
    for name in ("man-db-faq.txt", "python-tutorial-interactive.html", "python-faq-installed.docx"):
        (folder / name).write_bytes((CORPUS_DIR / name).read_bytes())
    (folder / "broken.pdf").write_bytes(b"%PDF-1.7\n%truncated")
    out = tmp_path / "report.json"
    command = [sys.executable, "-m", "tierflow", "summarize", str(folder), "--out", str(out), "--json"]
    result = subprocess.run(
        [*command, "--local-only", "--max-sentences", "3"],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "TIERFLOW_SLM_THREADS": "2"},
        check=False,
    )
    assert "Traceback" not in result.stderr
    assert result.returncode == 1, result.stderr  # one document failed
    report = json.loads(out.read_text())
    status = {d["name"]: d for d in report["documents"]}
    assert status["broken.pdf"]["status"] == "failed" and status["broken.pdf"]["reason"].startswith(
        "corrupt:"
    )
    done = [d for d in report["documents"] if d["status"] == "succeeded"]
    assert len(done) == 3 and all(d["summary"] and d["llm_calls"] == 0 for d in done)
    assert report["synthesis"] and report["totals"]["slm_share"] == 1.0
    assert (
        "summarizing 4/4 · " in result.stderr and "failed broken.pdf" in result.stderr
    )  # a line per document

    again = subprocess.run(
        [*command, "--local-only", "--max-sentences", "3"],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    rerun = json.loads(out.read_text())
    assert [d["status"] for d in rerun["documents"] if d["name"] != "broken.pdf"] == ["skipped"] * 3, (
        again.stderr
    )
