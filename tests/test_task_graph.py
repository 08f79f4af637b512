"""The whole task graph on scripted tiers: routing, escalation for each reason, failures,
and the trace each leaves behind."""

import re
from pathlib import Path

import pytest
from tierflow.agents.calibration import StepScorer, StepScorers
from tierflow.errors import LLMUnavailableError
from tierflow.graphs.task import build_task_graph
from tierflow.memory import TraceStore
from tierflow.settings import TierPolicy

from tests.scripted import (
    ANSWER,
    EXTRACT,
    PLAN,
    SELECT,
    SUMMARIZE,
    model_calls,
    nodes,
    scripted_runner,
    tool_calls,
)

ONE_STEP = {PLAN: ['{"steps": ["Compute 17 * 23 + 4"], "answer": ""}']}


def test_happy_path_uses_both_tiers_and_traces_every_step(store: TraceStore, tmp_path: Path) -> None:
    runner, small, _ = scripted_runner(
        store,
        tmp_path,
        llm=ONE_STEP,
        slm={SELECT: ['{"tool": "calculator"}'], EXTRACT: ['{"expression": "17 * 23 + 4"}'], ANSWER: ["395"]},
    )
    result = runner.run("What is 17 * 23 + 4?")
    assert (result.status, result.answer) == ("succeeded", "395")
    trace = store.get_run(result.run_id)
    assert nodes(trace) == ["plan", "select_tool", "extract_args", "act", "answer"]
    assert [(c.node, c.tier) for c in model_calls(trace)] == [
        ("plan", "llm"),
        ("select_tool", "slm"),
        ("extract_args", "slm"),
        ("answer", "slm"),
    ]
    [tool] = tool_calls(trace)
    assert (tool.tool, tool.arguments, tool.result, tool.error) == (
        "calculator",
        {"expression": "17 * 23 + 4"},
        "395",
        None,
    )
    assert 0 <= tool.latency_ms < 5000  # measured around the call (a forked child: milliseconds)
    assert trace.stats.slm_share == 0.75 and trace.stats.escalations == 0
    # the exact prompt is stored, and the grammar schema sent to the SLM is the tool list + none
    select_call = model_calls(trace)[1]
    assert "Step: Compute 17 * 23 + 4" in select_call.messages[1]["content"]
    assert select_call.output_schema["properties"]["tool"]["enum"][-1] == "none"
    assert "395" in small.calls[-1]["messages"][1]["content"]  # the answer saw the tool result
    # its steps are kit steps: a choose, an extract and a text, each with its signals traced
    kinds = [(c.node, c.step_kind, c.into) for c in model_calls(trace) if c.tier == "slm"]
    assert kinds == [
        ("select_tool", "choose", "tool"),
        ("extract_args", "extract", "arguments"),
        ("answer", "text", "answer"),
    ]
    assert all(c.features for c in model_calls(trace) if c.tier == "slm")
    # the checkpointer keeps the run's final state under its run id
    state = runner.graph.get_state({"configurable": {"thread_id": result.run_id}})
    assert state.values["answer"] == "395"


def test_direct_answer_skips_the_tools(store: TraceStore, tmp_path: Path) -> None:
    runner, small, _ = scripted_runner(
        store, tmp_path, llm={PLAN: ['{"steps": [], "answer": "Paris is the capital of France."}']}
    )
    result = runner.run("What is the capital of France?")
    assert result.answer == "Paris is the capital of France."
    assert nodes(store.get_run(result.run_id)) == ["plan"] and small.calls == []


