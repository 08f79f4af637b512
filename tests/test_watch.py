"""The watch over a free-text reply: it stops a copy, a loop and a reply over its sentence
budget, and lets an honest summary through; a stopped SLM summary escalates at once."""

from __future__ import annotations

import re
from typing import Any

import pytest
from tierflow.agents.scripted import ScriptedModel
from tierflow.agents.tiers import Tiers
from tierflow.agents.watch import GenerationWatch, watching
from tierflow.memory import TraceStore

SOURCE = (
    "The northern plant produced 4,200 tonnes of steel in March, up from 3,900 in February. "
    "Its new furnace, installed in January after two years of planning, cut the energy used "
    "per tonne by a fifth. The southern plant was closed for repairs for the whole month and "
    "produced nothing, so the company's total output fell by a tenth against the year before. "
    "Managers expect both plants to run at full capacity again from the middle of May."
)
SUMMARY = (
    "The northern plant made 4,200 tonnes in March, helped by a new furnace that uses less "
    "energy. The southern plant was shut for repairs, so total output fell by a tenth."
)


def grow(watch: GenerationWatch, text: str) -> str | None:
    """Feed ``text`` to the watch word by word, as a model writes it."""
    words = text.split(" ")
    for end in range(1, len(words) + 1):
        if reason := watch.check(" ".join(words[:end])):
            return reason
    return None


def test_an_honest_summary_is_let_through() -> None:
    assert grow(GenerationWatch(source=SOURCE, max_sentences=3), SUMMARY) is None


def test_a_reply_that_copies_its_source_is_stopped_early() -> None:
    watch = GenerationWatch(source=SOURCE, max_sentences=3)
    words = SOURCE.split(" ")
    stopped_at = next(end for end in range(1, len(words) + 1) if watch.check(" ".join(words[:end])))
    assert watch.stopped == "copies_source"
    written = re.findall(r"\w+", " ".join(words[:stopped_at]))
    assert len(written) == watch.copy_words  # as soon as the copy is long enough
    assert stopped_at < len(words) / 2


def test_a_short_quotation_is_not_a_copy() -> None:
    quoting = "Its new furnace, installed in January after two years of planning, saves energy."
    assert grow(GenerationWatch(source=SOURCE), quoting) is None


def test_a_reply_that_repeats_itself_is_stopped() -> None:
    loop = "Output fell because the southern plant was closed for repairs all month long. " * 4
    assert grow(GenerationWatch(source=SOURCE), loop) == "loops"


def test_a_reply_past_its_sentence_budget_is_stopped() -> None:
    many = " ".join(f"Point number {n} is about steel output." for n in "abcdef")
    watch = GenerationWatch(source=SOURCE, max_sentences=2)
    assert grow(watch, many) == "over_budget"
    assert grow(GenerationWatch(source=SOURCE), many) is None  # no budget, no limit
    assert watch.check("anything") == "over_budget"  # the first reason is kept


def summarizer_run(tmp_path: Any, slm_reply: str, policy: str) -> tuple[Any, Any]:
    from langgraph.graph import END, START, StateGraph
    from tierflow.graphs.running import run_graph
    from tierflow.graphs.steps import summarize
    from typing_extensions import TypedDict

    class State(TypedDict, total=False):
        text: str
        summary: str

    builder = StateGraph(State)
    builder.add_node("summarize", summarize(inputs="text", into="summary", max_sentences=3))
    builder.add_edge(START, "summarize")
    builder.add_edge("summarize", END)
    small = ScriptedModel([slm_reply], tier="slm", name="tiny")
    large = ScriptedModel([SUMMARY], tier="llm", name="big")
    store = TraceStore.from_url(f"sqlite:///{tmp_path / 'traces.db'}")
    result = run_graph(
        builder.compile(), {"text": SOURCE}, tiers=Tiers(small, large), store=store, policy=policy
    )
    return result, store.get_run(result.run_id)


def test_a_copying_summary_escalates_at_once_with_why_and_what_it_cost(tmp_path: Any) -> None:
    result, trace = summarizer_run(tmp_path, SOURCE, "tiered")
    assert result.status == "succeeded" and result.state["summary"] == SUMMARY
    first, second = [call for step in trace.steps for call in step.model_calls]
    assert (first.tier, first.escalated) == ("slm", True)
    assert first.escalation_reason.startswith("copies_source: the reply was copying its source")
    assert first.finish_reason == "stopped" and first.error == first.escalation_reason
    # the SLM wrote only as far as the copy was recognised, and the trace shows that cost
    assert first.completion_tokens == len(first.raw_output.split()) < len(SOURCE.split()) / 2
    assert second.tier == "llm"


def test_under_slm_a_stopped_summary_keeps_its_full_sentences(tmp_path: Any) -> None:
    result, trace = summarizer_run(tmp_path, SOURCE, "slm")
    [call] = [call for step in trace.steps for call in step.model_calls]
    assert call.error.startswith("copies_source") and not call.escalated
    assert result.state["summary"] == SOURCE.split(". ")[0] + "."  # cut at its last full sentence


def test_without_a_watch_the_model_writes_on() -> None:
    model = ScriptedModel([SOURCE], tier="slm")
    with watching(None):
        reply = model.complete([{"role": "user", "content": "x"}], max_tokens=500)
    assert reply.text == SOURCE and reply.stopped is None


@pytest.mark.parametrize("schema", [{"type": "object"}])
def test_a_structured_reply_is_never_watched(schema: dict[str, Any]) -> None:
    model = ScriptedModel(['{"a": 1}'], tier="slm")
    with watching(GenerationWatch(source='{"a": 1}', copy_words=1)):
        reply = model.complete([{"role": "user", "content": "x"}], schema=schema, max_tokens=50)
    assert reply.stopped is None
