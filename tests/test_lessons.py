"""The lessons ``tierflow learn`` trains on: verified decisions from stored runs, as the SLM
sees them, with every dropped call counted under its rule. Runs are written through the real
recorder into real SQLite; no model is called."""

from __future__ import annotations

from tierflow.memory import TraceStore
from tierflow.memory.lessons import LessonSummary, is_held_out, lessons
from tierflow.records import OutputLabel, ToolCallRecord

from tests.test_distill import call, record_run


def read(store: TraceStore, **options: object) -> tuple[list[object], LessonSummary]:
    summary = LessonSummary()
    return list(lessons(store, summary, **options)), summary  # type: ignore[arg-type]


def test_each_source_of_a_verified_decision_becomes_a_lesson(store: TraceStore) -> None:
    agreed = call("classify", "slm", "Charged twice", '{"label": "refund"}')
    agreed.label = OutputLabel(slm_right=True)
    unsure = call("classify", "slm", "It is slow", '{"label": "bug"}')
    unsure.label = OutputLabel(slm_right=False)
    record_run(
        store,
        [
            [call("plan", "llm", "Plan the week")],  # the LLM first: an llm lesson
            [
                call("extract", "slm", "Order 12", '{"id": 13}', escalated=True, escalation_reason="p_wrong"),
                call("extract", "llm", "Order 12", '{"id": 12}'),  # a correction
            ],
            [agreed, call("classify:shadow", "llm", "Charged twice", '{"label": "refund"}')],
            [unsure, call("classify:shadow", "llm", "It is slow", '{"label": "question"}')],
            [call("answer", "slm", "Sum it", "7"), call("answer:judge", "llm", "Is 7 right?", "yes")],
        ],
    )
    got, summary = read(store)
    by = {(lesson.node, lesson.source): lesson for lesson in got}  # type: ignore[attr-defined]
    assert set(by) == {
        ("plan", "llm"),
        ("extract", "correction"),
        ("classify", "slm_verified"),
        ("classify", "shadow"),
    }
    assert by[("extract", "correction")].target == '{"id": 12}'
    assert by[("classify", "slm_verified")].messages[-1]["content"] == "Charged twice"
    assert by[("classify", "shadow")].target == '{"label": "question"}'
    # the rejected SLM output, the unconfirmed ones and the judge are left out, and the shadow
    # that agreed repeats the verified SLM lesson: each counted under its rule
    assert summary.dropped == {"error": 1, "unconfirmed": 2, "judge": 1, "duplicate": 1}
    assert summary.kept == {"llm": 1, "correction": 1, "slm_verified": 1, "shadow": 1}


def test_a_tool_that_ran_on_an_slm_output_confirms_it(store: TraceStore) -> None:
    run_id = store.start_run("t", graph="task", slm_model="s", llm_model="l", settings={"run": {}})
    from tierflow.memory.traces.recorder import RunRecorder

    recorder = RunRecorder(store, run_id)
    with recorder.step("select_tool") as step:
        step.model_call(call("select_tool", "slm", "Add 2 and 3", '{"tool": "calculator"}'))
        step.tool_call(ToolCallRecord("calculator", {"expression": "2+3"}, result="5"))
    with recorder.step("select_tool") as step:
        step.model_call(call("select_tool", "slm", "Read x", '{"tool": "read_file"}'))
        step.tool_call(ToolCallRecord("read_file", {"path": "x"}, error="no such file"))
    store.finish_run(run_id, "succeeded", answer="5")
    got, summary = read(store)
    assert [lesson.messages[-1]["content"] for lesson in got] == ["Add 2 and 3"]  # type: ignore[attr-defined]
    assert summary.dropped == {"unconfirmed": 1}


def test_private_data_stays_out_unless_asked_and_then_as_the_slm_saw_it(store: TraceStore) -> None:
    record_run(store, [[call("plan", "llm", "Mail bob@example.com")]], local_only=True)
    record_run(
        store,
        [
            [
                call("draft", "slm", "Mail bob@example.com", "Hi", escalated=True),
                call("draft", "llm", "Mail <EMAIL_1>", "Hi Bob", redacted=["email"]),
            ]
        ],
    )
    record_run(store, [[call("plan", "llm", "Never finished")]], status="failed")
    got, summary = read(store)
    assert got == []
    assert summary.dropped == {"local_only": 1, "redacted": 1, "error": 1, "failed_run": 1}
    private, summary = read(store, include_private=True)
    (lesson,) = private
    assert lesson.messages[-1]["content"] == "Mail bob@example.com"  # type: ignore[attr-defined]
    assert lesson.target == "Hi Bob" and lesson.source == "correction"  # type: ignore[attr-defined]
    assert summary.dropped == {"local_only": 1, "error": 1, "failed_run": 1}


def test_duplicates_are_kept_once_and_nodes_filter(store: TraceStore) -> None:
    for _ in range(2):
        record_run(store, [[call("plan", "llm", "Plan it")], [call("answer", "llm", "Say it", "Done")]])
    got, summary = read(store, nodes=["answer"])
    assert [lesson.node for lesson in got] == ["answer"]  # type: ignore[attr-defined]
    assert summary.dropped == {"duplicate": 1}


def test_the_held_out_slice_is_stable_and_near_its_share() -> None:
    ids = [f"run-{n}" for n in range(2000)]
    held = [run_id for run_id in ids if is_held_out(run_id, 0.2)]
    assert 0.17 < len(held) / len(ids) < 0.23
    assert held == [run_id for run_id in ids if is_held_out(run_id, 0.2)]
    assert not any(is_held_out(run_id, 0.0) for run_id in ids)
