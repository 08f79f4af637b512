"""What a run depends on, injected per run as LangGraph's ``Runtime.context``, and ``ask``:
the one way a step calls a model (tier choice, escalation, privacy, budget, tracing).

A step whose tier choice is ``tiered`` runs on the SLM first; when the output is rejected
(it does not parse, fails validation, the SLM was not sure enough of a choice, or the step's
scorer judges it likely wrong), the same messages go to the LLM within the same step and the
trace records why. A step that says what it is (``view``: a choice, an extraction, a text)
has the signals of every SLM output recorded, and is judged by its node's scorer
(``tierflow calibrate``) or its kind's prior. Local-only steps
never reach the LLM: an escalation they would have made is refused and recorded. Before
every LLM call the run's budget is checked, and with redaction on, personal values are
replaced by placeholders and restored in the reply.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from pydantic import BaseModel
from pydantic_core import to_jsonable_python
from tierflow.agents.budget import BudgetMeter
from tierflow.agents.calibration import ScorerMatch, StepScorers
from tierflow.agents.escalation import Rejected, RejectionCode, parse_model
from tierflow.agents.judging import (
    JUDGE_SCHEMA,
    StepKind,
    StepView,
    judge_text_messages,
    same_output,
    step_features,
)
from tierflow.agents.policy import TierChoice, TierPolicy
from tierflow.agents.prompting import render_messages
from tierflow.agents.protocol import CURRENT_NODE, ChatModel, Completion, Message, Tier
from tierflow.agents.redaction import Redactor
from tierflow.agents.tiers import Tiers
from tierflow.agents.watch import GenerationWatch, stop_description, watching
from tierflow.errors import ContextOverflowError, TierflowError
from tierflow.memory.traces.recorder import RunRecorder
from tierflow.records import CallRef, ModelCallRecord, OutputLabel, StepHandle
from tierflow.secrets import scrub, scrub_value

if TYPE_CHECKING:
    from tierflow.memory.decisions import OutputMemory
    from tierflow.memory.documents import DocumentMemory

__all__ = [
    "TierContext",
    "Answer",
    "Judgement",
    "Judge",
    "ask",
    "scored",
    "calibrated",
    "escalate",
    "escalate_earlier",
    "kept_local",
    "LOCAL_ONLY",
]

T = TypeVar("T")

LOCAL_ONLY = "local_only"


@dataclass(frozen=True, kw_only=True)
class TierContext:
    """A run's tiers, policy, trace recorder, budget and privacy; ``run_graph`` builds it."""

    tiers: Tiers
    recorder: RunRecorder
    policy: TierPolicy = field(default_factory=TierPolicy)
    local_only: bool = False
    redactor: Redactor | None = None
    meter: BudgetMeter = field(default_factory=BudgetMeter)
    documents: Callable[[], DocumentMemory] | None = None
    """Opens the document memory that steps given no memory of their own search (``retrieve``,
    ``cited_answer``); the app passes the one in the settings' folder."""
    relevance: Callable[[str, Sequence[str]], list[float]] | None = None
    """A request's embedding similarity to some texts (the escalation score reads it of the
    tools); the app passes the offline embedding model's."""
    scorers: StepScorers | None = None
    """The graph's step scorers (calibrated per node, and priors per kind of step); without
    them tiered steps escalate on validation alone."""
    shadow_rate: float = 0.0
    """The share of kept SLM outputs (of steps that say their kind) also sent to the LLM
    after the step, to label them right or wrong for ``tierflow calibrate --from-runs``.
    Never under local-only, and only within the run's budget."""
    shadow_rates: Mapping[str, float] = field(default_factory=dict)
    """Per node, a share that replaces ``shadow_rate`` (0 keeps a node's outputs unshadowed)."""
    graph: str = ""
    """The run's graph name (what its nodes' verified outputs are kept under)."""
    outputs: Callable[[], OutputMemory | None] | None = None
    """Opens the memory of verified outputs (an LLM's, or an SLM's the LLM agreed with): a
    choice's or extraction's SLM output is compared with its node's nearest one (a signal),
    and each newly verified output is added. The app passes the one in its memory folder."""


@dataclass(frozen=True)
class Judgement:
    """The escalation score of an SLM output: P(wrong), and the node's threshold."""

    p_wrong: float
    threshold: float
    unconfirmed_none: bool = False  # "no tool fits", with the request close to a tool

    @property
    def escalate(self) -> bool:
        return self.unconfirmed_none or self.p_wrong > self.threshold

    def rejection(self) -> Rejected:
        if self.unconfirmed_none:
            return Rejected(
                "none_unconfirmed",
                f"the SLM said no tool fits, but the request is close to one (P(wrong) {self.p_wrong:.2f})",
            )
        return Rejected(
            "escalation_score",
            f"P(wrong) {self.p_wrong:.2f} is above this node's threshold {self.threshold:.2f}",
        )


