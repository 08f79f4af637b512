"""Every console page under Streamlit's AppTest, on scripted tiers and a real SQLite trace
store (the browser test in test_ui_browser.py drives the real server and models)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from langgraph.checkpoint.memory import InMemorySaver
from streamlit.testing.v1 import AppTest
from tierflow.agents.scripted import ScriptedModel
from tierflow.agents.tiers import Tiers
from tierflow.app import App
from tierflow.settings import load_settings
from tierflow.tools.builtins import default_registry
from tierflow.ui.graph import node_tiers, run_graph_dot
from tierflow.ui.resources import SESSION_KEY
from tierflow.ui.views import timeline_chart

from tests.scripted import ANSWER, EXTRACT, PLAN, SELECT

APP = str(Path(__file__).parents[1] / "ui" / "app.py")
INJECTION = "<b>bold</b> <script>alert('x')</script> **not bold**"


def scripted(runs: int = 3, answer: str = "395") -> Tiers:
    llm = {
        PLAN: [{"steps": ["compute 17 * 23 + 4"], "answer": ""}] * runs,
        SELECT: [{"tool": "calculator"}] * runs,
        EXTRACT: [{"expression": "17 * 23 + 4"}] * runs,  # the LLM chose the tool: it writes the call
    }
    slm = {
        SELECT: [{"tool": "nonexistent"}] * runs,  # rejected: escalates select_tool to the LLM
        ANSWER: [answer] * runs,
    }
    return Tiers(
        ScriptedModel(tier="slm", name="tiny", by_node=slm),
        ScriptedModel(tier="llm", name="big", by_node=llm),
    )


@pytest.fixture
def app(tmp_path: Path) -> App:
    return App(
        load_settings(workspace=tmp_path),
        tiers=scripted(),
        tools=default_registry(tmp_path),
        checkpointer=InMemorySaver(),
    )


def page(app: App, path: str | None = None, **query: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state[SESSION_KEY] = app
    for key, value in query.items():
        at.query_params[key] = value
    at.run()
    if path is not None:
        at.switch_page(path)
        at.run()
    assert not at.exception, at.exception
    return at


def run_in_page(at: AppTest) -> AppTest:
    """Click the form's Run button, then rerun the page until the background run has ended."""
    at.button[0].click()
    at.run()
    return until_ended(at)


def until_ended(at: AppTest, timeout_s: float = 60) -> AppTest:
    deadline = time.monotonic() + timeout_s
    while any(s.label.startswith(("Running", "Cancelling")) for s in at.status):
        assert time.monotonic() < deadline, "the run did not end"
        time.sleep(0.1)
        at.run()
    assert not at.exception, at.exception
    return at


def texts(at: AppTest) -> str:
    return "\n".join([t.value for t in at.text] + [c.value for c in at.code] + [m.value for m in at.markdown])


def run_task(app: App, task: str) -> str:
    return app.runner.run(task).run_id


def test_run_a_task_shows_steps_status_and_answer(app: App) -> None:
    at = page(app)
    at.text_area[0].input("What is 17 * 23 + 4?")
    run_in_page(at)
    shown = texts(at)
    assert "395" in shown and "calculator" in shown
    assert any("succeeded" in s.label and "1 escalated" in s.label for s in at.status)
    (run,) = app.store.list_runs()
    assert run.status == "succeeded" and run.escalations == 1


def test_cancel_stops_a_running_task_before_its_next_step(tmp_path: Path) -> None:
    release, planning = threading.Event(), threading.Event()

    def slow_plan(messages: object) -> str:  # the plan step waits until the test lets it go
        planning.set()
        release.wait(30)
        return json.dumps({"steps": ["compute 17 * 23 + 4"], "answer": ""})

    tiers = scripted()
    tiers.llm._by_node[PLAN] = [slow_plan]  # type: ignore[attr-defined]
    app = App(load_settings(workspace=tmp_path), tiers=tiers, tools=default_registry(tmp_path))
    at = page(app)
    at.text_area[0].input("What is 17 * 23 + 4?")
    at.button[0].click()
    at.run()
    assert any(s.label.startswith("Running") for s in at.status)
    assert planning.wait(30)  # cancel while the plan step runs (on a busy machine it starts later)
    next(b for b in at.button if b.label == "Cancel").click()
    at.run()
    assert any(s.label.startswith("Cancelling") for s in at.status)
    release.set()
    until_ended(at)
    assert any(s.label.endswith("interrupted") for s in at.status)
    (run,) = app.store.list_runs()
    trace = app.store.get_run(run.id)
    assert trace.status == "interrupted" and "cancelled" in (trace.error or "")
    assert [step.node for step in trace.steps] == ["plan"]  # the finished step is kept, no other ran


