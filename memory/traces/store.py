"""Run traces, written as each step happens so that a crash still leaves a readable trace.

A step is written with its model and tool calls in one transaction when it ends. Strings
pass through ``scrub`` first, so the values of secrets (API keys) never reach the database
even when an error message quotes them.
"""

from __future__ import annotations

import contextlib
import copy
import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, fields
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DatabaseError, OperationalError
from sqlmodel import Session, col, select
from tierflow.errors import ConfigError, RunNotFoundError
from tierflow.memory.traces.engine import open_engine
from tierflow.memory.traces.migrations import migrate
from tierflow.memory.traces.owner import is_gone, this_process
from tierflow.memory.traces.rows import (
    RunSummary,
    aware,
    elapsed_ms,
    run_summary,
    signals_column,
    stored_call,
    stored_tool_call,
)
from tierflow.memory.traces.tables import Label, ModelCall, Run, Step, ToolCall, utcnow
from tierflow.records import (
    CallRef,
    ModelCallRecord,
    OutputLabel,
    RunStats,
    RunTrace,
    StepHandle,
    StepTrace,
    StoredLabel,
    StoredModelCall,
    TraceListener,
)
from tierflow.secrets import register, scrub_value

__all__ = ["TraceStore"]

_CALL_FIELDS = tuple(
    f.name
    for f in fields(ModelCallRecord)
    if f.name in ModelCall.model_fields and f.name not in ("id", "run_id")
)


