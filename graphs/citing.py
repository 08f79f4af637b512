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
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any, Literal, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from pydantic import BaseModel, Field
from tierflow.agents.escalation import Rejected, parse_model
from tierflow.agents.policy import TierChoice
from tierflow.agents.prompting import render_messages
from tierflow.agents.protocol import Completion, Tier
from tierflow.graphs.context import LOCAL_ONLY, Answer, TierContext
from tierflow.graphs.nodes import passages_in
from tierflow.graphs.steps import Node, StepScope, numbers_grounded, numbers_in, require_keys, tiered_node
from tierflow.memory.documents import DocumentMemory, Hit
from tierflow.tools.registry import Tool

__all__ = [
    "Evidence",
    "QuestionInput",
    "QuestionState",
    "build_qa_graph",
    "open_memory",
    "MemorySource",
    "NOT_FOUND",
    "Rerank",
    "cited_answer",
    "evidence_of",
    "evidence_problem",
    "grounding_problem",
    "retrieve",
    "search_memory_tool",
    "settings_memory",
]

NOT_FOUND = "I could not find the answer in the documents."
# MiniLM cosine similarities of a question to the best chunk; chosen on the sample help
# centre's questions (graphs/examples/support_docs), where answered questions scored
# 0.34-0.45 and off-topic ones under 0.16, not on the evaluation's fixture.
WEAK_BELOW = 0.25
"""A best similarity under this is weak evidence: an SLM answer over it escalates."""
RELEVANT_ABOVE = 0.3
"""A best similarity over this looks relevant: an SLM "not found" over it escalates."""
MIN_SUPPORT = 0.5
"""The share of an answer's content words its cited chunks must hold."""

Rerank = Literal["off", "auto", "always"]
MemorySource = DocumentMemory | Callable[[], DocumentMemory] | None
"""The memory a step searches: one, a function that opens it on first use, or ``None``
for the memory in the settings' folder (``tierflow memory add`` fills it)."""


class Evidence(TypedDict):
    """A retrieved chunk, as the state holds it."""

    id: str
    ref: str  # how prompts, answers and the console name it: "faq.md, part 2"
    source: str
    position: int
    collection: str
    local_only: bool
    similarity: float  # cosine similarity to the question
    score: float  # the memory's ranking: similarity plus scaled word matches
    text: str


def evidence_of(hit: Hit) -> Evidence:
    chunk = hit.chunk
    return Evidence(
        id=chunk.id,
        ref=f"{PurePath(chunk.source).name}, part {chunk.position + 1}",
        source=chunk.source,
        position=chunk.position,
        collection=chunk.collection,
        local_only=chunk.local_only,
        similarity=round(hit.similarity, 4),
        score=round(hit.score, 4),
        text=chunk.text,
    )


_OPENED: dict[Path, DocumentMemory] = {}


def settings_memory() -> DocumentMemory:
    """The document memory in the settings' memory folder (opened once per folder and
    process; the embedding model is pulled first when missing and ``auto_pull`` is on)."""
    from tierflow.app import load_embeddings
    from tierflow.settings import load_settings

    settings = load_settings()
    folder = settings.documents_dir()
    if folder not in _OPENED:
        _OPENED[folder] = DocumentMemory.open(folder, load_embeddings(settings))
    return _OPENED[folder]