def test_an_empty_task_is_refused_with_a_message(app: App) -> None:
    at = page(app)
    at.text_area[0].input("   ")
    at.button[0].click()
    at.run()
    assert at.error and "empty" in at.error[0].value.lower()
    assert app.store.list_runs() == []


def test_runs_page_lists_and_filters(app: App) -> None:
    run_task(app, "What is 17 * 23 + 4?")
    run_task(app, "Multiply 17 by 23, add 4")
    at = page(app, "screens/runs.py")
    frame = at.dataframe[0].value
    assert len(frame) == 2 and set(frame["status"]) == {"succeeded"} and set(frame["policy"]) == {"tiered"}
    at.text_input[0].input("multiply")
    at.run()
    assert list(at.dataframe[0].value["task"]) == ["Multiply 17 by 23, add 4"]
    at.slider[0].set_value((0.3, 0.5))  # SLM share: these runs have 40%
    at.run()
    assert len(at.dataframe[0].value) == 1
    at.slider[0].set_value((0.9, 1.0))
    at.run()
    assert not at.dataframe and at.info
    at.slider[0].set_value((0.0, 1.0))
    at.text_input[0].input("")
    at.run()
    tokens = at.dataframe[0].value["LLM tokens"]
    assert tokens.min() > 0  # plan and the escalated select_tool ran on the LLM
    at.number_input[0].set_value(int(tokens.max()))  # LLM tokens at most
    at.run()
    assert len(at.dataframe[0].value) == 2
    at.number_input[0].set_value(int(tokens.min()) - 1)
    at.run()
    assert not at.dataframe and at.info
    at.number_input[0].set_value(None)
    at.number_input[1].set_value(0.0)  # seconds at most: no run takes no time at all
    at.run()
    assert not at.dataframe and at.info
    at.number_input[1].set_value(None)
    at.multiselect[0].select("failed")
    at.run()
    assert not at.dataframe and at.info


def test_run_detail_shows_graph_timeline_and_calls(app: App) -> None:
    run_id = run_task(app, "What is 17 * 23 + 4?")
    at = page(app, "screens/run_detail.py", run=run_id)
    assert at.selectbox[0].value == run_id
    labels = [e.label for e in at.expander]
    assert any(label.startswith("select_tool · SLM") and "escalated" in label for label in labels)
    assert any(label.startswith("plan · LLM") for label in labels)
    shown = texts(at)
    assert "unknown_tool" in shown  # the escalation reason
    assert "17 * 23 + 4" in shown  # the tool call's arguments


def test_replay_on_the_other_tier_is_stored_and_linked(app: App) -> None:
    run_id = run_task(app, "What is 17 * 23 + 4?")
    app.tiers.llm._by_node[ANSWER] = ["three hundred ninety-five"]  # type: ignore[attr-defined]
    at = page(app, "screens/run_detail.py", run=run_id)
    keys = [b.key for b in at.button if b.label == "Replay this call on the LLM"]
    at.button(keys[-1]).click()  # the last SLM call: answer
    at.run()
    assert not at.exception, at.exception
    replays = app.store.list_runs(graph="replay")
    assert len(replays) == 1 and replays[0].parent_run_id == run_id
    assert "three hundred ninety-five" in texts(at)


def test_cost_page_counts_avoided_tokens(app: App) -> None:
    run_task(app, "What is 17 * 23 + 4?")
    at = page(app, "screens/costs.py")
    metrics = {m.label: m.value for m in at.metric}
    # plan (LLM), select_tool (SLM, escalated), select_tool (LLM), extract_args (SLM), answer (SLM)
    assert metrics["SLM share of calls"] == "40%"
    assert int(metrics["LLM tokens used"].replace(",", "")) > 0
    assert int(metrics["LLM tokens avoided"].replace(",", "")) > 0
    # the default LLM is the embedded server: the page says the prices are hypothetical
    assert any("no per-token fee" in i.value and "your settings" in i.value for i in at.info)


