"""``tierflow export distill``: stored LLM calls as chat fine-tuning lines. Runs are written
through the real recorder into real SQLite; no model is called."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from tierflow.agents.protocol import Message, Tier
from tierflow.cli import app
from tierflow.errors import ConfigError
from tierflow.memory import TraceStore
from tierflow.memory.distill import export_distill, parse_since
from tierflow.memory.traces.recorder import RunRecorder
from tierflow.records import CallRef, ModelCallRecord
from tierflow.settings import load_settings
from typer.testing import CliRunner, Result

ROLES = {"system", "user", "assistant"}


def prompt(text: str) -> list[Message]:
    return [{"role": "system", "content": "You plan tasks."}, {"role": "user", "content": text}]


def call(
    node: str,
    tier: Tier,
    text: str,
    answer: str | None = '{"steps": ["add"]}',
    *,
    parsed: Any = None,
    error: str | None = None,
    escalated: bool = False,
    escalation_reason: str | None = None,
    redacted: list[str] | None = None,
) -> ModelCallRecord:
    accepted = error is None and answer is not None
    return ModelCallRecord(
        node=node,
        tier=tier,
        model=f"{tier}-model",
        messages=prompt(text),
        raw_output=answer,
        parsed=parsed if parsed is not None else ({"answer": answer} if accepted else None),
        error=error,
        escalated=escalated,
        escalation_reason=escalation_reason,
        redacted=redacted or [],
    )


def record_run(
    store: TraceStore,
    steps: list[list[ModelCallRecord]],
    *,
    status: str = "succeeded",
    local_only: bool = False,
    task: str = "a task",
) -> str:
    """A run written as the graph runner writes one: each inner list is one step's calls."""
    run_id = store.start_run(
        task,
        graph="task",
        slm_model="slm-model",
        llm_model="llm-model",
        settings={"run": {"local_only": local_only}},
    )
    recorder = RunRecorder(store, run_id)
    for calls in steps:
        with recorder.step(calls[0].node) as step:
            for record in calls:
                step.model_call(record)
    store.finish_run(run_id, status, answer="done" if status == "succeeded" else None)
    return run_id


@pytest.fixture
def db() -> Iterator[TraceStore]:
    """The store the CLI reads: the default database in the test's data directory."""
    trace_store = TraceStore.from_url(load_settings().resolved_database_url())
    yield trace_store
    trace_store.engine.dispose()


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def export(store: TraceStore, tmp_path: Path, **options: Any) -> Path:
    out = tmp_path / "out.jsonl"
    export_distill(store, out, **options)
    return out


def cli(*args: str) -> Result:
    return CliRunner().invoke(app, ["export", "distill", *args])


def test_each_line_is_a_chat_example_ending_in_the_llm_raw_output(store: TraceStore, tmp_path: Path) -> None:
    run_id = record_run(
        store,
        [
            [call("plan", "llm", "Plan my week", '{"steps": ["shop"]}')],
            [call("answer", "slm", "Say it")],  # the SLM's calls teach nothing
            [call("answer", "llm", "Say it nicely", "Here is your week.", redacted=["email"])],
        ],
    )
    out = tmp_path / "deep" / "dir" / "distill.jsonl"
    summary = export_distill(store, out)
    rows = lines(out)
    assert summary.path == out and summary.exported == 2 and summary.runs == 1
    assert summary.by_node == {"plan": 1, "answer": 1} and summary.redacted == 1
    assert [row["messages"][-1] for row in rows] == [
        {"role": "assistant", "content": '{"steps": ["shop"]}'},
        {"role": "assistant", "content": "Here is your week."},
    ]
    for row in rows:
        assert set(row) == {"messages", "metadata"}
        assert all(set(m) == {"role", "content"} and m["role"] in ROLES for m in row["messages"])
        assert row["messages"][:-1] == prompt(row["messages"][1]["content"])
        assert row["metadata"]["run_id"] == run_id and row["metadata"]["model"] == "llm-model"
        assert row["metadata"]["created_at"].endswith("Z") and row["metadata"]["escalated_from_slm"] is False
    assert rows[1]["metadata"]["redacted"] == ["email"]
    assert not list(out.parent.glob(".*.tmp"))  # the temporary file was renamed