def open_memory(source: MemorySource) -> DocumentMemory:
    """The memory ``source`` names (see ``MemorySource``)."""
    if source is None:
        return settings_memory()
    return source if isinstance(source, DocumentMemory) else source()


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
    ``rerank_pool`` answers the question when the two best scores are within ``rerank_margin``
    of each other; ``always`` asks every time; ``off`` keeps the memory's order (similarity
    plus scaled word matches, see ``DocumentMemory.search``)."""
    if k < 1:
        raise ValueError("retrieve() needs k >= 1")

    def run(state: Mapping[str, Any], scope: StepScope) -> dict[str, Any]:
        question = _text_of(state, query, scope.node)
        wanted = max(k, rerank_pool) if rerank != "off" else k
        found = [
            evidence_of(hit)
            for hit in open_memory(memory).search(question, k=wanted, collections=collections)
        ]
        chosen: int | None = None
        close = len(found) > 1 and found[0]["score"] - found[1]["score"] < rerank_margin
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
class CitedReply(BaseModel):
    """What the answering model replies: whether the sources answer the question, which
    of them (numbered from 1), and the answer."""

    found: bool
    sources: list[int] = Field(default_factory=list)
    answer: str = ""


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
) -> Node:
    """A node that answers the state's ``question`` from the ``Evidence`` list under
    ``evidence`` and writes the answer, followed by a "Sources:" line, to ``into``, and the
    cited chunks to ``cited_into``. ``not_found`` is the answer when the chunks do not hold
    one. Under ``tiered`` the SLM answers and escalates as the module says."""

    def run(state: Mapping[str, Any], scope: StepScope) -> dict[str, Any]:
        require_keys(state, [question, evidence], scope.node)
        asked = str(state[question]).strip()
        given: list[Evidence] = list(state[evidence] or [])
        trace: dict[str, Any] = {"question": asked, "shown": {}, "cited": []}
        scope.handle.evidence = trace
        if not given:
            scope.summarize_as("nothing retrieved: " + not_found)
            return _written(into, cited_into, not_found, [])
        answering = _Answering(scope, asked, instructions, max_tokens, redact, trace["shown"])
        ctx, shareable = scope.ctx, [e for e in given if not e["local_only"]]
        private = local_only or ctx.local_only or not shareable
        choice = ctx.policy.for_node(scope.node, prefer)
        if choice == "llm" and not private:
            got, shown = answering.attempt("llm", shareable), shareable
        else:
            got, shown = answering.attempt("slm", given), given
            problem = got.rejection or (
                evidence_problem(got.value, shown, weak_below, relevant_above)
                or grounding_problem(got.value, shown, asked)
                if got.value
                else None
            )
            if problem is not None:
                trace["check"] = problem.reason
            if choice == "llm":
                got.record.escalation_reason = "the policy sends this step to the LLM"
                got.record.escalation_refused = LOCAL_ONLY
            elif problem is not None and choice == "tiered":
                got.record.escalation_reason = problem.reason
                if private:
                    got.record.escalation_refused = LOCAL_ONLY
                else:
                    got.record.escalated = True
                    got, shown = answering.attempt("llm", shareable), shareable
        trace["tier"] = got.tier
        reply = got.value
        ungrounded = grounding_problem(reply, shown, asked, cited_only=False) if reply is not None else None
        if ungrounded is not None:  # an answer its sources do not hold is not given
            trace["withheld"] = ungrounded.reason
        elif reply is not None and grounding_problem(reply, shown, asked) is not None:
            trace["citations_repaired"] = [e["id"] for e in _cited(reply, shown)]
            reply = _recited(reply, shown)
        cited = _cited(reply, shown) if ungrounded is None else []
        trace["cited"] = [e["id"] for e in cited]
        if reply is None or ungrounded is not None or not reply.found or not reply.answer.strip():
            text = not_found
        else:
            text = reply.answer.strip()
            if cited:
                text += "\n\nSources: " + "; ".join(dict.fromkeys(e["ref"] for e in cited))
        scope.summarize_as(text)
        return _written(into, cited_into, text, cited)

    run.__name__ = "cited_answer"
    return tiered_node(run)


def _written(into: str, cited_into: str | None, text: str, cited: list[Evidence]) -> dict[str, Any]:
    update: dict[str, Any] = {into: text}
    if cited_into is not None:
        update[cited_into] = cited
    return update


def _recited(reply: CitedReply, shown: list[Evidence]) -> CitedReply:
    """The reply citing the chunk that holds most of it, instead of chunks that do not hold
    it (a model that answers from one chunk and cites its neighbour)."""
    words, codes = _content_words(reply.answer), numbers_in(reply.answer) | set(_code(reply.answer))

    def support(e: Evidence) -> tuple[int, int]:
        return sum(code in e["text"] for code in codes), len(words & _content_words(e["text"]))

    best = max(range(len(shown)), key=lambda i: support(shown[i]))
    return reply.model_copy(update={"sources": [best + 1]})


def _cited(reply: CitedReply | None, shown: list[Evidence]) -> list[Evidence]:
    if reply is None or not reply.found:
        return []
    numbers = dict.fromkeys(n for n in reply.sources if 1 <= n <= len(shown))
    return [shown[n - 1] for n in numbers]


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
    ) -> None:
        self.scope, self.question, self.instructions = scope, question, instructions
        self.max_tokens, self.redact, self.shown = max_tokens, redact, shown  # chunk ids per tier

    def attempt(self, tier: Tier, shown: list[Evidence]) -> Answer[CitedReply]:
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
        return self.scope.ask(
            messages, _parse_reply, max_tokens=self.max_tokens, schema=schema, tier=tier, redact=self.redact
        )


def _parse_reply(completion: Completion) -> CitedReply:
    return parse_model(CitedReply)(completion)


# Grounding -----------------------------------------------------------------------------
_WORD = re.compile(r"[a-z0-9][a-z0-9_+-]*")
_STOPWORDS = frozenset(
    "the and for are but not you your with this that from have has had was were will would can "
    "could should may might must its it's they them their there then than what when where which "
    "who whom why how all any each also into onto over under about after before more most some "
    "such only own same very just use used using does did doing done been being our out one two "
    "yes via per etc".split()
)


def _stem(word: str) -> str:
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def _content_words(text: str) -> set[str]:
    return {_stem(w) for w in _WORD.findall(text.lower()) if len(w) >= 3 and w not in _STOPWORDS}


def evidence_problem(
    reply: CitedReply,
    shown: Sequence[Evidence],
    weak_below: float = WEAK_BELOW,
    relevant_above: float = RELEVANT_ABOVE,
) -> Rejected | None:
    """Why the SLM's reply is to be checked on the LLM (``None``: no reason): an answer
    over weak evidence, or "not found" over evidence that looks relevant."""
    best = max((e["similarity"] for e in shown), default=0.0)
    if not reply.found and best >= relevant_above:
        return Rejected(
            "not_found_relevant",
            f"no answer was found, but the best chunk looks relevant (similarity {best:.2f})",
        )
    if reply.found and best < weak_below:
        return Rejected("weak_evidence", f"the best chunk's similarity {best:.2f} is below {weak_below:.2f}")
    return None


def grounding_problem(
    reply: CitedReply, shown: Sequence[Evidence], question: str = "", *, cited_only: bool = True
) -> Rejected | None:
    """Why an answer is not grounded (``None``: it is): it cites none of the chunks, or
    they lack a number, a command or option, or most of the words it adds to the question
    (which an answer may restate). ``cited_only=False`` grounds it in every chunk
    it was shown instead. A "not found" reply has nothing to ground."""
    if not reply.found:
        return None
    cited = _cited(reply, list(shown))
    if not cited:
        return Rejected("uncited", "the answer cites none of the chunks it was given")
    if not reply.answer.strip():
        return Rejected("empty_answer", "the answer is empty although it says one was found")
    where = "the chunks it cites" if cited_only else "the chunks it was shown"
    source = "\n".join([question, *(e["text"] for e in (cited if cited_only else shown))])
    try:
        numbers_grounded(reply.answer, source)
    except Rejected as rejection:
        return Rejected(rejection.code, f"{rejection.detail} ({where})")
    missing = [code for code in _code(reply.answer) if code not in source]
    if missing:
        return Rejected("ungrounded_code", f"{where} do not contain {', '.join(missing[:3])}")
    words = _content_words(reply.answer) - _content_words(question)  # what it adds to the question
    if words:
        support = len(words & _content_words(source)) / len(words)
        if support < MIN_SUPPORT:
            return Rejected(
                "ungrounded_answer", f"only {support:.0%} of the words it adds to the question are in {where}"
            )
    return None


_CODE = re.compile(r"`([^`\n]+)`|(?<![\w-])(--?[A-Za-z][\w-]*)")


def _code(text: str) -> list[str]:
    """The code spans and command-line options an answer states, which must be verbatim."""
    return [quoted or option for quoted, option in _CODE.findall(text)]


# The task graph's tool -----------------------------------------------------------------------
def search_memory_tool(
    memory: MemorySource = None, *, k: int = 4, collections: Sequence[str] | None = None
) -> Tool:
    """``search_memory``: the document memory as a tool of the task graph. Its result is
    the passages as JSON, each with its ``source`` (the answer step cites it); a result
    holding a local-only passage keeps the rest of the run on the SLM."""

    def search_memory(query: str) -> list[dict[str, Any]]:
        """Search the user's own documents (notes, manuals, FAQs) for passages about a question.

        Args:
            query: what to look for, as a question or a few keywords
        """
        found = [evidence_of(hit) for hit in open_memory(memory).search(query, k=k, collections=collections)]
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
) -> CompiledStateGraph[QuestionState, TierContext, QuestionInput, QuestionState]:
    """retrieve → answer: a question answered from the document memory with its sources
    (what ``tierflow memory ask`` and the memory evaluation run)."""
    graph = StateGraph(QuestionState, context_schema=TierContext, input_schema=QuestionInput)
    graph.add_node(
        "retrieve", retrieve(memory, query="question", k=k, collections=collections, rerank=rerank)
    )
    graph.add_node("answer", cited_answer(question="question", instructions=instructions))
    graph.add_edge(START, "retrieve")
    graph.add_edge("retrieve", "answer")
    graph.add_edge("answer", END)
    return graph.compile(name="ask")
