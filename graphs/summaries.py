"""The batch job's graphs, built from the tiering kit.

``document_graph`` summarizes one document as a map-reduce:

    split ─┬─ Send ─> summarize_chunk ─┐                                (one per chunk)
           │                           └─> collapse ⟲ ─> document_summary
           └─────────────────────────────────────────────> document_summary  (one chunk)

``split`` cuts the text into chunks that fit the SLM's context (counted with its own
tokenizer); ``summarize_chunk`` runs once per chunk, in parallel under LangGraph's ``Send``;
``collapse`` summarizes groups of chunk summaries until their notes fit one call; and
``document_summary`` writes the summary (its tier set by the policy, like every node).

``synthesis_graph`` writes the cross-document report from the documents' summaries: on
the LLM by default (``reason``), each claim naming its source document.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from langgraph.graph import END, START, StateGraph
from langgraph.types import Send
from tierflow.agents.escalation import parse_text
from tierflow.agents.faithfulness import (
    every_part_drawn_on,
    names_grounded,
    numbers_attributed,
    part_label,
)
from tierflow.agents.fitting import context_budget, count_tokens, split_to_fit
from tierflow.agents.prompting import render_messages
from tierflow.agents.watch import GenerationWatch
from tierflow.graphs.context import TierContext
from tierflow.graphs.report_checks import mend_report
from tierflow.graphs.steps import (
    StepScope,
    all_of,
    concise,
    first_model,
    numbers_grounded,
    reason,
    summarize,
    tiered_node,
)
from typing_extensions import TypedDict

__all__ = [
    "DocumentState",
    "SynthesisState",
    "BatchContext",
    "document_graph",
    "synthesis_graph",
    "chunk_budget",
    "CHUNK_SUMMARY_TOKENS",
    "SYNTHESIS_GROUP_CHARS",
    "summaries_text",
]

CHUNK_SUMMARY_TOKENS = 200
CHUNK_CHECKS = all_of(numbers_grounded, names_grounded, numbers_attributed, concise(4))
"""What a chunk's summary must pass: its numbers and names in the chunk, figures given to the
subjects the chunk gives them, at most 4 sentences."""
SYNTHESIS_GROUP_CHARS = 7000
"""The summaries one report call reads at most (about 2,000 tokens, for a 4,096-token LLM)."""
MAX_COLLAPSE_ROUNDS = 5
CHUNK_INSTRUCTIONS = "This is one part of a longer document."
NOTES_INSTRUCTIONS = "These are notes on consecutive parts of one document."
DOCUMENT_INSTRUCTIONS = "Write the summary of the whole document for a reader who has not seen it."
SYNTHESIS_INSTRUCTIONS = (
    "Below are summaries of several documents, each under its file name in square brackets. "
    "Write a short cross-document report in Markdown with three sections: '## Themes' (what "
    "the documents share), '## Differences' (where they differ), and '## Key numbers' (the "
    "figures that matter). End every claim with the file name(s) it comes from in square "
    "brackets, e.g. [report.pdf]. Use only what the summaries say."
)


class DocumentState(TypedDict, total=False):
    document: str  # the file's name, for the trace
    text: str
    chunk: str  # one chunk, in a Send to summarize_chunk
    chunks: int
    pieces: list[str]  # the chunks, when there is more than one
    summaries: Annotated[list[str], operator.add]  # chunk summaries, in chunk order
    notes: str  # what document_summary summarizes
    rounds: int
    fits: bool
    summary: str


class SynthesisState(TypedDict, total=False):
    groups: list[str]  # the documents' summaries, in groups that fit one call
    parts: Annotated[list[str], operator.add]  # a report per group, when there are several
    summaries: str
    report: str


@dataclass(frozen=True, kw_only=True)
class BatchContext(TierContext):
    """The run context of a document's graph: the chunk size it splits to."""

    chunk_tokens: int = 1500


def chunk_budget(model: Any, chunk_tokens: int) -> int:
    """Tokens of text per chunk: ``chunk_tokens``, or less when the SLM's context is smaller."""
    overhead = render_messages("step_summarize", instructions=CHUNK_INSTRUCTIONS, max_sentences=4, text="")
    fits = context_budget(model, overhead, CHUNK_SUMMARY_TOKENS)
    return chunk_tokens if fits is None else min(chunk_tokens, fits)


def _budget(scope: StepScope) -> tuple[Any, int]:
    """The model the chunks are written for (the SLM, unless they all go to the LLM, whose
    context is not the SLM's and whose file a run on the LLM never needs) and the budget."""
    model = first_model(scope.ctx, "summarize_chunk")
    chunk_tokens = getattr(scope.ctx, "chunk_tokens", BatchContext.chunk_tokens)
    return model, chunk_budget(model, chunk_tokens)


def _split(state: DocumentState, scope: StepScope) -> dict[str, Any]:
    model, budget = _budget(scope)
    chunks = split_to_fit(model, state["text"], budget)
    scope.summarize_as(f"{len(chunks)} chunk(s) of at most {budget} tokens")
    if len(chunks) == 1:
        return {"chunks": 1, "notes": chunks[0]}
    return {"chunks": len(chunks), "pieces": chunks, "rounds": 0}


def _fan_out(state: DocumentState) -> list[Send] | str:
    if "notes" in state:
        return "document_summary"
    name = state.get("document", "")
    return [Send("summarize_chunk", {"document": name, "chunk": piece}) for piece in state["pieces"]]