def test_no_metadata_writes_pure_messages_lines(store: TraceStore, tmp_path: Path) -> None:
    record_run(store, [[call("plan", "llm", "Plan my week")]])
    export_distill(store, tmp_path / "pure.jsonl", metadata=False)
    assert [set(row) for row in lines(tmp_path / "pure.jsonl")] == [{"messages"}]


def test_only_accepted_llm_calls_are_exported(store: TraceStore, tmp_path: Path) -> None:
    record_run(
        store,
        [
            [call("plan", "llm", "unreachable", None, error="could not reach the LLM")],
            [call("plan", "llm", "rejected", "not json", error="the output is not JSON")],
            [call("plan", "llm", "empty", "   ")],
            [call("plan", "llm", "kept", '{"steps": []}')],
        ],
    )
    summary = export_distill(store, tmp_path / "d.jsonl")
    assert [row["messages"][1]["content"] for row in lines(tmp_path / "d.jsonl")] == ["kept"]
    assert summary.skipped == {"error": 2, "no_output": 1}


def test_an_escalation_is_marked_with_the_slm_reason(store: TraceStore, tmp_path: Path) -> None:
    run_id = record_run(
        store,
        [
            [
                call(
                    "select_tool",
                    "slm",
                    "pick",
                    "??",
                    error="not JSON",
                    escalated=True,
                    escalation_reason="bad",
                ),
                call("select_tool", "llm", "pick", '{"tool": "calculator"}'),
            ],
            [call("extract_args", "slm", "args", '{"x": 1}')],
            [call("extract_args", "llm", "args again", '{"x": 2}')],
        ],
    )
    RunRecorder(store, run_id).mark_call(CallRef(2, 0), escalation_reason="tool_rejected_arguments: no x")
    metadata = [row["metadata"] for row in lines(export(store, tmp_path))]
    assert [(m["node"], m["escalated_from_slm"], m["escalation_reason"]) for m in metadata] == [
        ("select_tool", True, "bad"),
        ("extract_args", True, "tool_rejected_arguments: no x"),  # rejected by the tool a step later
    ]


def test_failed_and_local_only_runs_are_left_out(store: TraceStore, tmp_path: Path) -> None:
    record_run(store, [[call("plan", "llm", "ok")]])
    record_run(store, [[call("plan", "llm", "from a failed run")]], status="failed")
    record_run(store, [[call("plan", "llm", "private")]], local_only=True)
    summary = export_distill(store, tmp_path / "a.jsonl")
    assert [r["messages"][1]["content"] for r in lines(tmp_path / "a.jsonl")] == ["ok"]
    assert summary.skipped == {"failed_run": 1, "local_only": 1}

    summary = export_distill(store, tmp_path / "b.jsonl", include_failed_runs=True)
    assert [r["messages"][1]["content"] for r in lines(tmp_path / "b.jsonl")] == ["ok", "from a failed run"]
    assert summary.skipped == {"local_only": 1}


def test_identical_examples_are_written_once(store: TraceStore, tmp_path: Path) -> None:
    record_run(store, [[call("plan", "llm", "same")], [call("plan", "llm", "same", '{"other": 1}')]])
    record_run(store, [[call("plan", "llm", "same")]])
    summary = export_distill(store, tmp_path / "d.jsonl")
    assert summary.exported == 2 and summary.skipped == {"duplicate": 1}