@pytest.mark.parametrize(
    ("slm_replies", "llm_replies", "node", "reason"),
    [
        (
            {SELECT: ["calculator please"]},
            {SELECT: ['{"tool": "calculator"}'], EXTRACT: ['{"expression": "17*23+4"}']},
            "select_tool",
            "invalid_json",
        ),
        (
            {SELECT: ['{"tool": "abacus"}']},
            {SELECT: ['{"tool": "calculator"}'], EXTRACT: ['{"expression": "17*23+4"}']},
            "select_tool",
            "unknown_tool",
        ),
        (
            {SELECT: ['{"tool": "calculator"}'], EXTRACT: ['{"expr": "17*23+4"}']},
            {EXTRACT: ['{"expression": "17*23+4"}']},
            "extract_args",
            "schema_validation",
        ),
        (
            {SELECT: ['{"tool": "calculator"}'], EXTRACT: ['{"expression": "17 x 23 + 4"}']},
            {EXTRACT: ['{"expression": "17*23+4"}']},
            "extract_args",
            "tool_rejected_arguments",
        ),
    ],
)
def test_each_rejection_escalates_once_to_the_llm(
    store: TraceStore,
    tmp_path: Path,
    slm_replies: dict,
    llm_replies: dict,
    node: str,
    reason: str,
) -> None:
    slm = {SELECT: ['{"tool": "calculator"}'], EXTRACT: ['{"expression": "17*23+4"}'], ANSWER: ["395"]}
    slm.update(slm_replies)
    runner, _, _ = scripted_runner(store, tmp_path, slm=slm, llm={**ONE_STEP, **llm_replies})
    result = runner.run("What is 17 * 23 + 4?")
    assert (result.status, result.answer) == ("succeeded", "395")
    calls = model_calls(store.get_run(result.run_id))
    escalated = [c for c in calls if c.escalated]
    assert len(escalated) == 1
    assert escalated[0].node == node and escalated[0].tier == "slm"
    assert escalated[0].escalation_reason.startswith(reason + ": ")
    retry = calls[calls.index(escalated[0]) + 1]
    assert (retry.node, retry.tier) == (node, "llm")
    assert tool_calls(store.get_run(result.run_id))[-1].result == "395"


def test_empty_or_cut_off_text_escalates(store: TraceStore, tmp_path: Path) -> None:
    # an LLM plan with neither steps nor answer is unusable: the task becomes one step
    runner_cut, _, _ = scripted_runner(
        store,
        tmp_path,
        slm={SELECT: ['{"tool": "none"}'], ANSWER: ["half an ans"]},
        llm={PLAN: ['{"steps": [], "answer": ""}'], ANSWER: ["full answer"]},
        slm_finish_reason="length",
    )
    result = runner_cut.run("Say something")
    calls = model_calls(store.get_run(result.run_id))
    plan_call = calls[0]
    assert plan_call.error.startswith("schema_validation") and not plan_call.escalated
    answer_calls = [c for c in calls if c.node == "answer"]
    assert [(c.tier, c.escalated) for c in answer_calls] == [("slm", True), ("llm", False)]
    assert answer_calls[0].escalation_reason.startswith("truncated")
    assert result.answer == "full answer"


def test_slm_only_policy_never_calls_the_llm(store: TraceStore, tmp_path: Path) -> None:
    runner, _, large = scripted_runner(
        store,
        tmp_path,
        policy=TierPolicy.preset("slm"),
        slm={PLAN: ['{"steps": ["Compute 2+2"], "answer": ""}'], SELECT: ["no json here"], ANSWER: ["4"]},
    )
    result = runner.run("What is 2+2?")
    trace = store.get_run(result.run_id)
    assert result.status == "succeeded" and large.calls == []
    select_call = [c for c in model_calls(trace) if c.node == "select_tool"][0]
    assert not select_call.escalated and select_call.error.startswith("invalid_json")
    assert trace.stats.slm_share == 1.0


def test_tool_errors_after_the_llm_are_shown_to_the_answer(store: TraceStore, tmp_path: Path) -> None:
    runner, small, _ = scripted_runner(
        store,
        tmp_path,
        llm={**ONE_STEP, EXTRACT: ['{"expression": "1/0"}']},
        slm={
            SELECT: ['{"tool": "calculator"}'],
            EXTRACT: ['{"expression": "1/0"}'],
            ANSWER: ["It cannot be computed."],
        },
    )
    result = runner.run("What is 1/0?")
    tools = tool_calls(store.get_run(result.run_id))
    assert [t.error for t in tools] == ["division by zero", "division by zero"]
    assert "error: division by zero" in small.calls[-1]["messages"][1]["content"]
    assert result.status == "succeeded"


def test_long_observations_are_summarized(store: TraceStore, tmp_path: Path) -> None:
    (tmp_path / "log.txt").write_text("line of log text\n" * 200)
    runner, small, _ = scripted_runner(
        store,
        tmp_path,
        summarize_over_chars=500,
        llm={PLAN: ['{"steps": ["Read log.txt"], "answer": ""}']},
        slm={
            SELECT: ['{"tool": "read_file"}'],
            EXTRACT: ['{"path": "log.txt"}'],
            SUMMARIZE: ["The log repeats one line 200 times."],
            ANSWER: ["It repeats."],
        },
    )
    result = runner.run("What is in log.txt?")
    assert nodes(store.get_run(result.run_id)) == [
        "plan",
        "select_tool",
        "extract_args",
        "act",
        "summarize",
        "answer",
    ]
    answer_prompt = small.calls[-1]["messages"][1]["content"]
    assert "200 times" in answer_prompt and "line of log text" not in answer_prompt