Judge = Callable[[Any, Completion], Judgement | None]
"""Scores a parsed SLM output of a ``tiered`` step (``None``: nothing to judge it by)."""
Check = Callable[[Any, ModelCallRecord], Rejected | None]
"""Checks a parsed SLM output (its call's record holds its signals): why it is wrong, or
``None``."""


@dataclass(frozen=True)
class Answer(Generic[T]):
    """A step's model call: the parsed value, or why the last tier's output was rejected."""

    value: T | None
    tier: Tier
    completion: Completion
    ref: CallRef
    record: ModelCallRecord
    rejection: Rejected | None = None
    escalated: bool = False  # the SLM's answer was rejected and this one is the LLM's

    @property
    def reason(self) -> str:
        return self.rejection.reason if self.rejection else ""


# The one place escalations are written down ----------------------------------------------
POLICY_SENDS_TO_LLM = "the policy sends this step to the LLM"


def escalate(record: ModelCallRecord, reason: str, *, local: bool) -> bool:
    """Write on an SLM call that its output goes to the LLM for ``reason``: escalated, or,
    where the data must stay on this machine (``local``), refused. True when the step may
    now ask the LLM."""
    record.escalation_reason = reason
    if local:
        record.escalation_refused = LOCAL_ONLY
        return False
    record.escalated = True
    return True


def kept_local(record: ModelCallRecord) -> None:
    """Write on an SLM call that the policy wanted the LLM but the data had to stay here."""
    escalate(record, POLICY_SENDS_TO_LLM, local=True)


def escalate_earlier(ctx: TierContext, ref: CallRef | None, reason: str, *, local: bool) -> bool:
    """``escalate`` for a call an earlier step made and stored (a tool rejected the arguments
    it wrote, or a later judgement found it wrong). True when the LLM may now be asked."""
    if ref is not None:
        ctx.recorder.mark_call(ref, escalation_reason=reason, refused=LOCAL_ONLY if local else None)
    return not local


def ask(
    ctx: TierContext,
    step: StepHandle,
    messages: Sequence[Message],
    parse: Callable[[Completion], T],
    *,
    max_tokens: int,
    schema: dict[str, Any] | None = None,
    prefer: TierChoice | None = None,
    tier: Tier | None = None,
    local_only: bool = False,
    redact: bool | None = None,
    judge: Judge | None = None,
    tool: dict[str, Any] | None = None,
    view: StepView | None = None,
    watch: GenerationWatch | None = None,
    check: Check | None = None,
) -> Answer[T]:
    """Call the model that serves ``step`` now, parse its reply, escalate if it is rejected.

    ``prefer``: where the step belongs under the ``tiered`` default. ``tier``: this call's
    tier regardless of the policy (a later step asked for the LLM). ``local_only`` and
    ``redact`` tighten the run's own privacy settings for this step. ``judge`` scores a
    parsed SLM output of a tiered step; one it judges likely wrong escalates like a rejected
    one (and is kept when it cannot escalate). ``tool``: the OpenAI function spec whose
    arguments the reply is; an LLM endpoint that takes ``tools=`` is then asked through a
    native tool call, and its arguments are the reply's text. ``view``: what kind of step
    this is and what its output must rest on; the SLM output's signals are then recorded,
    and under ``tiered`` the step's scorer judges it (when ``judge`` does not). ``watch``: a
    free-text reply of the SLM is read as it is written and ended as soon as the watch finds
    it copying its source, looping or over its sentence budget; the reply is then rejected.
    ``check``: a valid SLM output it finds wrong is rejected (escalated under ``tiered``),
    keeping its value for a step that cannot escalate; it is never shadowed, as it escalates
    whatever a scorer would say of it.
    """
    choice: TierChoice = tier or ctx.policy.for_node(step.node, prefer)
    local = local_only or ctx.local_only
    call = _Call(ctx, step, messages, parse, max_tokens, schema, redact, judge, tool, view, watch, check)
    if choice == "llm":
        if not local:
            return call.attempt("llm", may_escalate=False)
        first = call.attempt("slm", may_escalate=False)
        kept_local(first.record)
        return first
    first = call.attempt("slm", may_escalate=choice == "tiered")
    if first.rejection is None or choice != "tiered":
        if first.rejection is None and not local:
            call.shadow(first)
        return first
    if not escalate(first.record, first.reason, local=local):
        return first
    return dataclasses.replace(call.attempt("llm", may_escalate=False), escalated=True)


