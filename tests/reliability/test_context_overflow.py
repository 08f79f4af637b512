"""SLM faults on the real model: a prompt longer than its context (llama.cpp raises inside)
becomes an escalation on tiered steps and a clear, stored failure elsewhere; a reply cut at
max_tokens escalates too. (A missing or corrupt GGUF: tests/test_slm_real.py.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypedDict

import pytest
from langgraph.graph import END, START, StateGraph
from pydantic import BaseModel
from tierflow import TierContext, TierPolicy, extract, run_graph
from tierflow.agents.scripted import ScriptedModel
from tierflow.agents.slm import LlamaCppModel
from tierflow.agents.tiers import Tiers
from tierflow.errors import ContextOverflowError
from tierflow.graphs.examples import triage
from tierflow.memory import TraceStore

pytestmark = pytest.mark.real_slm

LONG_REPORT = "The export button crashes the app when I click it twice. " * 120  # ~1,500 tokens
FIELDS = {"product": "export", "severity": "high", "summary": "Export crashes the app."}


@pytest.fixture(scope="module")
def small_context(slm_path: Path) -> LlamaCppModel:
    model = LlamaCppModel(slm_path, name="qwen2.5-coder-0.5b", n_ctx=512, n_threads=2)
    model.load()
    return model


def test_an_overlong_prompt_is_a_clear_error(small_context: LlamaCppModel) -> None:
    with pytest.raises(ContextOverflowError, match="does not fit the SLM's context") as info:
        small_context.complete([{"role": "user", "content": LONG_REPORT}], max_tokens=8)
    assert "TIERFLOW_SLM_N_CTX" in info.value.hint
    short = small_context.complete([{"role": "user", "content": "Say hi."}], max_tokens=4)
    assert short.text  # the model is still usable after the refusal


def llm() -> ScriptedModel:
    return ScriptedModel(
        tier="llm",
        name="big",
        by_node={"classify": [{"label": "bug"}], "extract_fields": [FIELDS], "draft_reply": ["Thanks!"]},
    )


def test_a_tiered_step_escalates_an_overflow(
    small_context: LlamaCppModel, store: TraceStore, tally: Any
) -> None:
    result = run_graph(triage.graph, {"report": LONG_REPORT}, tiers=Tiers(small_context, llm()), store=store)
    assert result.ok, result.error
    trace = store.get_run(result.run_id)
    first = trace.steps[0].model_calls
    assert [(c.tier, c.escalated) for c in first] == [("slm", True), ("llm", False)]
    assert (first[0].escalation_reason or "").startswith("context_overflow: the prompt does not fit")
    tally(faults_injected=1, runs_survived=1)


def test_an_slm_only_run_fails_clearly_and_is_stored(
    small_context: LlamaCppModel, store: TraceStore, tally: Any
) -> None:
    result = run_graph(
        triage.graph,
        {"report": LONG_REPORT},
        tiers=Tiers(small_context, llm()),
        store=store,
        policy=TierPolicy.preset("slm"),
    )
    assert result.status == "failed"
    assert "does not fit the SLM's context" in (result.error or "")
    trace = store.get_run(result.run_id)
    assert trace.status == "failed" and "does not fit" in (trace.error or "")
    tally(faults_injected=1, runs_survived=1)


class Ticket(BaseModel):
    product: str
    severity: str
    summary: str


def test_an_slm_reply_cut_at_max_tokens_escalates(
    small_context: LlamaCppModel, store: TraceStore, tally: Any
) -> None:
    """A model that runs to its token limit (as one looping would) gives a cut-off reply:
    the step escalates with reason ``truncated``, never a crash or a half-parsed value."""

    class State(TypedDict, total=False):
        report: str
        ticket: Ticket

    builder: Any = StateGraph(State, context_schema=TierContext)
    builder.add_node("extract_ticket", extract(Ticket, inputs="report", into="ticket", max_tokens=6))
    builder.add_edge(START, "extract_ticket")
    builder.add_edge("extract_ticket", END)
    large = ScriptedModel(tier="llm", name="big", by_node={"extract_ticket": [FIELDS]})
    report = "The export button crashes the app when I click it twice."
    result = run_graph(builder.compile(), {"report": report}, tiers=Tiers(small_context, large), store=store)
    assert result.ok, result.error
    slm_call, llm_call = store.get_run(result.run_id).steps[0].model_calls
    assert slm_call.tier == "slm" and slm_call.escalated and slm_call.finish_reason == "length"
    assert "cut off at max_tokens" in (slm_call.escalation_reason or "")
    assert llm_call.tier == "llm" and result.state["ticket"].severity == "high"
    tally(faults_injected=1, runs_survived=1)