def test_plans_are_capped_at_max_steps(store: TraceStore, tmp_path: Path) -> None:
    steps = ", ".join(f'"step {i}"' for i in range(9))
    runner, _, _ = scripted_runner(
        store,
        tmp_path,
        max_steps=2,
        llm={PLAN: [f'{{"steps": [{steps}], "answer": ""}}']},
        slm={SELECT: ['{"tool": "none"}', '{"tool": "none"}'], ANSWER: ["done"]},
    )
    result = runner.run("Do many things")
    assert nodes(store.get_run(result.run_id)).count("select_tool") == 2


def test_unreachable_llm_fails_the_run_and_keeps_the_trace(store: TraceStore, tmp_path: Path) -> None:
    down = LLMUnavailableError("could not reach the LLM at http://127.0.0.1:9/v1", hint="Start it.")
    runner, _, _ = scripted_runner(
        store, tmp_path, llm={**ONE_STEP, SELECT: [down]}, slm={SELECT: ["not json"]}
    )
    result = runner.run("What is 17 * 23 + 4?")
    assert result.status == "failed" and "could not reach" in (result.error or "")
    assert result.hint == "Start it."
    trace = store.get_run(result.run_id)
    assert trace.status == "failed" and "could not reach" in trace.error
    assert [s.status for s in trace.steps] == ["succeeded", "failed"]  # select_tool escalated, then failed
    assert model_calls(trace)[-1].error.startswith("could not reach")


def test_interrupted_and_crashed_runs_are_stored(store: TraceStore, tmp_path: Path) -> None:
    runner, _, _ = scripted_runner(store, tmp_path, llm=ONE_STEP, slm={SELECT: [KeyboardInterrupt()]})
    with pytest.raises(KeyboardInterrupt):
        runner.run("What is 17 * 23 + 4?")
    interrupted = store.get_run("last")
    assert interrupted.status == "interrupted" and nodes(interrupted) == ["plan", "select_tool"]
    runner, _, _ = scripted_runner(store, tmp_path, llm=ONE_STEP, slm={SELECT: [RuntimeError("bug")]})
    with pytest.raises(RuntimeError):
        runner.run("What is 17 * 23 + 4?")
    crashed = store.get_run(store.list_runs(limit=1)[0].id)
    assert crashed.status == "failed" and "internal error: RuntimeError: bug" in crashed.error


def test_secrets_never_reach_the_trace(store: TraceStore, tmp_path: Path) -> None:
    runner, _, _ = scripted_runner(
        store, tmp_path, llm={PLAN: ['{"steps": [], "answer": "your key is sk-test-SECRET-42"}']}
    )
    result = runner.run("Repeat my key sk-test-SECRET-42")
    with store.engine.connect() as connection:
        dump = "\n".join(
            str(row)
            for table in ("runs", "steps", "model_calls")
            for row in connection.exec_driver_sql(f"SELECT * FROM {table}")
        )
    assert "sk-test-SECRET-42" not in dump and "[REDACTED]" in dump
    assert result.answer == "your key is sk-test-SECRET-42"  # the caller still gets its answer


def test_graph_topology() -> None:
    graph = build_task_graph().get_graph()
    edges = {(edge.source, edge.target) for edge in graph.edges}
    assert set(graph.nodes) == {
        "__start__",
        "__end__",
        "plan",
        "select_tool",
        "extract_args",
        "act",
        "summarize",
        "answer",
    }
    assert edges == {
        ("__start__", "plan"),
        ("plan", "select_tool"),
        ("plan", "__end__"),
        ("select_tool", "select_tool"),  # no tool for this step: the next step
        ("select_tool", "extract_args"),
        ("select_tool", "answer"),
        ("extract_args", "act"),
        ("extract_args", "select_tool"),
        ("extract_args", "answer"),
        ("act", "extract_args"),
        ("act", "summarize"),
        ("act", "select_tool"),
        ("act", "answer"),
        ("summarize", "select_tool"),
        ("summarize", "answer"),
        ("answer", "__end__"),
    }