def test_compare_page_needs_two_runs_then_shows_both(app: App) -> None:
    at = page(app, "screens/compare.py")
    assert at.info
    run_task(app, "What is 17 * 23 + 4?")
    run_task(app, "Compute 17 * 23 + 4 please")
    at = page(app, "screens/compare.py")
    assert len(at.dataframe) == 2
    assert "Compute 17 * 23 + 4 please" in texts(at) and "What is 17 * 23 + 4?" in texts(at)


def test_evaluations_page_reads_result_files(app: App, tmp_path: Path) -> None:
    at = page(app, "screens/evals.py", results=str(tmp_path / "nothing"))
    assert at.info
    at = page(app, "screens/evals.py")  # the committed results
    sections = {"Tool calls (BFCL)", "End-to-end tasks", "Summaries", "Benchmarks"}
    assert sections <= {h.value for h in at.subheader}
    frames = [frame.value for frame in at.dataframe]
    tasks = next(f for f in frames if "success" in f.columns)
    assert set(tasks["policy"]) >= {"slm", "tiered"} and tasks["success"].between(0, 1).all()
    summaries = next(f for f in frames if "coverage" in f.columns)
    assert "seconds" in summaries.columns and summaries["seconds"].gt(0).all()
    bench = next(f for f in frames if "measure" in f.columns)
    assert bench["measure"].str.contains("overhead per node").any()


def test_calibration_page_shows_each_nodes_labels_and_estimates(app: App) -> None:
    from tests.test_step_scoring import shadowed_runs

    at = page(app, "screens/calibration.py")
    assert at.info and "tierflow calibrate" in at.info[0].value  # nothing gathered yet
    shadowed_runs(app.store, 12, wrong_every=3)
    at = page(app, "screens/calibration.py")
    (nodes,) = [frame.value for frame in at.dataframe]
    row = nodes.set_index("node").loc["classify"]
    assert (row["kind"], row["labels"], row["from shadow"], row["from gold"]) == ("choose", 12, 12, 0)
    assert row["SLM wrong"] == pytest.approx(4 / 12) and 0 <= row["kept on SLM"] <= 1
    assert row["calibrated"] == "no" and pd.isna(row["threshold in use"])
    assert 0.5 <= float(at.metric[0].value.rstrip("%")) / 100 <= 1
    assert at.selectbox[0].value == ("tickets", "tiny", "big")


def test_model_output_and_task_text_are_never_rendered_as_html(app: App) -> None:
    app.__dict__["tiers"] = scripted(answer=INJECTION)
    run_id = run_task(app, f"Echo {INJECTION}")
    for path in ("screens/run_detail.py", "screens/runs.py", "screens/compare.py"):
        at = page(app, path, run=run_id)
        for markdown in at.markdown:
            assert "<script>" not in markdown.value and "<b>" not in markdown.value
    at = page(app, "screens/run_detail.py", run=run_id)
    assert INJECTION in [t.value for t in at.text]  # shown literally, as text


def test_graph_dot_colours_nodes_by_the_tier_that_served_them(app: App) -> None:
    trace = app.store.get_run(run_task(app, "What is 17 * 23 + 4?"))
    assert node_tiers(trace) == {
        "plan": "llm",
        "select_tool": "both",
        "extract_args": "llm",
        "act": "tool",
        "answer": "slm",
    }
    dot = run_graph_dot(trace)
    assert dot.startswith("digraph run {") and dot.rstrip().endswith("}")
    assert '"select_tool" [label="select_tool\\nboth ×1"' in dot  # escalated within its step
    assert '"summarize" [label="summarize", fillcolor="#cfd8dc"' in dot  # not visited
    assert '"act" -> "extract_args" [style=dashed]' in dot  # a tool refusing the SLM's arguments


def test_timeline_has_a_bar_per_step(app: App) -> None:
    trace = app.store.get_run(run_task(app, "What is 17 * 23 + 4?"))
    chart = timeline_chart(trace)
    assert chart is not None
    rows = chart.data.to_dict("records")  # type: ignore[union-attr]
    assert [row["step"].split()[-1] for row in rows] == [step.node for step in trace.steps]
    assert all(row["end_s"] >= row["start_s"] >= 0 for row in rows)
    # select_tool escalated, so the LLM also wrote the call
    assert [row["tier"] for row in rows] == ["llm", "both", "llm", "tool", "slm"]


