"""Answers from the users' documents that say where they come from.

``retrieve`` finds the chunks of the document memory that best match a question (by
meaning and by the words they share); asked to, the SLM reranks the best few.
``cited_answer`` answers from the chunks on the SLM and names the ones it used. The SLM's
answer escalates to the LLM (under ``tiered``) when its evidence is weak or it fails its
grounding check: it cites nothing, its cited chunks lack a number, a command or most of the
words it states, or it says "not found" over evidence that looks relevant. An answer that
fails the grounding check on the last tier it may use is not given: the step answers "not
found" and the trace keeps why.

Chunks of a local-only collection never reach the LLM: the LLM is shown only the
shareable ones, and with none it is not asked (the refusal is traced, as for any
local-only step). Both steps record their chunks on the step (``StepTrace.evidence``):
what was retrieved, what each tier was shown, and which chunks the answer cited.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from pydantic import BaseModel
from tierflow.agents.escalation import Rejected, parse_model
from tierflow.agents.judging import StepView
from tierflow.agents.policy import TierChoice
from tierflow.agents.prompting import render_messages
from tierflow.agents.protocol import Completion, Tier
from tierflow.errors import GraphError
from tierflow.graphs.context import Answer, Check, TierContext, escalate, kept_local, scored
from tierflow.graphs.grounding import (
    RELEVANT_ABOVE,
    WEAK_BELOW,
    CitedReply,
    Evidence,
    cited_chunks,
    evidence_of,
    evidence_problem,
    grounding_problem,
    off_question_problem,
    recited,
    supported_citations,
)
from tierflow.graphs.nodes import passages_in
from tierflow.graphs.steps import Node, StepScope, require_keys, tiered_node
from tierflow.memory.documents import DocumentMemory
from tierflow.records import ModelCallRecord
from tierflow.tools.base import Tool
from typing_extensions import TypedDict

__all__ = [
    "QuestionInput",
    "QuestionState",
    "build_qa_graph",
    "open_memory",
    "MemorySource",
    "NOT_FOUND",
    "Rerank",
    "cited_answer",
    "retrieve",
    "search_memory_tool",
]

NOT_FOUND = "I could not find the answer in the documents."
Rerank = Literal["off", "auto", "always"]
MemorySource = DocumentMemory | Callable[[], DocumentMemory] | None
"""The memory a step searches: one, a function that opens it on first use, or ``None``
for the run's own (the app gives the one in the settings' folder, which ``tierflow memory
add`` fills)."""


def open_memory(source: MemorySource, ctx: TierContext) -> DocumentMemory:
    """The memory ``source`` names (see ``MemorySource``); ``None``: the run's own
    (``TierContext.documents``)."""
    if source is not None:
        return source if isinstance(source, DocumentMemory) else source()
    if ctx.documents is None:
        raise GraphError(
            "this step searches the document memory, and the run was given none",
            hint="Run the graph with tierflow.run_graph or App.run_graph (they open the memory in "
            "the settings' folder), or give the step its memory: retrieve(memory, ...).",
        )
    return ctx.documents()


def _text_of(state: Mapping[str, Any], key: str, node: str) -> str:
    require_keys(state, [key], node)
    return str(state[key]).strip()


# Retrieval -----------------------------------------------------------------------------
def retrieve(
    memory: MemorySource = None,
    *,
    query: str,
    into: str = "evidence",
    k: int = 4,
    collections: Sequence[str] | None = None,
    rerank: Rerank = "off",
    rerank_pool: int = 5,
    rerank_margin: float = 0.03,
) -> Node:
    """A node that writes the ``k`` chunks that best match the state's ``query`` to ``into``
    (a list of ``Evidence``, best first). ``rerank``: ``auto`` asks the SLM which of the best
    ``rerank_pool`` answers the question when the two best rankings are within ``rerank_margin``
    of each other; ``always`` asks every time; ``off`` keeps the memory's order (similarity
    plus scaled word matches, see ``DocumentMemory.search``)."""
    if k < 1:
        raise ValueError("retrieve() needs k >= 1")

    def run(state: Mapping[str, Any], scope: StepScope) -> dict[str, Any]:
        question = _text_of(state, query, scope.node)
        wanted = max(k, rerank_pool) if rerank != "off" else k
        found = [
            evidence_of(hit)
            for hit in open_memory(memory, scope.ctx).search(question, k=wanted, collections=collections)
        ]
        chosen: int | None = None
        close = len(found) > 1 and found[0]["ranking"] - found[1]["ranking"] < rerank_margin
        if question and (rerank == "always" or (rerank == "auto" and close)) and len(found) > 1:
            chosen = _rerank(scope, question, found[:rerank_pool])
            if chosen:
                found.insert(0, found.pop(chosen))
        found = found[:k]
        scope.handle.evidence = {
            "query": question,
            "retrieved": [dict(evidence) for evidence in found],
            "reranked": chosen is not None,
        }
        scope.summarize_as(
            "; ".join(f"{e['ref']} ({e['similarity']:.2f})" for e in found) or "nothing in the memory"
        )
        return {into: found}

    run.__name__ = "retrieve"
    return tiered_node(run)


def _rerank(scope: StepScope, question: str, pool: list[Evidence]) -> int | None:
    """The index in ``pool`` of the passage the model judges best, or None when it gave none."""
    labels = [str(number) for number in range(1, len(pool) + 1)]
    schema = {
        "type": "object",
        "properties": {"best": {"type": "string", "enum": labels}},
        "required": ["best"],
    }
    messages = render_messages("rerank", question=question, passages=[e["text"] for e in pool])
    private = any(e["local_only"] for e in pool)
    got = scope.ask(
        messages, parse_model(_Best), max_tokens=16, schema=schema, prefer="slm", local_only=private
    )
    if got.value is None or got.value.best not in labels:
        return None
    return labels.index(got.value.best)


class _Best(BaseModel):
    best: str


# Answering -----------------------------------------------------------------------------
def cited_answer(
    *,
    question: str,
    evidence: str = "evidence",
    into: str = "answer",
    cited_into: str | None = "citations",
    instructions: str = "",
    not_found: str = NOT_FOUND,
    weak_below: float = WEAK_BELOW,
    relevant_above: float = RELEVANT_ABOVE,
    max_tokens: int = 256,
    prefer: TierChoice | None = None,
    local_only: bool = False,
    redact: bool | None = None,
    slm_chunks: int | None = None,
) -> Node:
    """A node that answers the state's ``question`` from the ``Evidence`` list under
    ``evidence`` and writes the answer, followed by a "Sources:" line, to ``into``, and the
    cited chunks to ``cited_into``. ``not_found`` is the answer when the chunks do not hold
    one. Under ``tiered`` the SLM answers and escalates as the module says. ``slm_chunks``
    shows the SLM only the best that many chunks (the LLM sees them all)."""

    def run(state: Mapping[str, Any], scope: StepScope) -> dict[str, Any]:
        asked, given, trace = _question_and_evidence(state, scope, question, evidence)
        if not given:
            scope.summarize_as("nothing retrieved: " + not_found)
            return _written(into, cited_into, not_found, [])
        answering = _Answering(scope, asked, instructions, max_tokens, redact, trace["shown"], into)
        checks = (weak_below, relevant_above)
        got, shown = _answer_on_tiers(
            answering, given, trace, prefer, local_only or scope.ctx.local_only, checks, slm_chunks
        )
        trace["tier"] = got.tier
        text, cited = _final_answer(got.value, shown, asked, trace, not_found)
        scope.summarize_as(text)
        return _written(into, cited_into, text, cited)

    run.__name__ = "cited_answer"
    return tiered_node(run)


def _question_and_evidence(
    state: Mapping[str, Any], scope: StepScope, question: str, evidence: str
) -> tuple[str, list[Evidence], dict[str, Any]]:
    """An answer step's question, its chunks, and the evidence record it starts on the step
    (what each tier is shown and which chunks the answer cites are added to it)."""
    require_keys(state, [question, evidence], scope.node)
    asked = str(state[question]).strip()
    trace: dict[str, Any] = {"question": asked, "shown": {}, "cited": []}
    scope.handle.evidence = trace
    return asked, list(state[evidence] or []), trace


def _answer_on_tiers(
    answering: _Answering,
    given: list[Evidence],
    trace: dict[str, Any],
    prefer: TierChoice | None,
    local_only: bool,
    checks: tuple[float, float],
    slm_chunks: int | None = None,
) -> tuple[Answer[CitedReply], list[Evidence]]:
    """The answer and the chunks its tier was shown: the SLM's, escalated to the LLM under
    ``tiered`` when it fails the evidence or grounding check, or comes from a sentence that is
    not about the question (the LLM sees only chunks that are not local-only, and with none it
    is not asked)."""
    scope = answering.scope
    shareable = [e for e in given if not e["local_only"]]
    private = local_only or not shareable
    choice = scope.ctx.policy.for_node(scope.node, prefer)
    if choice == "llm" and not private:
        return answering.attempt("llm", shareable), shareable
    focused = given[:slm_chunks] if slm_chunks else given

    def check(reply: CitedReply, record: ModelCallRecord) -> Rejected | None:
        """The answer's checks, then, under ``tiered``, the node's scorer: an answer either
        finds wrong is not shadowed (it escalates whatever a scorer would say)."""
        problem = (
            evidence_problem(reply, focused, *checks)
            or grounding_problem(reply, focused, answering.question)
            or off_question_problem(reply, focused, answering.question)
        )
        if problem is None and choice == "tiered":
            judgement = scored(scope.ctx, scope.node, "text", record)
            problem = judgement.rejection() if judgement is not None and judgement.escalate else None
        return problem

    got, shown = answering.attempt("slm", focused, check), focused
    problem = got.rejection
    if problem is not None:
        trace["check"] = problem.reason
    if choice == "llm":
        kept_local(got.record)
    elif problem is not None and choice == "tiered" and escalate(got.record, problem.reason, local=private):
        got, shown = answering.attempt("llm", shareable), shareable
    return got, shown


def _final_answer(
    reply: CitedReply | None, shown: list[Evidence], asked: str, trace: dict[str, Any], not_found: str
) -> tuple[str, list[Evidence]]:
    """The answer's text with its "Sources:" line, and the chunks it cites: an answer its
    chunks do not hold is withheld ("not found"), citations that miss it are repaired."""
    ungrounded = grounding_problem(reply, shown, asked, cited_only=False) if reply is not None else None
    if ungrounded is not None:  # an answer its sources do not hold is not given
        trace["withheld"] = ungrounded.reason
    elif reply is not None and grounding_problem(reply, shown, asked) is not None:
        trace["citations_repaired"] = [e["id"] for e in cited_chunks(reply, shown)]
        reply = recited(reply, shown)
    elif reply is not None and reply.found:  # cite only the chunks that hold the answer
        pruned = supported_citations(reply, shown, asked)
        if pruned.sources != reply.sources:
            kept = cited_chunks(pruned, shown)
            trace["citations_pruned"] = [e["id"] for e in cited_chunks(reply, shown) if e not in kept]
            reply = pruned
    cited = cited_chunks(reply, shown) if ungrounded is None else []
    trace["cited"] = [e["id"] for e in cited]
    if reply is None or ungrounded is not None or not reply.found or not reply.answer.strip():
        return not_found, cited
    text = reply.answer.strip()
    if cited:
        text += "\n\nSources: " + "; ".join(dict.fromkeys(e["ref"] for e in cited))
    return text, cited


def _written(into: str, cited_into: str | None, text: str, cited: list[Evidence]) -> dict[str, Any]:
    update: dict[str, Any] = {into: text}
    if cited_into is not None:
        update[cited_into] = cited
    return update


class _Answering:
    """One question's answer calls: the prompt with the chunks a tier may see, numbered."""

    def __init__(
        self,
        scope: StepScope,
        question: str,
        instructions: str,
        max_tokens: int,
        redact: bool | None,
        shown: dict[str, list[str]],
        into: str,
    ) -> None:
        self.scope, self.question, self.instructions = scope, question, instructions
        self.max_tokens, self.redact, self.shown = max_tokens, redact, shown  # chunk ids per tier
        self.into = into

    def attempt(self, tier: Tier, shown: list[Evidence], check: Check | None = None) -> Answer[CitedReply]:
        self.shown[tier] = [e["id"] for e in shown]
        numbers = list(range(1, len(shown) + 1))
        schema = {
            "type": "object",
            "properties": {
                "found": {"type": "boolean"},
                "sources": {"type": "array", "items": {"type": "integer", "enum": numbers}},
                "answer": {"type": "string"},
            },
            "required": ["found", "sources", "answer"],
        }
        messages = render_messages(
            "cited_answer", instructions=self.instructions, question=self.question, sources=shown
        )
        source = "\n".join([self.question, *(e["text"] for e in shown)])
        return self.scope.ask(
            messages,
            _parse_reply,
            max_tokens=self.max_tokens,
            schema=schema,
            tier=tier,
            redact=self.redact,
            # a local-only chunk shown to the SLM never goes to the LLM, not even as a shadow
            local_only=any(e["local_only"] for e in shown),
            view=StepView("text", source, into=self.into, text=_answer_text),
            check=check,
        )