def test_the_answer_is_judged_on_the_results_it_has() -> None:
    from tierflow.graphs.grounding import answer_problem

    task = "How many ounces are 1 kg?"
    results = ["35.274 ounce"]
    assert answer_problem(task, results, [], [], "1 kg is about 35.27 ounces.") is None
    assert answer_problem(task, results, [], [], "35 ounces") is None  # rounded as written
    wrong_unit = answer_problem(task, results, [], [], "It is 35 grams.")
    assert wrong_unit is not None and wrong_unit.code == "ungrounded_units" and "gram" in wrong_unit.detail
    invented = answer_problem(task, results, [], [], "It is 36.5 ounces.")
    assert invented is not None and invented.code == "ungrounded_numbers" and "36.5" in invented.detail
    steps = ["Convert 5 liters to US gallons using the unit_convert tool"]
    echoed = answer_problem(
        "5 l in gallons?", ["1.32 gallon"], [], steps, "1. Convert 5 liters to US gallons..."
    )
    assert echoed is not None and echoed.code == "plan_as_answer"
    on_nothing = answer_problem(
        "Which technique?", [], ["no such file", "no such file"], [], "It is word_count."
    )
    assert on_nothing is not None and on_nothing.code == "no_tool_result"
    assert answer_problem("What is 1/0?", [], ["division by zero"], [], "It cannot be computed.") is None
    assert answer_problem("Capital of France?", [], [], [], "Paris.") is None  # no tools: nothing to check
    assert answer_problem(task, results, [], [], "  ").code == "empty_output"  # type: ignore[union-attr]
    two = ["words: 312", "words: 231"]  # an answer may add up or compare two results
    assert answer_problem("Words in both files?", two, [], [], "543 words in all.") is None
    assert answer_problem("How many more?", two, [], [], "81 more words.") is None
    made_up = answer_problem("Words in both files?", two, [], [], "544 words in all.")
    assert made_up is not None and made_up.code == "ungrounded_numbers"
    csv = ["item,quantity,unit_price_eur bolts,340,0.12 nuts,125,0.08"]  # commas between values
    assert answer_problem("Bolts and nuts in stock?", csv, [], [], "340 bolts and 125 nuts: 465.") is None


def test_the_prompts_give_no_answer_to_copy_and_keep_general_knowledge_off_the_documents() -> None:
    from types import SimpleNamespace

    from tierflow.agents.prompting import render_messages

    answer = render_messages("answer", task="t", results=["r"], cite=True)[0]["content"]
    assert "square brackets" in answer and not re.search(r"\[[^\]]+\]", answer)  # no citation to copy
    tools = [
        SimpleNamespace(name="unit_convert", description="units"),
        SimpleNamespace(name="calculator", description=""),
    ]
    plan = render_messages("plan", tools=tools, task="t", max_steps=3, documents=True)[0]["content"]
    assert "needs no search" in plan
    plain = render_messages("plan", tools=tools[1:], task="t", max_steps=3, documents=False)[0]["content"]
    assert "search" not in plain


def test_an_slm_answer_the_results_do_not_hold_goes_to_the_llm(store: TraceStore, tmp_path: Path) -> None:
    runner, _, _ = scripted_runner(
        store,
        tmp_path,
        llm={**ONE_STEP, ANSWER: ["17 * 23 + 4 is 395."]},
        slm={
            SELECT: ['{"tool": "calculator"}'],
            EXTRACT: ['{"expression": "17 * 23 + 4"}'],
            ANSWER: ["It is 359."],
        },
    )
    result = runner.run("What is 17 * 23 + 4?")
    assert (result.status, result.answer) == ("succeeded", "17 * 23 + 4 is 395.")
    slm_answer = [c for c in model_calls(store.get_run(result.run_id)) if c.node == "answer"][0]
    assert slm_answer.escalated and (slm_answer.escalation_reason or "").startswith("ungrounded_numbers")
    assert slm_answer.step_kind == "text" and slm_answer.features is not None


def test_an_answer_on_no_tool_result_never_passes_as_a_success(store: TraceStore, tmp_path: Path) -> None:
    runner, _, _ = scripted_runner(
        store,
        tmp_path,
        policy=TierPolicy.preset("slm"),
        slm={
            PLAN: ['{"steps": ["Read notes.md"], "answer": ""}'],
            SELECT: ['{"tool": "read_file"}'],
            EXTRACT: ['{"path": "notes.md"}'],
            ANSWER: ["The technique is word_count."],
        },
    )
    result = runner.run("According to my notes, which technique saves memory?")
    assert result.status == "failed" and "no_tool_result" in (result.error or "")


