"""Step builders: plain LangGraph nodes that call a model through the tiering kit.

Each reads the state keys the user names and writes one key (``append=True`` writes the
value as a one-item list, for a key whose reducer collects results, as under ``Send``).
The node's name in the graph is the name the policy, the trace and the console use. The
run context (tiers, policy, recorder, budget, privacy) comes from LangGraph's ``Runtime``,
so the user's state needs no tierflow keys, and the nodes work in subgraphs, under
``Send`` fan-out, behind conditional edges and with any checkpointer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from langchain_core.runnables import RunnableConfig
from langgraph.runtime import get_runtime
from pydantic import BaseModel
from pydantic_core import to_jsonable_python
from tierflow.agents.escalation import Rejected, parse_model, parse_text
from tierflow.agents.judging import StepView
from tierflow.agents.policy import TierChoice
from tierflow.agents.prompting import render_messages
from tierflow.agents.protocol import Completion, Message
from tierflow.agents.scoring import written_numbers
from tierflow.agents.watch import GenerationWatch
from tierflow.errors import GraphError, StepOutputError
from tierflow.graphs.context import Answer, TierContext, ask
from tierflow.records import StepHandle, ToolCallRecord

__all__ = [
    "StepScope",
    "tiered_node",
    "extract",
    "choose",
    "summarize",
    "reason",
    "numbers_grounded",
    "concise",
    "all_of",
    "require_keys",
    "first_model",
    "Keys",
]

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")
Keys = str | Sequence[str]
Update = dict[str, Any]


class Node(Protocol):
    """A plain LangGraph node (LangGraph passes ``config`` by name)."""

    def __call__(self, state: Any, config: RunnableConfig) -> Update: ...


@dataclass(frozen=True)
class StepScope:
    """What a node function receives besides its state: the run context and its step."""

    ctx: TierContext
    handle: StepHandle

    @property
    def node(self) -> str:
        return self.handle.node

    def ask(self, messages: Sequence[Message], parse: Callable[[Completion], T], **options: Any) -> Answer[T]:
        """``tierflow.graphs.context.ask`` for this step."""
        return ask(self.ctx, self.handle, messages, parse, **options)

    def tool_call(self, record: ToolCallRecord) -> None:
        self.handle.tool_call(record)

    def summarize_as(self, text: str) -> None:
        """The one line the trace and the progress display show for this step."""
        self.handle.summary = text[:300]


def tiered_node(
    function: Callable[[Any, StepScope], Update], *, describe: Callable[[Update], str] | None = None
) -> Node:
    """Turn ``function(state, scope) -> update`` into a traced LangGraph node."""

    def node(state: Any, config: RunnableConfig) -> Update:
        ctx = get_runtime().context
        if not isinstance(ctx, TierContext):
            raise GraphError(
                "this graph's tiered steps need tierflow's run context",
                hint="Run it with tierflow.run_graph(graph, input), or invoke it with "
                "context=TierContext(...).",
            )
        name = (config.get("metadata") or {}).get("langgraph_node") or function.__name__
        with ctx.recorder.step(str(name)) as handle:
            update = function(state, StepScope(ctx, handle))
            if handle.summary is None and describe is not None:
                handle.summary = describe(update)[:300]
        return update

    node.__name__ = getattr(function, "__name__", "tiered_node")
    node.__doc__ = function.__doc__
    return node


def _keys(keys: Keys) -> list[str]:
    return [keys] if isinstance(keys, str) else list(keys)


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(to_jsonable_python(value), ensure_ascii=False, indent=1)


def require_keys(state: Mapping[str, Any], keys: Sequence[str], node: str) -> None:
    """A ``GraphError`` naming the keys a step reads that the state lacks."""
    missing = [key for key in keys if key not in state]
    if missing:
        raise GraphError(
            f"step {node!r} reads state key(s) {', '.join(map(repr, missing))}, which the state lacks",
            hint="Give them in the run's input, or have an earlier node write them.",
        )


def _inputs(state: Mapping[str, Any], keys: list[str], node: str) -> list[tuple[str, str]]:
    require_keys(state, keys, node)
    return [(key, _as_text(state[key])) for key in keys]


def _source(given: list[tuple[str, str]]) -> str:
    """The inputs as one text, what a step's output must rest on."""
    return "\n\n".join(text for _, text in given)


def _fields(model: type[BaseModel]) -> list[tuple[str, str]]:
    """The fields as the output's JSON names them (a field's alias where it has one)."""
    return [(info.alias or name, info.description or "") for name, info in model.model_fields.items()]


def _routing(prefer: TierChoice | None, local_only: bool, redact: bool | None) -> dict[str, Any]:
    """The keyword arguments every builder passes on to ``ask``."""
    return {"prefer": prefer, "local_only": local_only, "redact": redact}


def first_model(
    ctx: TierContext, node: str, prefer: TierChoice | None = None, local_only: bool = False
) -> Any:
    """The model a step's text goes to first, whose context it must fit: the LLM when the
    step runs on it, else the SLM (a run on the LLM never needs the SLM's file)."""
    on_llm = ctx.policy.for_node(node, prefer) == "llm" and not (local_only or ctx.local_only)
    return ctx.tiers.llm if on_llm else ctx.tiers.slm