def _answer_text(reply: Any) -> str:
    return reply.answer if isinstance(reply, CitedReply) else str(reply)


def _parse_reply(completion: Completion) -> CitedReply:
    return parse_model(CitedReply)(completion)


# The task graph's tool -----------------------------------------------------------------------
def search_memory_tool(
    memory: DocumentMemory | Callable[[], DocumentMemory],
    *,
    k: int = 4,
    collections: Sequence[str] | None = None,
) -> Tool:
    """``search_memory``: the document memory as a tool of the task graph. Its result is
    the passages as JSON, each with its ``source`` (the answer step cites it); a result
    holding a local-only passage keeps the rest of the run on the SLM."""

    def search_memory(query: str) -> list[dict[str, Any]]:
        """Search the user's own documents (notes, manuals, FAQs) for passages about a question.

        Args:
            query: what to look for, as a question or a few keywords
        """
        opened = memory if isinstance(memory, DocumentMemory) else memory()
        found = [evidence_of(hit) for hit in opened.search(query, k=k, collections=collections)]
        return [
            {
                "source": e["ref"],
                "similarity": round(e["similarity"], 2),
                "text": e["text"],
                "local_only": e["local_only"],
            }
            for e in found
        ]

    # in this process: the store's client is not to be used across a fork
    tool = Tool.from_function(search_memory, isolate=False, timeout_s=60)
    return dataclasses.replace(tool, holds_local_only=_holds_local_only)


