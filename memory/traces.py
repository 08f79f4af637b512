"""Run traces, written as each step happens so that a crash still leaves a readable trace.

A step is written with its model and tool calls in one transaction when it ends. Strings
pass through ``scrub`` first, so the values of secrets (API keys) never reach the database
even when an error message quotes them.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import event, func, insert
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DatabaseError, OperationalError
from sqlmodel import Session, col, create_engine, select
from tierflow.agents.protocol import Message, Tier
from tierflow.agents.scoring import top_options
from tierflow.agents.signals import TokenSignals
from tierflow.errors import ConfigError, RunNotFoundError
from tierflow.memory.migrations import migrate
from tierflow.memory.owner import is_gone, this_process
from tierflow.memory.records import (
    CallRef,
    ModelCallRecord,
    RunStats,
    RunTrace,
    StepTrace,
    StoredModelCall,
    ToolCallRecord,
)
from tierflow.memory.tables import ModelCall, Run, Step, ToolCall, utcnow
from tierflow.secrets import register, scrub_value
from tierflow.telemetry import RunTelemetry

if TYPE_CHECKING:
    from tierflow.memory.recorder import StepHandle

__all__ = ["TraceStore", "RunSummary", "open_engine"]

_CALL_FIELDS = tuple(f.name for f in fields(ModelCallRecord) if f.name not in ("id", "run_id"))


def open_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite files get WAL mode so readers (the console) never block."""
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise ConfigError(
            f"database URL {url!r} is not valid: {exc}",
            hint="Set TIERFLOW_DATABASE_URL to e.g. sqlite:///path/to/tierflow.db",
        ) from None
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            folder = Path(database).expanduser().parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(
                    f"cannot create the database's folder {folder}: {exc.strerror or exc}",
                    hint="Set TIERFLOW_DATA_DIR (or TIERFLOW_DATABASE_URL) to a place you can write.",
                ) from None
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")  # safe with WAL; a commit waits for no fsync
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    try:
        return create_engine(url, pool_pre_ping=True)
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"the database URL needs the {exc.name} driver, which is not installed",
            hint="Install it (PostgreSQL: pip install 'psycopg[binary]'), or use SQLite.",
        ) from None


@dataclass(frozen=True)
class RunSummary:
    id: str
    task: str
    status: str
    created_at: datetime
    duration_ms: float | None
    model_calls: int
    slm_calls: int
    llm_prompt_tokens: int
    llm_completion_tokens: int
    escalations: int
    graph: str = "task"
    policy: dict[str, Any] | None = None
    parent_run_id: str | None = None
    slm_prompt_tokens: int = 0
    slm_completion_tokens: int = 0

    @property
    def slm_share(self) -> float | None:
        return self.slm_calls / self.model_calls if self.model_calls else None