@dataclass
class _Call:
    ctx: TierContext
    step: StepHandle
    messages: Sequence[Message]
    parse: Callable[[Completion], Any]
    max_tokens: int
    schema: dict[str, Any] | None
    redact: bool | None
    judge: Judge | None = None
    tool: dict[str, Any] | None = None  # the function whose arguments the reply is
    view: StepView | None = None  # what kind of step it is, for the signals and the scorer
    watch: GenerationWatch | None = None  # stops an SLM text going wrong while it is written
    check: Check | None = None  # finds a valid SLM output wrong before it is shadowed or scored
    node: str = ""  # the name the call is traced under; the step's node by default

    def __post_init__(self) -> None:
        self.node = self.node or self.step.node

    def _outbound(self, tier: Tier) -> tuple[list[Message], list[str], Redactor | None]:
        """The messages as sent to ``tier``: for the LLM, redacted and within budget; the
        kinds replaced, and the redactor that can put them back."""
        messages = list(self.messages)
        if tier == "slm":
            return messages, [], None
        redactor = self.ctx.redactor if self.redact is not False else None
        if redactor is None and self.redact:
            redactor = Redactor()
        kinds: list[str] = []
        if redactor is not None:
            find = self._find_names if redactor.wants_names else None
            messages, kinds = redactor.redact(messages, find)
        self.ctx.meter.check(self.node, messages, self.max_tokens)
        return messages, kinds, redactor

    def _find_names(self, text: str) -> list[str]:
        prompt = render_messages("find_names", text=text)
        node = f"{self.node}:find_names"
        parse = parse_model(_Names)
        call = _Call(self.ctx, self.step, prompt, parse, 128, _NAMES_SCHEMA, False, node=node)
        answer = call.attempt("slm", may_escalate=False)
        return answer.value.names if answer.value is not None else []

    def attempt(self, tier: Tier, *, may_escalate: bool) -> Answer[Any]:
        model = self.ctx.tiers.model(tier)
        messages, kinds, redactor = self._outbound(tier)
        record = ModelCallRecord(
            node=self.node,
            tier=tier,
            model=model.name,
            messages=messages,
            output_schema=self.schema,
            max_tokens=self.max_tokens,
            redacted=kinds,
        )
        ref = self.step.model_call(record)
        token = CURRENT_NODE.set(self.node)
        watch = dataclasses.replace(self.watch, stopped=None) if self.watch and tier == "slm" else None
        try:
            with watching(watch):
                completion = self._complete(model, tier, messages)
        except ContextOverflowError as exc:
            record.error = exc.message
            if not may_escalate:
                raise
            overflow = Rejected("context_overflow", exc.message)
            return Answer(None, tier, Completion("", model.name, tier, 0, 0, 0.0), ref, record, overflow)
        except TierflowError as exc:
            record.error = str(exc)
            raise
        finally:
            CURRENT_NODE.reset(token)
        if tier == "llm":
            self.ctx.meter.add(completion)
        record.model, record.raw_output = completion.model, completion.text
        record.prompt_tokens, record.completion_tokens = (
            completion.prompt_tokens,
            completion.completion_tokens,
        )
        record.latency_ms, record.finish_reason = completion.latency_ms, completion.finish_reason
        record.confidence, record.signals = completion.confidence, completion.signals
        record.choice_probabilities = completion.choice_probabilities
        record.missing_signals = list(completion.missing_signals) or None
        if kinds and redactor is not None:
            completion = dataclasses.replace(completion, text=redactor.restore(completion.text))
        try:
            if completion.stopped:  # the watch ended it: what it wrote so far is not the answer
                code = cast(RejectionCode, completion.stopped)
                raise Rejected(code, stop_description(completion.stopped))
            value = self.parse(completion)
        except Rejected as rejection:
            record.error = rejection.reason
            if tier == "slm" and self.view is not None and self.view.kind == "text":
                self._record_signals(record, completion.text, completion)  # a text has them anyway
            return Answer(None, tier, completion, ref, record, rejection)
        record.parsed = value.model_dump(by_alias=True) if isinstance(value, BaseModel) else value
        if tier == "slm" and self.view is not None:
            self._record_signals(record, value, completion)
        elif tier == "llm" and self.view is not None:
            self.remember(value, "llm")
        problem = self.check(value, record) if tier == "slm" and self.check is not None else None
        if problem is not None:
            return Answer(value, tier, completion, ref, record, problem)  # kept if it cannot escalate
        floor = self.ctx.policy.min_confidence
        if may_escalate and record.confidence is not None and record.confidence < floor:
            unsure = Rejected(
                "low_confidence",
                f"the SLM gave its choice probability {record.confidence:.2f}, below {floor:.2f}",
            )
            return Answer(value, tier, completion, ref, record, unsure)  # kept if it cannot escalate
        judgement = None
        if may_escalate and self._calibrated():  # the user's own calibration comes first
            judgement = self._scored(record)
        elif may_escalate and self.judge:
            judgement = self.judge(value, completion)
        if judgement is None and may_escalate and record.features is not None:
            judgement = self._scored(record)
        if judgement is not None:
            record.p_wrong = judgement.p_wrong
            if judgement.escalate:
                return Answer(value, tier, completion, ref, record, judgement.rejection())
        return Answer(value, tier, completion, ref, record)

    def _record_signals(self, record: ModelCallRecord, value: Any, completion: Completion) -> None:
        assert self.view is not None
        record.step_kind, record.into = self.view.kind, self.view.into or None
        record.features = step_features(
            self.view,
            value,
            completion.text,
            max_tokens=self.max_tokens,
            completion_tokens=completion.completion_tokens,
            finish_reason=completion.finish_reason,
            probabilities=completion.choice_probabilities,
            signals=completion.signals,
            past=self._past() if self.view.kind != "text" else None,
        )

    def _past(self) -> tuple[float, Any] | None:
        """The similarity and output of the node's nearest verified output, if any."""
        assert self.view is not None
        memory = _output_memory(self.ctx)
        if memory is None:
            return None
        try:
            found = memory.nearest(self.ctx.graph, self.node, self.view.source)
        except TierflowError as exc:
            _memory_off(exc)
            return None
        return (found.similarity, found.output) if found is not None else None

    def remember(self, value: Any, verified_by: str) -> None:
        """Keep a verified output of this step's node (never fails the step)."""
        if self.view is None or self.view.kind == "text" or value is None:
            return
        memory = _output_memory(self.ctx)
        if memory is None:
            return
        output = value.model_dump(by_alias=True) if isinstance(value, BaseModel) else value
        node = self.node.removesuffix(":shadow")
        try:
            memory.add(self.ctx.graph, node, scrub(self.view.source), scrub_value(output), verified_by)
        except TierflowError as exc:
            _memory_off(exc)

    def shadow(self, kept: Answer[Any]) -> None:
        """Maybe (``shadow_rate``) send a kept SLM output's messages to the LLM as well, and
        label the output by whether the two agree (a text by the LLM's judgement). The calls
        are traced under ``NODE:shadow`` and ``NODE:judge``; a budget that cannot take them
        skips them, and an LLM that fails leaves the output unlabelled."""
        if self.view is None or kept.value is None or not _sampled(self.ctx, self.node, kept.ref):
            return
        shadow = dataclasses.replace(self, judge=None, check=None, node=f"{self.node}:shadow")
        try:
            reference = shadow.attempt("llm", may_escalate=False)
            if reference.value is None:
                return
            same = same_output(self.view.kind, kept.value, reference.value)
            if same is None:
                same = self._judged_same(self.view.text_of(kept.value), self.view.text_of(reference.value))
        except TierflowError:  # over budget, or the LLM failed: no label, the step goes on
            return
        detail = json.dumps(to_jsonable_python(reference.value), ensure_ascii=False)[:1000]
        kept.record.label = OutputLabel(slm_right=same, source="shadow", detail=detail)
        if same:
            self.remember(kept.value, "shadow")

    def _judged_same(self, answer: str, reference: str) -> bool:
        assert self.view is not None
        messages = judge_text_messages(self.view.source, answer, reference)
        judge = _Call(
            self.ctx,
            self.step,
            messages,
            parse_model(_Verdict),
            16,
            JUDGE_SCHEMA,
            self.redact,
            node=f"{self.node}:judge",
        )
        verdict = judge.attempt("llm", may_escalate=False).value
        return verdict is not None and verdict.verdict == "same"

    def _scored(self, record: ModelCallRecord) -> Judgement | None:
        assert self.view is not None
        return scored(self.ctx, self.node, self.view.kind, record)

    def _calibrated(self) -> bool:
        return self.view is not None and calibrated(self.ctx, self.node, self.view.kind)

    def _complete(self, model: ChatModel, tier: Tier, messages: list[Message]) -> Completion:
        """The model's reply; for a tool's arguments on an LLM endpoint that takes ``tools=``,
        through a native tool call (its arguments, as JSON, are the reply's text)."""
        call_tool = getattr(model, "call_tool", None) if tier == "llm" and self.tool else None
        if call_tool is None or getattr(model, "native_tools", None) is False:
            return model.complete(messages, schema=self.schema, max_tokens=self.max_tokens)
        got = call_tool(messages, [self.tool], max_tokens=self.max_tokens, tool_choice="required")
        if got.name is None:  # no usable call: the same question as a JSON reply to the schema
            again = model.complete(messages, schema=self.schema, max_tokens=self.max_tokens)
            return dataclasses.replace(
                again,
                prompt_tokens=again.prompt_tokens + got.prompt_tokens,
                completion_tokens=again.completion_tokens + got.completion_tokens,
                latency_ms=again.latency_ms + got.latency_ms,
            )
        text = json.dumps(got.arguments, ensure_ascii=False)
        return Completion(
            text, got.model, tier, got.prompt_tokens, got.completion_tokens, got.latency_ms, got.finish_reason
        )