def _value(got: Answer[T], node: str) -> T:
    if got.value is None:
        raise StepOutputError(
            f"step {node!r} got no usable output from the {got.tier.upper()}: {got.reason}",
            hint="Look at the step's model calls (tierflow runs show RUN_ID --full); a clearer "
            "instruction or a simpler output model usually helps.",
        )
    return got.value


def extract(
    output: type[M],
    *,
    inputs: Keys,
    into: str,
    instructions: str = "",
    max_tokens: int = 512,
    prefer: TierChoice | None = None,
    local_only: bool = False,
    redact: bool | None = None,
    append: bool = False,
) -> Node:
    """A node that extracts ``output`` (a pydantic model) from the state's ``inputs`` into ``into``.

    Grammar-forced on the SLM, validated with pydantic, escalated with the recorded reason
    when invalid (under ``tiered``)."""

    schema, routing = output.model_json_schema(), _routing(prefer, local_only, redact)

    def run(state: Mapping[str, Any], scope: StepScope) -> Update:
        given = _inputs(state, _keys(inputs), scope.node)
        messages = render_messages(
            "step_extract", instructions=instructions, fields=_fields(output), inputs=given
        )
        view = StepView("extract", _source(given), into=into)
        got = scope.ask(
            messages, parse_model(output), max_tokens=max_tokens, schema=schema, view=view, **routing
        )
        value = _value(got, scope.node)
        scope.summarize_as(value.model_dump_json())
        return {into: [value] if append else value}

    run.__name__ = f"extract_{output.__name__}"
    return tiered_node(run)


def choose(
    options: Sequence[str] | Mapping[str, str],
    *,
    inputs: Keys,
    into: str,
    instructions: str = "",
    confidence_into: str | None = None,
    prefer: TierChoice | None = None,
    local_only: bool = False,
    redact: bool | None = None,
    append: bool = False,
) -> Node:
    """A node that chooses one of ``options`` (labels, or labels with descriptions) for the
    state's ``inputs`` and writes the label to ``into``; with ``confidence_into``, also the
    SLM's probability of its choice (``None`` when the LLM chose)."""
    described = dict(options) if isinstance(options, Mapping) else {label: "" for label in options}
    labels = list(described)
    if len(labels) < 2:
        raise ValueError("choose() needs at least two options")
    schema = {
        "type": "object",
        "properties": {"label": {"type": "string", "enum": labels}},
        "required": ["label"],
    }
    routing = _routing(prefer, local_only, redact)

    def parse(completion: Completion) -> str:
        data = parse_model(_Label)(completion)
        if data.label not in described:
            raise Rejected("schema_validation", f"{data.label!r} is not one of: {', '.join(labels)}")
        return data.label

    def run(state: Mapping[str, Any], scope: StepScope) -> Update:
        given = _inputs(state, _keys(inputs), scope.node)
        messages = render_messages(
            "step_choose",
            instructions=instructions,
            options=list(described.items()),
            field="label",
            inputs=given,
        )
        view = StepView("choose", _source(given), tuple(labels), into)
        got = scope.ask(messages, parse, max_tokens=32, schema=schema, view=view, **routing)
        label = _value(got, scope.node)
        scope.summarize_as(label)
        update: Update = {into: [label] if append else label}
        if confidence_into is not None:
            update[confidence_into] = got.record.confidence if got.tier == "slm" else None
        return update

    run.__name__ = "choose"
    return tiered_node(run)


class _Label(BaseModel):
    label: str


def summarize(
    *,
    inputs: Keys,
    into: str,
    instructions: str = "",
    max_sentences: int = 5,
    max_tokens: int = 256,
    prefer: TierChoice | None = None,
    local_only: bool = False,
    redact: bool | None = None,
    append: bool = False,
    verify: Callable[[str, str], None] | None = None,
    watch: bool = True,
    watch_copies: bool | Callable[[Mapping[str, Any]], bool] = True,
) -> Node:
    """A node that summarizes the state's ``inputs`` into ``into`` (plain text).

    It never sends the SLM more than its context holds: a longer text is cut into pieces
    that fit, each is summarized, and the summaries are summarized in turn. ``verify``:
    ``verify(summary, text)`` raises ``Rejected`` for a summary the text does not support
    (e.g. ``numbers_grounded``), which escalates it under ``tiered``. ``watch``: the SLM's
    summary is ended as soon as it copies the text, loops or runs past ``max_sentences``
    (``tierflow.agents.watch``), and escalated at once under ``tiered``. ``watch_copies``:
    whether copying counts, or a function of the state that says so: not where the text is
    notes a summary may reuse word for word (a reduce step over its own chunk summaries)."""
    from tierflow.agents.fitting import fit_and_summarize

    routing = _routing(prefer, local_only, redact)
    overhead = render_messages("step_summarize", instructions=instructions, max_sentences=1, text="")

    def run(state: Mapping[str, Any], scope: StepScope) -> Update:
        parts = _inputs(state, _keys(inputs), scope.node)
        text = "\n\n".join(value if len(parts) == 1 else f"{key}:\n{value}" for key, value in parts)
        copies = watch_copies(state) if callable(watch_copies) else watch_copies

        def once(piece: str) -> str:
            messages = render_messages(
                "step_summarize", instructions=instructions, max_sentences=max_sentences, text=piece
            )
            parse = parse_text if verify is None else _verified(verify, piece)
            view = StepView("text", piece, into=into)
            guard = (
                GenerationWatch(source=piece if copies else "", max_sentences=max_sentences)
                if watch
                else None
            )
            got = scope.ask(messages, parse, max_tokens=max_tokens, view=view, watch=guard, **routing)
            return _value(_kept(got), scope.node)

        model = first_model(scope.ctx, scope.node, prefer, local_only)
        summary = fit_and_summarize(model, text, once, overhead=overhead, max_tokens=max_tokens)
        scope.summarize_as(summary)
        return {into: [summary] if append else summary}

    run.__name__ = "summarize"
    return tiered_node(run)