def test_a_missing_model_is_explained_not_a_traceback(tmp_path: Path) -> None:
    broken = App(load_settings(workspace=tmp_path, slm_model=str(tmp_path / "missing.gguf")))
    at = page(broken)
    at.text_area[0].input("What is 2 + 2?")
    run_in_page(at)
    assert at.error and "missing.gguf" in at.error[0].value and "does not exist" in at.error[0].value


def test_a_graph_run_is_listed_and_its_detail_shows_refused_escalations(app: App) -> None:
    from tierflow.graphs.examples import triage

    from tests.kit_support import scripted_tiers

    app.__dict__["tiers"] = scripted_tiers(
        {"classify": [{"label": "bug"}], "extract_fields": [triage_fields()], "draft_reply": ["Thanks!"]}
    )
    result = app.run_graph(triage.graph, {"report": "The export crashes."}, local_only=True)
    assert result.ok, result.error
    at = page(app, "screens/runs.py")
    frame = at.dataframe[0].value
    assert list(frame[frame["run"] == result.run_id]["graph"]) == ["triage"]
    at = page(app, "screens/run_detail.py", run=result.run_id)
    assert not at.exception, at.exception
    titles = [e.label for e in at.expander]
    assert any("draft_reply · SLM" in t and "escalation refused (local_only)" in t for t in titles)
    assert '"draft_reply"' in run_graph_dot(app.store.get_run(result.run_id))  # drawn from its path


def triage_fields() -> dict[str, str]:
    return {"product": "export", "severity": "high", "summary": "The export crashes."}


def test_the_accuracy_against_llm_tokens_chart_has_a_point_per_suite_and_policy() -> None:
    import json

    from tierflow.evals.report import RESULTS_DIR
    from tierflow.ui.views import accuracy_vs_tokens

    results = [json.loads(p.read_text()) for p in sorted(RESULTS_DIR.glob("bfcl_*.json"))]
    spec = accuracy_vs_tokens(results).to_dict()
    points = next(iter(spec["datasets"].values()))
    expected = {(r["suite"], policy) for r in results for policy in r["policies"]}
    assert {(p["suite"], p["policy"]) for p in points} == expected
    llm = [p for p in points if p["policy"] == "llm"]
    slm = [p for p in points if p["policy"] == "slm"]
    assert all(p["LLM tokens per 100 items"] > 0 for p in llm)
    assert all(p["LLM tokens per 100 items"] == 0 for p in slm)


def test_evaluations_page_plots_the_learning_curve(app: App, tmp_path: Path) -> None:
    def point(slm: float, share: float, training: dict[str, float] | None) -> dict[str, object]:
        modes = {
            "slm": {"accuracy": slm, "by_kind": {"live_multiple": {"accuracy": slm - 0.1}}},
            "tiered": {"accuracy": 0.6, "slm_share": share, "llm_tokens_per_item": 300.0},
        }
        return {"lessons": 0, "modes": modes, **({"training": training} if training else {})}

    curve = {
        "suite": "learning_curve",
        "graph": "kit",
        "split": {"train_requests": 200, "test": 80, "lessons": 400},
        "points": {
            "0": point(0.35, 0.5, None),
            "100": point(0.40, 0.55, {"seconds": 600.0, "steps": 100, "peak_memory_mb": 3000.0}),
        },
    }
    verified = {**curve, "design": {"lessons": "verified", "learning_rate": 1e-4}}
    verified["points"] = {"0": point(0.35, 0.5, None), "200": point(0.45, 0.6, None)}
    (tmp_path / "learning_curve.json").write_text(json.dumps(curve), encoding="utf-8")
    (tmp_path / "learning_curve-verified-lr0.0001.json").write_text(json.dumps(verified), encoding="utf-8")
    at = page(app, "screens/evals.py", results=str(tmp_path))
    assert "The SLM learning from the LLM" in {h.value for h in at.subheader}
    first, second = [f.value for f in at.dataframe]  # one a design, the first design first
    assert list(first["decisions learned"]) == [0, 100] and list(second["decisions learned"]) == [0, 200]
    assert list(first["slm"]) == [0.35, 0.40] and first["training minutes"].iloc[1] == 10
    captions = [c.value for c in at.caption]
    assert any("400 LLM decisions" in c and "learning rate 0.0005" in c for c in captions)
    assert any("400 verified LLM decisions" in c and "learning rate 0.0001" in c for c in captions)