def calibrated(ctx: TierContext, node: str, kind: StepKind) -> bool:
    """Whether ``node`` has a scorer calibrated for this run's models (``tierflow calibrate``)."""
    tiers = ctx.tiers
    return ctx.scorers is not None and ctx.scorers.calibrated_for(node, kind, tiers.slm.name, tiers.llm.name)


def scored(ctx: TierContext, node: str, kind: StepKind, record: ModelCallRecord) -> Judgement | None:
    """The step scorer's judgement of an SLM output whose signals ``record`` holds (``None``
    without a scorer, or without signals); the trace notes the scorer and P(wrong). One
    fitted for another model pair is used at its strictest threshold, and says so."""
    if record.features is None:
        return None
    scorers, tiers = ctx.scorers, ctx.tiers
    found = scorers.for_step(node, kind, tiers.slm.name, tiers.llm.name) if scorers else None
    if found is None:
        return None
    threshold = found.threshold(ctx.policy.max_loss)
    record.scorer = _scorer_note(found, threshold)
    if not found.matches:
        _warn_other_pair(node, found)
    judgement = Judgement(found.scorer.model.p_wrong(record.features), threshold)
    record.p_wrong = judgement.p_wrong
    return judgement


_OUTPUT_MEMORY_WARNED: set[str] = set()