def test_the_llm_may_answer_from_what_it_knows_when_every_tool_call_failed(
    store: TraceStore, tmp_path: Path
) -> None:
    runner, _, _ = scripted_runner(
        store,
        tmp_path,
        slm={
            SELECT: ['{"tool": "read_file"}'],
            EXTRACT: ['{"path": "novel.txt"}'],
            ANSWER: ["The author is read_file."],
        },
        llm={
            PLAN: ['{"steps": ["Read novel.txt"], "answer": ""}'],
            EXTRACT: ['{"path": "novel.txt"}'],
            ANSWER: ["Pride and Prejudice was written by Jane Austen."],
        },
    )
    result = runner.run("Who wrote Pride and Prejudice?")
    assert result.status == "succeeded" and "Austen" in (result.answer or "")
    trace = store.get_run(result.run_id)
    slm_answer = next(c for c in model_calls(trace) if c.node == ANSWER and c.tier == "slm")
    assert slm_answer.escalated and "no_tool_result" in (slm_answer.escalation_reason or "")
    assert "checks: no_tool_result" in (trace.steps[-1].summary or "")


def test_an_answer_that_is_only_a_citation_is_no_answer() -> None:
    from tierflow.graphs.grounding import answer_problem

    problem = answer_problem(
        "Which planet is red?", ['[{"source": "notes.md, part 2"}]'], [], [], "[notes.md, part 2]"
    )
    assert problem is not None and problem.code == "empty_output"
    assert answer_problem("Which planet is red?", [], [], [], "Mars [notes.md, part 2].") is None


def always_doubtful(kind: str, node: str) -> StepScorer:
    """A scorer calibrated for the scripted pair that finds every output likely wrong."""
    from tierflow.agents.judging import FEATURES, Logistic, ThresholdPoint

    names = FEATURES[kind]
    model = Logistic(names, (0.0,) * len(names), (1.0,) * len(names), (0.0,) * len(names), 3.0)
    points = (ThresholdPoint(0.01, 0.5, 0.5, 0.0, 0.0, 0.0),)
    return StepScorer(
        kind, model, points, {"slm": "tiny", "llm": "big", "node": node, "source": "calibrated"}
    )


def test_a_calibrated_scorer_of_a_task_node_takes_precedence_over_the_shipped_task_score(
    store: TraceStore, tmp_path: Path
) -> None:
    scorers = StepScorers(
        {SELECT: always_doubtful("choose", SELECT), ANSWER: always_doubtful("text", ANSWER)}
    )
    runner, _, large = scripted_runner(
        store,
        tmp_path,
        llm={
            **ONE_STEP,
            SELECT: ['{"tool": "calculator"}'],
            EXTRACT: ['{"expression": "17 * 23 + 4"}'],
            ANSWER: ["It is 395."],
        },
        slm={SELECT: ['{"tool": "calculator"}'], ANSWER: ["395."]},
        scorers=lambda: scorers,
    )
    result = runner.run("What is 17 * 23 + 4?")
    assert result.status == "succeeded" and result.answer == "It is 395."
    calls = model_calls(store.get_run(result.run_id))
    select = next(c for c in calls if c.node == SELECT and c.tier == "slm")
    answer = next(c for c in calls if c.node == ANSWER and c.tier == "slm")
    for judged in (select, answer):
        assert judged.escalated and (judged.escalation_reason or "").startswith("escalation_score")
        assert judged.scorer is not None and judged.scorer["source"] == "calibrated"
    doubtful = always_doubtful("choose", SELECT)
    other_pair = StepScorers({SELECT: StepScorer("choose", doubtful.model, (), {"slm": "other"})})
    runner, _, _ = scripted_runner(
        store,
        tmp_path,
        llm={**ONE_STEP, SELECT: ['{"tool": "calculator"}'], EXTRACT: ['{"expression": "2 + 2"}']},
        slm={SELECT: ['{"tool": "calculator"}'], ANSWER: ["4."]},
        scorers=lambda: other_pair,
    )
    run = runner.run("What is 2 + 2?")  # fitted for other models: never first, never silently
    select = next(c for c in model_calls(store.get_run(run.run_id)) if c.node == SELECT)
    assert run.answer == "4." and select.scorer is not None and select.scorer["pair_matches"] is False
