"""The typed data that crosses tierflow's boundaries: the messages a model is sent and what
its reply says of itself, the records a run's trace is made of (from ``ask`` to the store),
the trace as it is read back (``TraceStore.get_run``), and the live events whoever shows
progress receives (the CLI's step lines, the console's live view).

This is the ground floor: it imports nothing of tierflow's."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from tierflow.json_values import map_json
from typing_extensions import TypedDict

__all__ = [
    "Tier",
    "Message",
    "ChoiceProbabilities",
    "TokenSignals",
    "StepHandle",
    "TraceListener",
    "OutputLabel",
    "StoredLabel",
    "ModelCallRecord",
    "ToolCallRecord",
    "CallRef",
    "StoredModelCall",
    "StepTrace",
    "RunStats",
    "slm_share",
    "RunTrace",
    "RunStatus",
    "RUN_STATUSES",
    "Event",
    "RunStarted",
    "StepStarted",
    "StepFinished",
    "StepFailed",
    "RunFinished",
    "Progress",
    "OnProgress",
]

Tier = Literal["slm", "llm"]
"""The two model tiers: the small local model and the large one."""


class Message(TypedDict):
    """One chat message as every tier takes it: ``{"role": "user", "content": "..."}``."""

    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True)
class ChoiceProbabilities:
    """Every option's probability in a choice among fixed options, as the SLM gave them
    (teacher forcing on the cached prompt); the option chosen is the most probable."""

    probabilities: dict[str, float]
    greedy_choice: str  # what greedy grammar decoding had chosen before rescoring
    scoring_ms: float

    @property
    def confidence(self) -> float:
        """The probability of the option chosen (the policy's ``min_confidence`` reads it)."""
        return max(self.probabilities.values())


@dataclass(frozen=True)
class TokenSignals:
    """Log-probabilities of the tokens inside the JSON values of a reply (not its keys or
    punctuation): the lowest, the mean, and how many the grammar forced."""

    tokens: int
    min_logprob: float
    mean_logprob: float
    forced_tokens: int

    def to_json(self) -> dict[str, Any]:
        return {
            "tokens": self.tokens,
            "min_logprob": round(self.min_logprob, 4),
            "mean_logprob": round(self.mean_logprob, 4),
            "forced_tokens": self.forced_tokens,
        }


RunStatus = Literal["running", "succeeded", "failed", "interrupted", "budget_exceeded"]
RUN_STATUSES: tuple[RunStatus, ...] = ("running", "succeeded", "failed", "interrupted", "budget_exceeded")


@dataclass(frozen=True, slots=True)
class OutputLabel:
    """Whether an SLM output was right, and the LLM's on the same input, by ``source``:
    ``shadow`` (the LLM answered it too, after the step), ``gold`` (a known answer),
    ``calibrate``. ``detail``: what it was compared with."""

    slm_right: bool
    llm_right: bool = True
    source: str = "shadow"
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class StoredLabel:
    """A label as the trace database holds it, with the signals of the output it labels."""

    run_id: str
    model_call_id: int
    graph: str
    node: str
    kind: str
    slm_model: str
    llm_model: str
    slm_right: bool
    llm_right: bool
    source: str
    features: dict[str, float]
    detail: str | None
    created_at: datetime


@dataclass(slots=True)
class ModelCallRecord:
    """One model call: what was sent, what came back, what it cost, and any escalation."""

    node: str
    tier: Tier
    model: str
    messages: list[Message]
    output_schema: dict[str, Any] | None = None
    max_tokens: int | None = None
    raw_output: str | None = None
    parsed: Any = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0
    finish_reason: str | None = None
    confidence: float | None = None
    escalated: bool = False
    escalation_reason: str | None = None
    escalation_refused: str | None = None  # why an escalation was not made (e.g. local_only)
    redacted: list[str] = field(default_factory=list)  # kinds of values replaced before sending
    signals: TokenSignals | None = None  # log-probabilities of the SLM's generated values
    choice_probabilities: ChoiceProbabilities | None = None  # a choice among fixed options
    p_wrong: float | None = None  # the escalation score: P(this SLM output is wrong), when judged
    step_kind: str | None = None  # choose, extract or text: which signals an SLM output has
    into: str | None = None  # the state key the step writes its output to
    features: dict[str, float] | None = None  # those signals, by name (tierflow.agents.judging)
    scorer: dict[str, Any] | None = None  # the scorer that judged it: source, pair, threshold
    label: OutputLabel | None = None  # whether this SLM output was right (its LLM shadow said)
    recall: dict[str, Any] | None = None  # what the memory of decisions gave the prompt (or why not)
    missing_signals: list[str] | None = None  # signals the SLM's server could not give (no logprobs)
    error: str | None = None
    id: int | None = None  # set once stored
    run_id: str | None = None


@dataclass(slots=True)
class ToolCallRecord:
    tool: str
    arguments: dict[str, Any]
    result: str | None = None
    error: str | None = None
    latency_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class CallRef:
    """Where a model call sits in its run (step number, position in the step), known
    before the step is stored, so a later step can mark it (a tool rejected its output)."""

    step_seq: int
    index: int

    def __str__(self) -> str:
        return f"{self.step_seq}:{self.index}"

    @classmethod
    def parse(cls, text: str) -> CallRef:
        seq, _, index = text.partition(":")
        return cls(int(seq), int(index))


@dataclass
class StepHandle:
    """The step being executed: its calls so far, and the summary shown for it."""

    seq: int
    node: str
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    summary: str | None = None
    calls: list[ModelCallRecord] = field(default_factory=list)
    tools: list[ToolCallRecord] = field(default_factory=list)
    evidence: dict[str, Any] | None = None  # the document chunks it retrieved or cited

    def model_call(self, record: ModelCallRecord) -> CallRef:
        self.calls.append(record)
        return CallRef(self.seq, len(self.calls) - 1)

    def tool_call(self, record: ToolCallRecord) -> None:
        self.tools.append(record)


# Read back from the store ------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class StoredModelCall:
    """A stored model call: what ``ModelCallRecord`` held, with its id and run (latency in ms,
    rounded to 0.1)."""

    id: int
    run_id: str
    node: str
    tier: Tier
    model: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    finish_reason: str | None
    confidence: float | None
    max_tokens: int | None
    escalated: bool
    escalation_reason: str | None
    escalation_refused: str | None
    redacted: list[str]
    error: str | None
    messages: list[Message]
    output_schema: dict[str, Any] | None
    raw_output: str | None
    parsed: Any
    signals: TokenSignals | None = None
    choice_probabilities: dict[str, float] | None = None  # the most probable options of a choice
    p_wrong: float | None = None  # the escalation score: P(this SLM output is wrong), when judged
    recall: dict[str, Any] | None = None
    step_kind: str | None = None
    features: dict[str, float] | None = None
    scorer: dict[str, Any] | None = None
    into: str | None = None
    missing_signals: list[str] | None = None


@dataclass(frozen=True, slots=True)
class StepTrace:
    """One stored step (``status``: ``succeeded`` or ``failed``) with its model and tool calls."""

    seq: int
    node: str
    status: str
    summary: str | None
    error: str | None
    started_at: datetime
    duration_ms: float | None
    model_calls: list[StoredModelCall]
    tool_calls: list[ToolCallRecord]
    evidence: dict[str, Any] | None = None  # the document chunks it retrieved or cited


def slm_share(slm_calls: int, model_calls: int) -> float | None:
    """The SLM share: the share of model calls the SLM served, the one definition tierflow
    reports everywhere. An SLM attempt that was escalated counts as an SLM call and the LLM
    call that replaced it as an LLM call. ``None`` for no calls."""
    return slm_calls / model_calls if model_calls else None


@dataclass(frozen=True, slots=True)
class RunStats:
    """What a run cost: calls per tier, the SLM's share of them, LLM tokens, escalations."""

    model_calls: int
    slm_calls: int
    llm_calls: int
    slm_share: float | None  # ``slm_share(slm_calls, model_calls)``
    llm_prompt_tokens: int
    llm_completion_tokens: int
    escalations: int


@dataclass(frozen=True, slots=True)
class RunTrace:
    """The whole trace of one run, as ``TraceStore.get_run`` reads it back."""

    run_id: str
    task: str
    status: str  # one of RUN_STATUSES
    answer: str | None
    error: str | None
    graph: str
    policy: dict[str, Any] | None
    slm_model: str
    llm_model: str
    parent_run_id: str | None
    created_at: datetime
    finished_at: datetime | None
    duration_ms: float | None
    stats: RunStats
    steps: list[StepTrace]

    def to_json(self) -> dict[str, Any]:
        """The trace as JSON data (what ``runs show --json`` prints); times are UTC ISO
        strings with milliseconds, e.g. ``2025-01-31T09:00:00.123Z``."""
        return {key: _jsonable(value) for key, value in asdict(self).items()}


def _jsonable(value: Any) -> Any:
    return map_json(value, _utc_text)


def _utc_text(value: Any) -> Any:
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        return aware.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return value


# Live events ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RunStarted:
    run_id: str
    task: str


@dataclass(frozen=True, slots=True)
class StepStarted:
    run_id: str
    node: str


@dataclass(frozen=True, slots=True)
class StepFinished:
    run_id: str
    node: str
    summary: str | None
    tiers: tuple[Tier, ...] = ()


@dataclass(frozen=True, slots=True)
class StepFailed:
    run_id: str
    node: str
    error: str


@dataclass(frozen=True, slots=True)
class RunFinished:
    run_id: str
    status: RunStatus
    answer: str | None = None
    error: str | None = None


Event = RunStarted | StepStarted | StepFinished | StepFailed | RunFinished


# Long work as it goes ---------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Progress:
    """One report of long work (a model download, a batch job, adding documents, an
    evaluation): ``done`` of ``total`` in ``stage``. Every long operation takes an
    ``on_progress`` callback of this one shape, and the CLI has one display for it.

    ``outcome`` says how the item that just finished went (``succeeded``, ``failed``,
    ``skipped``, ``correct``, ``wrong`` ...); a display counts them. ``item`` names it and
    ``detail`` explains it (why it failed). ``unit`` is ``items`` or ``bytes``. ``note`` is a
    line to show as it is (a job's id and how to resume it); a report may carry only a note.
    """

    stage: str
    done: int = 0
    total: int = 0
    """0 when not known."""
    outcome: str = ""
    item: str = ""
    detail: str = ""
    unit: Literal["items", "bytes"] = "items"
    note: str = ""


OnProgress = Callable[[Progress], None]
"""What long operations call with each ``Progress`` report."""


# Who sees the trace as it is written ----------------------------------------------------------
class TraceListener(Protocol):
    """Sees each write of a ``TraceStore`` once it is stored, with the values as the writer
    gave them (not yet scrubbed of secrets): the OpenTelemetry export, a batch worker's log
    of its run for the driver. The app wires them (``TraceStore(listeners=...)``); a listener
    must not raise, or the write it follows fails the run."""

    def run_started(
        self, run_id: str, task: str, fields: Mapping[str, Any], *, resumed: bool = False
    ) -> None:
        """A run began, or a stopped one was reopened (``resumed``): ``fields`` as
        ``TraceStore.start_run`` got them (``graph``, ``policy``, ``slm_model``, ...)."""

    def step_written(
        self, run_id: str, step: StepHandle, *, status: str, error: str | None, finished_at: datetime
    ) -> None:
        """A finished step was stored with its model and tool calls."""

    def call_marked(
        self, run_id: str, ref: CallRef, *, escalation_reason: str | None, refused: str | None
    ) -> None:
        """A later step's verdict on a stored model call (``TraceStore.mark_call``)."""

    def run_finished(self, run_id: str, status: str, *, answer: str | None, error: str | None) -> None:
        """A run ended with ``status``."""