def _collapser(watch: bool) -> Any:
    def _collapse(state: DocumentState, scope: StepScope) -> dict[str, Any]:
        """Join the chunk summaries; while they do not fit one call, summarize groups of them."""
        model, budget = _budget(scope)
        joined = state["notes"] if "notes" in state else in_parts(state["summaries"])
        rounds = state.get("rounds", 0)
        if count_tokens(model, joined) <= budget:
            scope.summarize_as("the notes fit one call")
            return {"notes": joined, "fits": True}
        if rounds >= MAX_COLLAPSE_ROUNDS:  # summaries that do not shrink: keep what fits
            scope.summarize_as(f"still too long after {rounds} rounds: the first part is kept")
            return {"notes": split_to_fit(model, joined, budget)[0], "fits": True}
        collapsed = []
        groups = split_to_fit(model, joined, budget)
        for group in groups:
            messages = render_messages(
                "step_summarize", instructions=NOTES_INSTRUCTIONS, max_sentences=4, text=group
            )
            guard = GenerationWatch(max_sentences=4) if watch else None  # notes may be reused
            got = scope.ask(messages, parse_text, max_tokens=CHUNK_SUMMARY_TOKENS, watch=guard)
            collapsed.append(got.value or group)
        scope.summarize_as(f"{len(groups)} group(s) of notes summarized")
        return {"notes": in_parts(collapsed), "rounds": rounds + 1, "fits": False}

    return _collapse


def in_parts(summaries: list[str]) -> str:
    """Consecutive parts' summaries as one text, each under its part label (``Part 2 of 3:``),
    so that the document's summary can be checked to draw on every part."""
    total = len(summaries)
    if total == 1:
        return summaries[0].strip()
    return "\n\n".join(part_label(i, total) + text.strip() for i, text in enumerate(summaries, start=1))


def _notes_are_the_text(state: Mapping[str, Any]) -> bool:
    """Whether the document summary reads the document itself (one chunk), which it must not
    copy, rather than its chunks' summaries, which it may reuse word for word."""
    return int(state.get("chunks", 1)) <= 1


def _after_collapse(state: DocumentState) -> str:
    return "document_summary" if state.get("fits") else "collapse"


def document_graph(*, max_sentences: int = 6, watch: bool = True, checkpointer: Any | None = None) -> Any:
    """The compiled map-reduce graph of one document (see the module); ``watch``: SLM
    summaries that copy, loop or run over are stopped while they are written."""
    builder = StateGraph(DocumentState, context_schema=BatchContext)
    builder.add_node("split", tiered_node(_split))
    builder.add_node(
        "summarize_chunk",
        summarize(
            inputs="chunk",
            into="summaries",
            append=True,
            instructions=CHUNK_INSTRUCTIONS,
            max_sentences=4,
            max_tokens=CHUNK_SUMMARY_TOKENS,
            verify=CHUNK_CHECKS,
            watch=watch,
        ),
    )
    builder.add_node("collapse", tiered_node(_collapser(watch)))
    builder.add_node(
        "document_summary",
        summarize(
            inputs="notes",
            into="summary",
            instructions=DOCUMENT_INSTRUCTIONS,
            max_sentences=max_sentences,
            max_tokens=320,
            watch_copies=_notes_are_the_text,
            verify=all_of(
                numbers_grounded,
                names_grounded,
                numbers_attributed,
                every_part_drawn_on,
                concise(max_sentences),
            ),
            watch=watch,
        ),
    )
    builder.add_edge(START, "split")
    builder.add_conditional_edges("split", _fan_out, ["summarize_chunk", "document_summary"])
    builder.add_edge("summarize_chunk", "collapse")
    builder.add_conditional_edges("collapse", _after_collapse, ["collapse", "document_summary"])
    builder.add_edge("document_summary", END)
    return builder.compile(name="summarize_document", checkpointer=checkpointer)


def _join_parts(state: SynthesisState) -> dict[str, Any]:
    return {"summaries": "\n\n".join(state["parts"])}


def _synthesis_fan_out(state: SynthesisState) -> list[Send] | str:
    groups = state["groups"]
    if len(groups) == 1:
        return "one_group"
    return [Send("synthesis_part", {"summaries": group}) for group in groups]


def _check_report(state: SynthesisState, scope: StepScope) -> dict[str, Any]:
    """The report's sections made to hold what their titles promise (``mend_report``)."""
    mended = mend_report(state["report"], "\n\n".join(state["groups"]))
    scope.summarize_as("; ".join(mended.changes) or "every section holds what its title promises")
    return {"report": mended.report}


def synthesis_graph() -> Any:
    """The compiled graph of the cross-document report: one ``synthesis`` call over the
    summaries, or, when they are too many for one call, a ``synthesis_part`` report per
    group and a ``synthesis`` of those; then ``check_report`` mends a section that does not
    hold what its title promises (``tierflow.graphs.report_checks``)."""
    builder = StateGraph(SynthesisState)
    builder.add_node("one_group", lambda state: {"summaries": state["groups"][0]})
    builder.add_node(
        "synthesis_part",
        reason(SYNTHESIS_INSTRUCTIONS, inputs="summaries", into="parts", append=True, max_tokens=700),
    )
    builder.add_node("join_parts", _join_parts)
    builder.add_node(
        "synthesis", reason(SYNTHESIS_INSTRUCTIONS, inputs="summaries", into="report", max_tokens=900)
    )
    builder.add_conditional_edges(START, _synthesis_fan_out, ["one_group", "synthesis_part"])
    builder.add_edge("one_group", "synthesis")
    builder.add_edge("synthesis_part", "join_parts")
    builder.add_edge("join_parts", "synthesis")
    builder.add_node("check_report", tiered_node(_check_report))
    builder.add_edge("synthesis", "check_report")
    builder.add_edge("check_report", END)
    return builder.compile(name="summarize_synthesis")


def summaries_text(summaries: Mapping[str, str]) -> str:
    """The synthesis step's input: each summary under its document's name."""
    return "\n\n".join(f"[{name}]\n{summary}" for name, summary in summaries.items())