class TraceStore:
    def __init__(self, engine: Engine, *, secrets: Sequence[str] = ()) -> None:
        self.engine = engine
        register(secrets)
        # each run also goes to OpenTelemetry when OTEL_EXPORTER_OTLP_ENDPOINT is set
        self.telemetry = RunTelemetry.from_env()
        try:
            migrate(engine)
        except (OperationalError, DatabaseError) as exc:
            where = engine.url.render_as_string(hide_password=True)
            raise ConfigError(
                f"cannot open the trace database {where}: {exc.orig or exc}",
                hint="Check TIERFLOW_DATABASE_URL / TIERFLOW_DATA_DIR: the server must be reachable, "
                "the file writable, and it must be a tierflow database.",
            ) from None

    @classmethod
    def from_url(cls, url: str, *, secrets: Sequence[str] = ()) -> TraceStore:
        return cls(open_engine(url), secrets=secrets)

    # Writing ------------------------------------------------------------------------
    def scrub(self, value: Any) -> Any:
        """``value`` with every secret replaced by ``[REDACTED]`` (recursively; see
        ``tierflow.secrets``)."""
        return scrub_value(value)

    def _add(self, row: Any) -> Any:
        with Session(self.engine, expire_on_commit=False) as session:
            session.add(row)
            session.commit()
            session.refresh(row)
            return row

    def start_run(self, task: str, **fields: Any) -> str:
        run_id = fields.pop("id", None) or uuid.uuid4().hex[:16]
        self._add(Run(id=run_id, task=self.scrub(task), owner=this_process(), **self.scrub(fields)))
        if self.telemetry is not None:
            self.telemetry.run_started(str(run_id), task, fields)
        return str(run_id)

    def reopen_run(self, run_id: str) -> int:
        """Mark a stopped run running again, in this process; the next step's number."""
        full_id = self.resolve_id(run_id)
        with Session(self.engine) as session:
            run = session.get(Run, full_id)
            assert run is not None
            run.status, run.error, run.answer, run.finished_at = "running", None, None, None
            run.owner = this_process()
            last = session.exec(select(func.max(Step.seq)).where(Step.run_id == full_id)).one()
            session.commit()
            if self.telemetry is not None:
                models = {"graph": run.graph, "slm_model": run.slm_model, "llm_model": run.llm_model}
                self.telemetry.run_started(full_id, run.task, models, resumed=True)
        return int(last or 0) + 1

    def run_settings(self, run_id: str) -> dict[str, Any]:
        """The settings a run started with (masked), ``run`` holding its own options."""
        with Session(self.engine) as session:
            run = session.get(Run, self.resolve_id(run_id))
            assert run is not None
            return dict(run.settings or {})

    def reconcile(self) -> int:
        """Runs left ``running`` by a process of this machine that is gone become
        ``interrupted``; returns how many. Reading runs does this first."""
        with Session(self.engine) as session:
            running = session.exec(select(Run).where(Run.status == "running")).all()
            gone = [run for run in running if is_gone(run.owner)]
            for run in gone:
                run.status, run.finished_at = "interrupted", utcnow()
                run.error = (
                    "the process running it stopped before it finished (killed or crashed); "
                    f"continue it with: tierflow resume {run.id}"
                )
            if gone:
                session.commit()
        return len(gone)

    def finish_run(
        self, run_id: str, status: str, *, answer: str | None = None, error: str | None = None
    ) -> None:
        with Session(self.engine) as session:
            run = session.get(Run, run_id)
            if run is None:
                raise RunNotFoundError(f"no run {run_id}")
            run.status, run.answer, run.error = status, self.scrub(answer), self.scrub(error)
            run.finished_at = utcnow()
            session.commit()
        if self.telemetry is not None:
            self.telemetry.run_finished(run_id, status, answer=answer, error=error)

    def write_step(
        self, run_id: str, step: StepHandle, *, status: str = "ok", error: str | None = None
    ) -> int:
        """Store a finished step with its model and tool calls, in one transaction (SQLAlchemy
        Core: the ORM's unit of work cost more than the rest of a step's orchestration)."""
        now = utcnow()
        with self.engine.begin() as connection:
            step_row = {
                "run_id": run_id,
                "seq": step.seq,
                "node": step.node,
                "status": status,
                "summary": self.scrub(step.summary),
                "error": self.scrub(error),
                "evidence": self.scrub(step.evidence),
                "started_at": step.started_at,
                "finished_at": now,
            }
            inserted = connection.execute(insert(Step).values(step_row)).inserted_primary_key
            assert inserted is not None
            step_id = int(inserted[0])
            if step.calls:
                rows = [
                    {**self._fields(c), "run_id": run_id, "step_id": step_id, "created_at": now}
                    for c in step.calls
                ]
                query = insert(ModelCall).returning(col(ModelCall.id), sort_by_parameter_order=True)
                ids = connection.execute(query, rows).scalars().all()
                for record, call_id in zip(step.calls, ids, strict=True):
                    assert call_id is not None
                    record.id, record.run_id = int(call_id), run_id
            if step.tools:
                tools = [
                    {**self.scrub(asdict(t)), "run_id": run_id, "step_id": step_id, "created_at": now}
                    for t in step.tools
                ]
                connection.execute(insert(ToolCall), tools)
        if self.telemetry is not None:
            self.telemetry.step_written(run_id, step, status=status, error=error, finished_at=now)
        return step_id

    def _fields(self, record: ModelCallRecord) -> dict[str, Any]:
        fields = {name: getattr(record, name) for name in _CALL_FIELDS}
        fields["signals"] = _signals_json(record)
        return {name: self.scrub(value) for name, value in fields.items()}

    def mark_call(
        self,
        run_id: str,
        ref: CallRef,
        *,
        escalation_reason: str | None = None,
        refused: str | None = None,
    ) -> None:
        """Mark a stored model call after the fact: escalated with a reason (the tool it fed
        rejected its output), or the escalation it would have made ``refused``."""
        with Session(self.engine) as session:
            call = session.exec(
                select(ModelCall)
                .join(Step, col(ModelCall.step_id) == col(Step.id))
                .where(Step.run_id == run_id, Step.seq == ref.step_seq)
                .order_by(col(ModelCall.id))
                .offset(ref.index)
                .limit(1)
            ).first()
            if call is None:
                return
            if escalation_reason is not None:
                call.escalated, call.escalation_reason = refused is None, self.scrub(escalation_reason)
            if refused is not None:
                call.escalation_refused = refused
            session.add(call)
            session.commit()
        if self.telemetry is not None:
            self.telemetry.call_marked(run_id, ref, escalation_reason=escalation_reason, refused=refused)

    def get_model_call(self, call_id: int) -> StoredModelCall:
        with Session(self.engine) as session:
            call = session.get(ModelCall, call_id)
        if call is None:
            raise RunNotFoundError(f"no model call {call_id}")
        return _model_call(call)

    def is_local_only(self, run_id: str) -> bool:
        """Whether the run was made local-only (its data must never reach the LLM)."""
        with Session(self.engine) as session:
            run = session.get(Run, run_id)
        options = ((run.settings or {}).get("run") or {}) if run is not None else {}
        return bool(options.get("local_only"))

    # Reading ------------------------------------------------------------------------
    def resolve_id(self, run_id: str) -> str:
        """A full run id from an id, a unique prefix, or ``last``."""
        with Session(self.engine) as session:
            if run_id == "last":
                found = session.exec(select(Run.id).order_by(col(Run.created_at).desc()).limit(1)).all()
            else:
                found = (
                    session.exec(select(Run.id).where(col(Run.id).startswith(run_id)).limit(2)).all()
                    if run_id
                    else []
                )
        if len(found) == 1:
            return str(found[0])
        if not found:
            raise RunNotFoundError(
                f"no run matches {run_id!r}", hint="`tierflow runs list` shows the stored runs."
            )
        raise RunNotFoundError(f"{run_id!r} matches several runs", hint="Give more characters of the run id.")

    def list_runs(
        self,
        *,
        limit: int = 20,
        status: str | None = None,
        search: str | None = None,
        graph: str | None = None,
        since: datetime | None = None,
        exclude_graphs: Sequence[str] = (),
    ) -> list[RunSummary]:
        """Runs newest first; ``search`` matches the task text (any case), ``since`` the start."""
        self.reconcile()
        with Session(self.engine) as session:
            query = select(Run).order_by(col(Run.created_at).desc()).limit(limit)
            if status:
                query = query.where(Run.status == status)
            if search:
                query = query.where(func.lower(Run.task).contains(search.lower()))
            if graph:
                query = query.where(Run.graph == graph)
            if exclude_graphs:
                query = query.where(col(Run.graph).not_in(list(exclude_graphs)))
            if since is not None:
                query = query.where(col(Run.created_at) >= since)
            runs = session.exec(query).all()
            ids = [run.id for run in runs]
            calls = session.exec(select(ModelCall).where(col(ModelCall.run_id).in_(ids))).all()
        by_run: dict[str, list[ModelCall]] = {}
        for call in calls:
            by_run.setdefault(call.run_id, []).append(call)
        return [_summary(run, by_run.get(run.id, [])) for run in runs]

    def get_run(self, run_id: str) -> RunTrace:
        """The whole trace of one run (``trace.to_json()`` is what ``runs show --json`` prints)."""
        full_id = self.resolve_id(run_id)
        self.reconcile()
        with Session(self.engine) as session:
            run = session.get(Run, full_id)
            assert run is not None
            steps = session.exec(select(Step).where(Step.run_id == full_id).order_by(col(Step.seq))).all()
            calls = session.exec(
                select(ModelCall).where(ModelCall.run_id == full_id).order_by(col(ModelCall.id))
            ).all()
            tools = session.exec(
                select(ToolCall).where(ToolCall.run_id == full_id).order_by(col(ToolCall.id))
            ).all()
        summary = _summary(run, list(calls))
        return RunTrace(
            run_id=run.id,
            task=run.task,
            status=run.status,
            answer=run.answer,
            error=run.error,
            graph=run.graph,
            policy=run.policy,
            slm_model=run.slm_model,
            llm_model=run.llm_model,
            parent_run_id=run.parent_run_id,
            created_at=_aware(run.created_at),
            finished_at=_aware(run.finished_at) if run.finished_at else None,
            duration_ms=summary.duration_ms,
            stats=RunStats(
                model_calls=summary.model_calls,
                slm_calls=summary.slm_calls,
                llm_calls=summary.model_calls - summary.slm_calls,
                slm_share=summary.slm_share,
                llm_prompt_tokens=summary.llm_prompt_tokens,
                llm_completion_tokens=summary.llm_completion_tokens,
                escalations=summary.escalations,
            ),
            steps=[
                StepTrace(
                    seq=step.seq,
                    node=step.node,
                    status=step.status,
                    summary=step.summary,
                    error=step.error,
                    started_at=_aware(step.started_at),
                    duration_ms=_ms(step.started_at, step.finished_at),
                    model_calls=[_model_call(c) for c in calls if c.step_id == step.id],
                    tool_calls=[_tool_call(t) for t in tools if t.step_id == step.id],
                    evidence=step.evidence,
                )
                for step in steps
            ],
        )


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _ms(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((_aware(end) - _aware(start)).total_seconds() * 1000, 1)


def _summary(run: Run, calls: list[ModelCall]) -> RunSummary:
    llm = [c for c in calls if c.tier == "llm"]
    return RunSummary(
        id=run.id,
        task=run.task,
        status=run.status,
        created_at=run.created_at,
        duration_ms=_ms(run.created_at, run.finished_at),
        model_calls=len(calls),
        slm_calls=len(calls) - len(llm),
        llm_prompt_tokens=sum(c.prompt_tokens for c in llm),
        llm_completion_tokens=sum(c.completion_tokens for c in llm),
        escalations=sum(1 for c in calls if c.escalated),
        graph=run.graph,
        policy=run.policy,
        parent_run_id=run.parent_run_id,
        slm_prompt_tokens=sum(c.prompt_tokens for c in calls if c.tier == "slm"),
        slm_completion_tokens=sum(c.completion_tokens for c in calls if c.tier == "slm"),
    )


def _model_call(call: ModelCall) -> StoredModelCall:
    assert call.id is not None  # a stored row
    return StoredModelCall(
        id=call.id,
        run_id=call.run_id,
        node=call.node,
        tier=cast(Tier, call.tier),  # written from ModelCallRecord.tier
        model=call.model,
        prompt_tokens=call.prompt_tokens,
        completion_tokens=call.completion_tokens,
        latency_ms=round(call.latency_ms, 1),
        finish_reason=call.finish_reason,
        confidence=call.confidence,
        max_tokens=call.max_tokens,
        escalated=call.escalated,
        escalation_reason=call.escalation_reason,
        escalation_refused=call.escalation_refused,
        redacted=call.redacted or [],
        error=call.error,
        messages=cast(list[Message], call.messages),  # written from ModelCallRecord.messages
        output_schema=call.output_schema,
        raw_output=call.raw_output,
        parsed=call.parsed,
        signals=_token_signals(call.signals),
        choice_probabilities=(call.signals or {}).get("choice"),
        score=(call.signals or {}).get("score"),
        recall=(call.signals or {}).get("recall"),
    )


def _signals_json(record: ModelCallRecord) -> dict[str, Any] | None:
    """The ``signals`` column: the token signals' fields, and ``choice`` (the most probable
    options of a choice with their probabilities) when the call was one."""
    stored: dict[str, Any] = record.signals.to_json() if record.signals else {}
    if record.choice_scores is not None:
        kept = top_options(record.choice_scores.probabilities)
        stored["choice"] = {option: round(p, 5) for option, p in kept.items()}
        stored["greedy_choice"] = record.choice_scores.greedy_choice
    if record.score is not None:
        stored["score"] = round(record.score, 4)
    if record.recall:
        stored["recall"] = record.recall
    return stored or None


def _token_signals(stored: dict[str, Any] | None) -> TokenSignals | None:
    if not stored or "tokens" not in stored:
        return None
    return TokenSignals(**{name: stored[name] for name in TokenSignals.__dataclass_fields__})


def _tool_call(call: ToolCall) -> ToolCallRecord:
    return ToolCallRecord(
        tool=call.tool,
        arguments=call.arguments,
        result=call.result,
        error=call.error,
        latency_ms=round(call.latency_ms, 1),
    )