def test_node_run_and_since_filters(store: TraceStore, tmp_path: Path) -> None:
    first = record_run(store, [[call("plan", "llm", "p1")], [call("answer", "llm", "a1")]])
    between = datetime.now(UTC)
    record_run(store, [[call("plan", "llm", "p2")]])
    assert export_distill(store, tmp_path / "n.jsonl", nodes=["answer"]).by_node == {"answer": 1}
    assert export_distill(store, tmp_path / "r.jsonl", run_ids=[first[:6]]).by_node == {
        "plan": 1,
        "answer": 1,
    }
    in_tokyo = between.astimezone(timezone(timedelta(hours=9)))
    for name, since in (("utc", between), ("tokyo", in_tokyo)):
        export_distill(store, tmp_path / f"{name}.jsonl", since=since)
        assert [r["messages"][1]["content"] for r in lines(tmp_path / f"{name}.jsonl")] == ["p2"]
    later = datetime.now(UTC) + timedelta(days=1)
    assert export_distill(store, tmp_path / "s.jsonl", since=later).runs == 0
    assert not (tmp_path / "s.jsonl").exists()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-01-31", datetime(2025, 1, 31, tzinfo=UTC)),
        ("2025-01-31T09:30", datetime(2025, 1, 31, 9, 30, tzinfo=UTC)),
        ("2025-01-31T11:30+02:00", datetime(2025, 1, 31, 9, 30, tzinfo=UTC)),
    ],
)
def test_since_takes_iso_dates_as_utc(text: str, expected: datetime) -> None:
    assert parse_since(text) == expected


def test_an_existing_file_is_kept_without_force(store: TraceStore, tmp_path: Path) -> None:
    record_run(store, [[call("plan", "llm", "new")]])
    out = tmp_path / "kept.jsonl"
    out.write_text("old\n")
    with pytest.raises(ConfigError, match="already exists"):
        export_distill(store, out)
    assert out.read_text() == "old\n"
    export_distill(store, out, force=True)
    assert lines(out)[0]["messages"][1]["content"] == "new"


# The command -------------------------------------------------------------------------------
def test_cli_writes_the_file_and_prints_a_summary(db: TraceStore, tmp_path: Path) -> None:
    record_run(db, [[call("plan", "llm", "p")], [call("answer", "llm", "a")]])
    record_run(db, [[call("plan", "llm", "f")]], status="failed")
    out = tmp_path / "out.jsonl"
    result = cli("--out", str(out), "--node", "plan")
    assert result.exit_code == 0, result.output
    assert "exported 1 LLM calls from 2 runs" in result.stdout and "plan" in result.stdout
    assert "1 run did not succeed" in result.stdout
    assert len(lines(out)) == 1

    again = cli("--out", str(out))
    assert again.exit_code == 1 and "already exists" in again.stderr and "--force" in again.stderr

    result = cli("--out", str(out), "--force", "--include-failed-runs", "--no-metadata", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["exported"] == 3 and summary["by_node"] == {"answer": 1, "plan": 2}
    assert summary["path"] == str(out) and all(set(row) == {"messages"} for row in lines(out))


def test_cli_with_nothing_to_export_says_why_and_writes_nothing(db: TraceStore, tmp_path: Path) -> None:
    out = tmp_path / "none" / "out.jsonl"
    empty = cli("--out", str(out))
    assert empty.exit_code == 1 and "no runs stored yet" in empty.stderr
    record_run(db, [[call("plan", "llm", "f")]], status="failed")
    failed = cli("--out", str(out), "--json")
    assert failed.exit_code == 1 and "--include-failed-runs" in failed.stderr
    assert json.loads(failed.stdout)["skipped"] == {"failed_run": 1}
    other = cli("--out", str(out), "--node", "nope", "--include-failed-runs")
    assert other.exit_code == 1 and "Nodes with LLM calls: plan" in other.stderr
    assert not out.parent.exists()


def test_cli_bad_since_exits_2(db: TraceStore, tmp_path: Path) -> None:
    result = cli("--out", str(tmp_path / "o.jsonl"), "--since", "last tuesday")
    assert result.exit_code == 2 and "is not a date" in result.stderr and "2025-01-31" in result.stderr
    assert "Traceback" not in result.output