def _holds_local_only(result: str) -> bool:
    return any(passage.get("local_only") for passage in passages_in(result))


# The graph ---------------------------------------------------------------------------------
class QuestionInput(TypedDict):
    question: str


class QuestionState(QuestionInput, total=False):
    evidence: list[Evidence]
    answer: str
    citations: list[Evidence]


def build_qa_graph(
    memory: MemorySource = None,
    *,
    k: int = 4,
    collections: Sequence[str] | None = None,
    rerank: Rerank = "off",
    instructions: str = "",
    slm_chunks: int | None = None,
) -> CompiledStateGraph[QuestionState, TierContext, QuestionInput, QuestionState]:
    """retrieve → answer: a question answered from the document memory with its sources
    (what ``tierflow memory ask`` and the memory evaluation run); ``slm_chunks`` as in
    ``cited_answer``."""
    graph = StateGraph(QuestionState, context_schema=TierContext, input_schema=QuestionInput)
    graph.add_node(
        "retrieve", retrieve(memory, query="question", k=k, collections=collections, rerank=rerank)
    )
    graph.add_node(
        "answer", cited_answer(question="question", instructions=instructions, slm_chunks=slm_chunks)
    )
    graph.add_edge(START, "retrieve")
    graph.add_edge("retrieve", "answer")
    graph.add_edge("answer", END)
    return graph.compile(name="ask")