_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")


def _kept(got: Answer[str]) -> Answer[str]:
    """An accepted answer as it is. Text rejected where it could not escalate (local-only,
    or the ``slm`` tier) is kept rather than lost when it has some: cut at its last full
    sentence if it ran to max_tokens. The rejection stays on the call in the trace."""
    if got.value is not None:
        return got
    text = got.completion.text.strip()
    if got.completion.truncated or got.completion.stopped:
        ends = [match.end() for match in _SENTENCE_END.finditer(text)]
        text = text[: ends[-1]] if ends else ""
    if not text:
        return got
    return Answer(text, got.tier, got.completion, got.ref, got.record, got.rejection, got.escalated)


def _verified(verify: Callable[[str, str], None], source: str) -> Callable[[Completion], str]:
    def parse(completion: Completion) -> str:
        summary = parse_text(completion)
        verify(summary, source)
        return summary

    return parse


"""A number as written: a comma groups thousands only before exactly three digits, so the
values of a CSV line ("bolts,340,0.12") stay apart."""


def numbers_in(text: str) -> set[str]:
    """The numbers a text states, as written without thousands separators."""
    return {number.lstrip("-") for number in written_numbers(text)}


def numbers_grounded(summary: str, source: str) -> None:
    """A ``verify`` check for ``summarize``: every number the summary states appears in the
    text it summarizes (small models invent figures more than they invent words)."""
    invented = sorted(numbers_in(summary) - numbers_in(source))
    if invented:
        raise Rejected("ungrounded_numbers", f"it states {', '.join(invented[:5])}, which the text lacks")


def concise(max_sentences: int, *, max_share: float = 0.6) -> Callable[[str, str], None]:
    """A ``verify`` check for ``summarize``: the summary keeps to ``max_sentences`` (one
    over is let pass) and is not most of the text again (a small model that copies its
    input instead of summarizing it), judged for texts of 800 characters or more."""

    def check(summary: str, source: str) -> None:
        count = len([s for s in _SENTENCE_END.split(summary) if s.strip()])
        if count > max_sentences + 1:
            raise Rejected("too_long", f"{count} sentences where at most {max_sentences} were asked for")
        if len(source) >= 800 and len(summary) > max_share * len(source):
            raise Rejected(
                "too_long", f"the summary is {len(summary) / len(source):.0%} of the text's length"
            )

    return check


def all_of(*checks: Callable[[str, str], None]) -> Callable[[str, str], None]:
    """One ``verify`` check made of several, applied in order."""

    def check(summary: str, source: str) -> None:
        for each in checks:
            each(summary, source)

    return check


def reason(
    instructions: str,
    *,
    inputs: Keys,
    into: str,
    output: type[BaseModel] | None = None,
    max_tokens: int = 768,
    prefer: TierChoice | None = "llm",
    local_only: bool = False,
    redact: bool | None = None,
    append: bool = False,
) -> Node:
    """A node for planning and cross-domain reasoning: on the LLM under ``tiered`` (the
    policy may move it). Writes plain text to ``into``, or an ``output`` model."""

    parse: Callable[[Completion], Any] = parse_model(output) if output else parse_text
    schema = output.model_json_schema() if output else None
    fields = _fields(output) if output else []
    routing = _routing(prefer, local_only, redact)

    def run(state: Mapping[str, Any], scope: StepScope) -> Update:
        given = _inputs(state, _keys(inputs), scope.node)
        messages = render_messages("step_reason", instructions=instructions, fields=fields, inputs=given)
        view = StepView("extract" if output is not None else "text", _source(given), into=into)
        got = scope.ask(messages, parse, max_tokens=max_tokens, schema=schema, view=view, **routing)
        value = _value(got if output is not None else _kept(got), scope.node)
        scope.summarize_as(value.model_dump_json() if isinstance(value, BaseModel) else str(value))
        return {into: [value] if append else value}

    run.__name__ = "reason"
    return tiered_node(run)