def _output_memory(ctx: TierContext) -> OutputMemory | None:
    """The run's memory of verified outputs, or None (none given, or it cannot be opened)."""
    if ctx.outputs is None or not ctx.graph:
        return None
    try:
        return ctx.outputs()
    except TierflowError as exc:
        _memory_off(exc)
        return None


def _memory_off(exc: TierflowError) -> None:
    """The step goes on without the verified-output memory; say why once per reason."""
    if exc.message not in _OUTPUT_MEMORY_WARNED:
        _OUTPUT_MEMORY_WARNED.add(exc.message)
        logging.getLogger("tierflow").warning("the memory of verified outputs is skipped: %s", exc.message)


def _scorer_note(found: ScorerMatch, threshold: float) -> dict[str, Any]:
    """What the trace keeps of the scorer that judged a call."""
    slm, llm = found.scorer.pair()
    return {
        "source": found.scorer.trained_on.get("source", "calibrated"),
        "fitted_for": {"slm": slm, "llm": llm},
        "pair_matches": found.matches,
        "threshold": round(threshold, 4),
    }


_WARNED: set[tuple[str, str, str]] = set()


def _warn_other_pair(node: str, found: ScorerMatch) -> None:
    """Say once per node and pair that a scorer fitted for other models judges this step."""
    slm, llm = found.scorer.pair()
    if (node, slm, llm) in _WARNED:
        return
    _WARNED.add((node, slm, llm))
    logging.getLogger("tierflow").warning(
        "step %r is judged by a scorer fitted for the models %s / %s, not this run's: it escalates "
        "at that scorer's strictest threshold. Fit one for these models: tierflow calibrate.",
        node,
        slm or "?",
        llm or "?",
    )


def _sampled(ctx: TierContext, node: str, ref: CallRef) -> bool:
    """Whether this output is one of its node's shadowed share (fixed per run and call)."""
    rate = ctx.shadow_rates.get(node, ctx.shadow_rate)
    if rate <= 0:
        return False
    if rate >= 1:
        return True
    digest = hashlib.sha256(f"{ctx.recorder.run_id}:{ref}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < rate


class _Verdict(BaseModel):
    verdict: str


class _Names(BaseModel):
    names: list[str]


_NAMES_SCHEMA = _Names.model_json_schema()