class TraceStore:
    """The runs' traces in one database. ``secrets``: values scrubbed from everything
    written; ``listeners`` see each write once it is stored (see ``TraceListener``)."""

    def __init__(
        self, engine: Engine, *, secrets: Sequence[str] = (), listeners: Sequence[TraceListener] = ()
    ) -> None:
        self.engine = engine
        self.listeners: tuple[TraceListener, ...] = tuple(listeners)
        # An in-memory database is one connection: parallel steps take turns with it.
        in_memory = engine.dialect.name == "sqlite" and engine.url.database in (None, "", ":memory:")
        self._serial: contextlib.AbstractContextManager[Any] = (
            threading.RLock() if in_memory else contextlib.nullcontext()
        )
        register(secrets)
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
    def from_url(
        cls, url: str, *, secrets: Sequence[str] = (), listeners: Sequence[TraceListener] = ()
    ) -> TraceStore:
        return cls(open_engine(url), secrets=secrets, listeners=listeners)

    @classmethod
    def in_memory(cls, *, listeners: Sequence[TraceListener] = ()) -> TraceStore:
        """A store in an in-memory SQLite database, for one process's runs (a batch worker's,
        whose listener keeps the writes for the driver)."""
        return cls(open_engine("sqlite://"), listeners=listeners)

    def with_listener(self, listener: TraceListener) -> TraceStore:
        """This store (the same database) with one more listener."""
        other = copy.copy(self)
        other.listeners = (*self.listeners, listener)
        return other

    @contextlib.contextmanager
    def _session(self, **options: Any) -> Iterator[Session]:
        with self._serial, Session(self.engine, **options) as session:
            yield session

    @contextlib.contextmanager
    def _begin(self) -> Iterator[Connection]:
        with self._serial, self.engine.begin() as connection:
            yield connection

    # Writing ------------------------------------------------------------------------
    def scrub(self, value: Any) -> Any:
        """``value`` with every secret replaced by ``[REDACTED]`` (recursively; see
        ``tierflow.secrets``)."""
        return scrub_value(value)

    def _add(self, row: Any) -> Any:
        with self._session(expire_on_commit=False) as session:
            session.add(row)
            session.commit()
            session.refresh(row)
            return row

    def start_run(self, task: str, **fields: Any) -> str:
        run_id = fields.pop("id", None) or uuid.uuid4().hex[:16]
        self._add(Run(id=run_id, task=self.scrub(task), owner=this_process(), **self.scrub(fields)))
        for listener in self.listeners:
            listener.run_started(str(run_id), task, fields)
        return str(run_id)

    def reopen_run(self, run_id: str) -> int:
        """Mark a stopped run running again, in this process; the next step's number."""
        full_id = self.resolve_id(run_id)
        with self._session() as session:
            run = session.get(Run, full_id)
            assert run is not None
            run.status, run.error, run.answer, run.finished_at = "running", None, None, None
            run.owner = this_process()
            last = session.exec(select(func.max(Step.seq)).where(Step.run_id == full_id)).one()
            session.commit()
            models = {"graph": run.graph, "slm_model": run.slm_model, "llm_model": run.llm_model}
            for listener in self.listeners:
                listener.run_started(full_id, run.task, models, resumed=True)
        return int(last or 0) + 1

    def run_settings(self, run_id: str) -> dict[str, Any]:
        """The settings a run started with (masked), ``run`` holding its own options."""
        with self._session() as session:
            run = session.get(Run, self.resolve_id(run_id))
            assert run is not None
            return dict(run.settings or {})

    def reconcile(self) -> int:
        """Runs left ``running`` by a process of this machine that is gone become
        ``interrupted``; returns how many. Reading runs does this first."""
        with self._session() as session:
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
        with self._session() as session:
            run = session.get(Run, run_id)
            if run is None:
                raise RunNotFoundError(f"no run {run_id}")
            run.status, run.answer, run.error = status, self.scrub(answer), self.scrub(error)
            run.finished_at = utcnow()
            session.commit()
        for listener in self.listeners:
            listener.run_finished(run_id, status, answer=answer, error=error)

    def write_step(
        self, run_id: str, step: StepHandle, *, status: str = "succeeded", error: str | None = None
    ) -> int:
        """Store a finished step with its model and tool calls, in one transaction (SQLAlchemy
        Core: the ORM's unit of work cost more than the rest of a step's orchestration)."""
        now = utcnow()
        with self._begin() as connection:
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
                labelled = [(c, c.label) for c in step.calls if c.label is not None and c.id is not None]
                if labelled:
                    run = connection.execute(
                        select(Run.graph, Run.slm_model, Run.llm_model).where(Run.id == run_id)
                    ).one()
                    rows = [
                        self._label_row(run_id, run, c.id, c.node, c.step_kind, c.features, label, now)
                        for c, label in labelled
                    ]
                    connection.execute(insert(Label), rows)
            if step.tools:
                tools = [
                    {**self.scrub(asdict(t)), "run_id": run_id, "step_id": step_id, "created_at": now}
                    for t in step.tools
                ]
                connection.execute(insert(ToolCall), tools)
        for listener in self.listeners:
            listener.step_written(run_id, step, status=status, error=error, finished_at=now)
        return step_id

    def _label_row(
        self,
        run_id: str,
        run: Any,
        call_id: int | None,
        node: str,
        kind: str | None,
        features: dict[str, float] | None,
        label: OutputLabel,
        now: datetime,
    ) -> dict[str, Any]:
        """A ``labels`` row: the label, the output's node, kind and signals, the run's graph
        and model pair (``run``: its row's ``graph``, ``slm_model``, ``llm_model``)."""
        return {
            "run_id": run_id,
            "model_call_id": call_id,
            "graph": run.graph,
            "node": node,
            "kind": kind or "",
            "slm_model": run.slm_model,
            "llm_model": run.llm_model,
            "slm_right": label.slm_right,
            "llm_right": label.llm_right,
            "source": label.source,
            "features": features or {},
            "detail": self.scrub(label.detail),
            "created_at": now,
        }

    def add_label(self, run_id: str, call_id: int, label: OutputLabel) -> None:
        """Label a stored SLM output after its run (a gold value compared with it)."""
        with self._session() as session:
            run = session.get(Run, run_id)
            call = session.get(ModelCall, call_id)
            if run is None or call is None or call.run_id != run_id:
                raise RunNotFoundError(f"no model call {call_id} in run {run_id}")
            stored = stored_call(call)  # its kind and signals live in the signals column
            row = self._label_row(
                run_id, run, call_id, stored.node, stored.step_kind, stored.features, label, utcnow()
            )
            session.add(Label(**row))
            session.commit()

    def labels(
        self,
        *,
        graph: str | Sequence[str] | None = None,
        slm_model: str | None = None,
        llm_model: str | None = None,
        run_id: str | None = None,
    ) -> list[StoredLabel]:
        """The labels of SLM outputs, oldest first, of the graph (any of several names), the
        model pair and the run if named."""
        query = select(Label).order_by(col(Label.id))
        if run_id is not None:
            query = query.where(Label.run_id == run_id)
        if graph is not None:
            names = [graph] if isinstance(graph, str) else list(graph)
            query = query.where(col(Label.graph).in_(names))
        if slm_model is not None:
            query = query.where(Label.slm_model == slm_model)
        if llm_model is not None:
            query = query.where(Label.llm_model == llm_model)
        with self._session() as session:
            rows = session.exec(query).all()
        return [
            StoredLabel(
                run_id=row.run_id,
                model_call_id=row.model_call_id,
                graph=row.graph,
                node=row.node,
                kind=row.kind,
                slm_model=row.slm_model,
                llm_model=row.llm_model,
                slm_right=row.slm_right,
                llm_right=row.llm_right,
                source=row.source,
                features=dict(row.features or {}),
                detail=row.detail,
                created_at=aware(row.created_at),
            )
            for row in rows
        ]

    def _fields(self, record: ModelCallRecord) -> dict[str, Any]:
        fields = {name: getattr(record, name) for name in _CALL_FIELDS}
        fields["signals"] = signals_column(record)
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
        with self._session() as session:
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
        for listener in self.listeners:
            listener.call_marked(run_id, ref, escalation_reason=escalation_reason, refused=refused)

    def get_model_call(self, call_id: int) -> StoredModelCall:
        with self._session() as session:
            call = session.get(ModelCall, call_id)
        if call is None:
            raise RunNotFoundError(f"no model call {call_id}")
        return stored_call(call)

    def is_local_only(self, run_id: str) -> bool:
        """Whether the run was made local-only (its data must never reach the LLM)."""
        with self._session() as session:
            run = session.get(Run, run_id)
        options = ((run.settings or {}).get("run") or {}) if run is not None else {}
        return bool(options.get("local_only"))

    # Reading ------------------------------------------------------------------------
    def resolve_id(self, run_id: str) -> str:
        """A full run id from an id, a unique prefix, or ``last``."""
        with self._session() as session:
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

    def run_tasks(self, *, graph: str, status: str, prefix: str) -> list[str]:
        """The task labels, starting with ``prefix``, of a graph's runs in ``status`` (no
        model calls loaded: ``calibrate`` asks it for the inputs it has already run)."""
        query = select(Run.task).where(
            Run.graph == graph, Run.status == status, col(Run.task).startswith(prefix)
        )
        with self._session() as session:
            return list(session.exec(query).all())

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
        with self._session() as session:
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
        return [run_summary(run, by_run.get(run.id, [])) for run in runs]

    def get_run(self, run_id: str) -> RunTrace:
        """The whole trace of one run (``trace.to_json()`` is what ``runs show --json`` prints)."""
        full_id = self.resolve_id(run_id)
        self.reconcile()
        with self._session() as session:
            run = session.get(Run, full_id)
            assert run is not None
            steps = session.exec(select(Step).where(Step.run_id == full_id).order_by(col(Step.seq))).all()
            calls = session.exec(
                select(ModelCall).where(ModelCall.run_id == full_id).order_by(col(ModelCall.id))
            ).all()
            tools = session.exec(
                select(ToolCall).where(ToolCall.run_id == full_id).order_by(col(ToolCall.id))
            ).all()
        summary = run_summary(run, list(calls))
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
            created_at=aware(run.created_at),
            finished_at=aware(run.finished_at) if run.finished_at else None,
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
                    started_at=aware(step.started_at),
                    duration_ms=elapsed_ms(step.started_at, step.finished_at),
                    model_calls=[stored_call(c) for c in calls if c.step_id == step.id],
                    tool_calls=[stored_tool_call(t) for t in tools if t.step_id == step.id],
                    evidence=step.evidence,
                )
                for step in steps
            ],
        )
