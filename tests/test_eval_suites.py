"""The task suite's data and checks, the confidence curve, result files, and the CLI's
answers to bad evaluation input."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from tierflow.agents.confidence import ChoiceField, choice_field, rechoose
from tierflow.cli.render import ProgressDisplay
from tierflow.errors import TierflowError
from tierflow.evals.bench import orchestration_overhead
from tierflow.evals.curve import Paired, calibrate, confidence_report, curve, split
from tierflow.evals.documents import load_documents
from tierflow.evals.readme import END, START, readme_section, results_section
from tierflow.evals.report import environment, git_dirty, record_policy
from tierflow.evals.summaries import rouge_l, sentences
from tierflow.evals.tasks import load_tasks, passes
from tierflow.records import Progress
from tierflow.tools.builtins import default_registry
from tierflow.tools.schema import model_from_schema


# The task suite ---------------------------------------------------------------------------
def test_the_task_suite_is_large_varied_and_well_formed() -> None:
    suite = load_tasks()
    assert len(suite.tasks) >= 40
    categories = {task.category for task in suite.tasks}
    assert {"arithmetic", "units", "files", "dates", "no_tool"} <= categories
    assert suite.workspace.is_dir()


def test_file_task_answers_agree_with_the_fixture_workspace() -> None:
    """The expected values of the file tasks are facts about the fixture, checked here."""
    suite = load_tasks()
    tools = default_registry(suite.workspace)
    expected = {task.id: task.check for task in suite.tasks}
    counts = json.loads(tools.get("word_count").call({"path": "notes.txt"}))  # type: ignore[union-attr]
    assert expected["files-1"]["value"] == counts["words"]
    counts = json.loads(tools.get("word_count").call({"path": "report.md"}))  # type: ignore[union-attr]
    assert expected["files-2"]["value"] == counts["words"]
    rows = dict(
        line.split(",")[:2] for line in (suite.workspace / "inventory.csv").read_text().splitlines()[1:]
    )
    assert expected["files-6"]["value"] == int(rows["bolts"])
    assert expected["files-9"]["value"] == int(rows["bolts"]) + int(rows["nuts"])
    readings = (suite.workspace / "data" / "readings.txt").read_text().split()
    assert expected["files-10"]["value"] == pytest.approx(sum(map(float, readings)))
    assert suite.clock.strftime("%A") == "Saturday" and "Saturday" in expected["date-1"]["values"]


@pytest.mark.parametrize(
    ("check", "answer", "ok"),
    [
        ({"type": "number", "value": 20736, "rel_tol": 0.01}, "That makes 20,736 cans.", True),
        ({"type": "number", "value": 8.04672, "rel_tol": 0.01}, "5 miles is about 8.05 km", True),
        ({"type": "number", "value": 88, "rel_tol": 0}, "It has 87 words.", False),
        ({"type": "number", "value": -3, "rel_tol": 0}, "The result is -3.", True),
        ({"type": "number", "value": 42, "rel_tol": 0}, "no number here", False),
        ({"type": "contains_any", "values": ["Au"]}, "It is Au.", True),
        ({"type": "contains_any", "values": ["Au"]}, "because of gold", False),
        ({"type": "contains_all", "values": ["a.txt", "b.txt"]}, "Files: a.txt, b.txt", True),
        ({"type": "contains_all", "values": ["a.txt", "b.txt"]}, "Files: a.txt", False),
    ],
)
def test_answer_checks(check: dict[str, object], answer: str, ok: bool) -> None:
    assert passes(check, answer) is ok


def test_a_broken_task_file_says_what_is_wrong(tmp_path: Path) -> None:
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps({"clock": "2026-01-01T00:00:00+00:00", "tasks": [{"id": "a"}]}))
    with pytest.raises(Exception, match="cannot read the task suite"):
        load_tasks(path)
    bad_check = {"id": "a", "category": "x", "task": "t", "check": {"type": "regex"}}
    path.write_text(json.dumps({"clock": "2026-01-01T00:00:00+00:00", "tasks": [bad_check]}))
    with pytest.raises(Exception, match="check must be an object with type"):
        load_tasks(path)


# The confidence curve ---------------------------------------------------------------------
def paired(n: int) -> list[Paired]:
    """The SLM is right exactly when it is confident (>= 0.5); the LLM is always right."""
    items = []
    for i in range(n):
        confidence = (i % 10) / 10
        items.append(Paired(f"c{i}", "s", confidence, slm_correct=confidence >= 0.5, llm_correct=True))
    return items


def test_curve_endpoints_and_random_baseline() -> None:
    points = {p["threshold"]: p for p in curve(paired(100))}
    assert points[0.0]["slm_share"] == 1.0 and points[0.0]["accuracy"] == 0.5
    assert points[1.0]["slm_share"] == 0.0 and points[1.0]["accuracy"] == 1.0
    middle = points[0.5]
    assert middle["slm_share"] == 0.5 and middle["accuracy"] == 1.0
    assert middle["random_routing_accuracy"] == pytest.approx(0.5 * 0.5 + 0.5 * 1.0)


def test_calibration_picks_the_cheapest_threshold_near_llm_accuracy() -> None:
    assert 0.4 < calibrate(paired(200)) <= 0.5  # keeps exactly the confident half
    hopeless = [Paired(f"h{i}", "s", 0.9, slm_correct=False, llm_correct=True) for i in range(10)]
    assert calibrate(hopeless) == 0.95  # everything must go to the LLM


def test_split_is_stable_and_disjoint() -> None:
    items = paired(100)
    first, second = split(items)
    assert split(items) == (first, second)
    assert {p.id for p in first}.isdisjoint({p.id for p in second}) and len(first) + len(second) == 100
    assert 25 < len(first) < 75


def test_the_confidence_report_pairs_result_files_and_names_its_sources(tmp_path: Path) -> None:
    path = tmp_path / "bfcl_mine.json"
    for label, correct in (("slm", lambda c: c >= 0.5), ("llm", lambda c: True)):
        items = [
            {"id": f"c{i}", "select_confidence": (i % 10) / 10, "correct": correct((i % 10) / 10)}
            for i in range(60)
        ]
        entry = {"items": items, "environment": environment(models={"slm": "tiny", "llm": "big"})}
        record_policy(path, "bfcl:mine", "tool_calls", label, entry, lambda data: "")
    report = confidence_report([path])
    assert report["items"]["calibration"] + report["items"]["test"] == 60
    assert report["test"]["all_llm"]["accuracy"] == 1.0 and report["test"]["all_slm"]["slm_share"] == 1.0
    (source,) = report["sources"]
    assert source["file"] == "bfcl_mine.json" and source["suite"] == "bfcl:mine"
    assert source["slm"]["models"] == {"slm": "tiny", "llm": "big"} and "git_commit" in source["llm"]
    record_policy(tmp_path / "bfcl_half.json", "bfcl:half", "tool_calls", "slm", entry, lambda data: "")
    with pytest.raises(TierflowError, match="lacks the slm or llm policy"):
        confidence_report([tmp_path / "bfcl_half.json"])


# Confidence plumbing ----------------------------------------------------------------------
def test_choice_fields_and_rechoosing() -> None:
    schema = {"type": "object", "properties": {"tool": {"type": "string", "enum": ["a", "b", "none"]}}}
    assert choice_field(schema) == ChoiceField("tool", ("a", "b", "none"))
    assert choice_field({"type": "object", "properties": {"x": {"type": "string"}}}) is None
    assert choice_field(None) is None
    field = ChoiceField("tool", ("a", "b", "none"))
    assert rechoose('{"tool": "a"}', field, {"a": 0.2, "b": 0.7, "none": 0.1}) == ('{"tool": "b"}', "a")
    assert rechoose('{"tool": "b"}', field, {"a": 0.2, "b": 0.7, "none": 0.1}) == ('{"tool": "b"}', "b")


def test_models_from_json_schema_keep_odd_property_names() -> None:
    model = model_from_schema(
        "t",
        {
            "type": "object",
            "properties": {
                "_class": {"type": "string"},
                "from": {"type": "integer"},
                "Content-Type": {"type": "string", "enum": ["json", "xml"]},
                "box": {"type": "object", "properties": {"w": {"type": "number"}}, "required": ["w"]},
            },
            "required": ["_class"],
        },
    )
    value = model.model_validate({"_class": "x", "from": 3, "Content-Type": "xml", "box": {"w": 2}})
    assert value.model_dump(by_alias=True, exclude_unset=True) == {
        "_class": "x",
        "from": 3,
        "Content-Type": "xml",
        "box": {"w": 2.0},
    }
    for bad in ({"from": 3}, {"_class": "x", "Content-Type": "csv"}, {"_class": "x", "box": {}}):
        with pytest.raises(ValueError):
            model.model_validate(bad)


# Result files -----------------------------------------------------------------------------
def test_results_record_their_origin_and_keep_other_policies(tmp_path: Path) -> None:
    env = environment({"slm_model": "m"}, {"slm": "m"})
    assert env["machine"]["cores"] and env["git_commit"] and env["models"] == {"slm": "m"}
    path = tmp_path / "suite.json"

    def markdown(data: dict[str, object]) -> str:
        return "policies: " + ", ".join(sorted(data["policies"]))  # type: ignore[arg-type]

    record_policy(path, "suite", "tool_calls", "slm", {"metrics": {"accuracy": 0.5}}, markdown)
    data = record_policy(path, "suite", "tool_calls", "llm", {"metrics": {"accuracy": 0.9}}, markdown)
    assert set(data["policies"]) == {"slm", "llm"}
    assert json.loads(path.read_text())["policies"]["slm"]["metrics"]["accuracy"] == 0.5
    assert path.with_suffix(".md").read_text() == "policies: llm, slm"


def test_a_result_is_dirty_only_when_code_changed_not_results(tmp_path: Path) -> None:
    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    assert git_dirty(tmp_path) is None  # not a checkout
    git("init", "-q")
    for name in ("evals/results/tools.json", "README.md", "agents/slm.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("first\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    assert git_dirty(tmp_path) is False
    (tmp_path / "evals/results/tools.json").write_text("second\n")
    (tmp_path / "README.md").write_text("second\n")
    (tmp_path / "scratch.txt").write_text("untracked\n")
    assert git_dirty(tmp_path / "evals") is False  # results written by an earlier suite
    (tmp_path / "agents/slm.py").write_text("second\n")
    assert git_dirty(tmp_path / "evals") is True


# The CLI ----------------------------------------------------------------------------------
def tierflow(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tierflow", *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_eval_cli_answers_bad_input_without_loading_models(tmp_path: Path) -> None:
    cases = tmp_path / "mine.jsonl"
    cases.write_text(
        '{"id": "a", "question": [[{"role": "user", "content": "hi"}]], "function": [], '
        '"category": "irrelevance"}\n{oops\n'
    )
    done = tierflow("eval", "tools", "--cases", str(cases), "--policy", "slm", "--out", str(tmp_path))
    assert done.returncode == 1
    assert f"{cases}, line 2: not valid JSON" in done.stderr and "Traceback" not in done.stderr
    done = tierflow("eval", "tools", "--suite", "bfcl:nope", "--out", str(tmp_path))
    assert done.returncode == 1 and "unknown or multi-turn BFCL category 'nope'" in done.stderr
    done = tierflow("eval", "tasks", "--only", "poetry", "--out", str(tmp_path))
    assert done.returncode == 1 and "no tasks of category 'poetry'" in done.stderr
    done = tierflow("eval", "confidence", str(tmp_path / "none.json"), "--out", str(tmp_path))
    assert done.returncode == 1 and "lacks the slm or llm policy" in done.stderr
    done = tierflow("eval", "kit", "--mode", "tiered-guess", "--out", str(tmp_path))
    assert done.returncode == 2 and "unknown mode 'tiered-guess'" in done.stderr
    done = tierflow("eval", "kit", "--suite", "poems", "--out", str(tmp_path))
    assert done.returncode == 2 and "unknown suite 'poems'" in done.stderr
    done = tierflow("eval", "kit", "--draw", "1", "--out", str(tmp_path))
    assert done.returncode == 2 and "--draw is for --suite bfcl" in done.stderr
    done = tierflow("eval", "tasks", "--tasks", str(tmp_path / "mine.json"), "--out", str(tmp_path))
    assert done.returncode == 2 and "cannot read the task suite" in done.stderr
    assert not list(tmp_path.glob("*.md"))  # nothing half-written


def test_progress_prints_a_line_per_item_when_not_on_a_terminal() -> None:
    """In a log file rich draws no live bars, so progress must come as plain lines."""
    log = io.StringIO()
    with ProgressDisplay(Console(file=log, force_terminal=False)) as progress:
        progress(Progress("tiered", note="starting"))
        for done, outcome in enumerate(("correct", "wrong", "correct"), start=1):
            progress(Progress("tiered", done, 3, outcome, f"item-{done}"))
        progress(Progress("downloading", 10, 20, unit="bytes"))  # no outcome: no line
    lines = log.getvalue().splitlines()
    assert lines[0] == "starting"
    assert [line.split(" · ")[:-1] for line in lines[1:]] == [
        ["tiered 1/3", "correct item-1", "correct 1"],
        ["tiered 2/3", "wrong item-2", "correct 1", "wrong 1"],
        ["tiered 3/3", "correct item-3", "correct 2", "wrong 1"],
    ]


def test_progress_bars_on_a_terminal_show_amounts_counts_and_failures() -> None:
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=120)
    with ProgressDisplay(console) as progress:
        progress(Progress("assembling model", 2_000_000, 4_000_000, unit="bytes"))
        progress(Progress("assembling model", 4_000_000, 4_000_000, unit="bytes"))  # complete: bars stop
        progress(Progress("summarizing", 1, 2, "succeeded", "a.txt"))
        progress(Progress("summarizing", 2, 2, "failed", "b.pdf", "not a PDF"))
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.getvalue())  # without the colours
    assert "4.0 MB/4.0 MB" in text
    assert "failed b.pdf: not a PDF" in text and "succeeded 1 · failed 1" in text
    assert "2/2" in text


# Summaries, benchmarks and the README ------------------------------------------------------
def test_rouge_l_and_sentence_splitting() -> None:
    assert rouge_l("the cat sat on the mat", "the cat sat on the mat") == pytest.approx(1.0)
    assert rouge_l("the cat sat", "a dog ran") == 0.0
    # LCS "the cat the mat" = 4 words of 6 and of 5: F1 = 2 * (4/6) * (4/5) / (4/6 + 4/5)
    assert rouge_l("the cat sat on the mat", "the cat and the mat") == pytest.approx(
        2 * (4 / 6) * (4 / 5) / (4 / 6 + 4 / 5)
    )
    assert sentences("Sockets are old. They connect hosts over a network! Ok. Use them well.") == [
        "Sockets are old.",
        "They connect hosts over a network!",
        "Use them well.",
    ]


def test_the_documents_are_long_public_texts_with_their_sources() -> None:
    documents = load_documents()
    assert len(documents) >= 10
    assert all(len(d.text) > 4000 and d.title for d in documents)
    assert sum(d.abstract is not None for d in documents) >= 5
    assert all("Abstract" not in d.text[:200] for d in documents)  # the reference is not in the input


def test_the_orchestration_benchmark_runs_the_real_graph() -> None:
    result = orchestration_overhead(runs=5, warmup=1)
    assert result["tierflow_ms_per_run"] > 0 and result["bare_langgraph_ms_per_run"] > 0
    assert result["ratio"] == pytest.approx(
        result["tierflow_ms_per_run"] / result["bare_langgraph_ms_per_run"]
    )


def test_readme_results_are_generated_from_the_result_files() -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    block = readme.split(START, 1)[1].split(END, 1)[0]
    assert block.strip() == readme_section().strip(), "run `make results-table` after updating evals/results"


def test_the_large_jobs_figures_reach_the_readme_once_it_has_run(tmp_path: Path) -> None:
    assert "A large job" not in readme_section(tmp_path)
    run = {
        "documents": 1000,
        "succeeded": 1000,
        "seconds": 18000.0,
        "documents_per_minute": 3.33,
        "memory": {"peak_mib": 2500.0, "mib_per_100_documents": 0.4},
        "database_mib": 40.0,
        "killed_after": 50,
        "resume_seconds_to_next_document": 21.0,
        "evaluation_resumed": 2,
    }
    data = {"suite": "large_job", "documents": 1000, "runs": {"local, 1 worker": run}}
    (tmp_path / "large_job.json").write_text(json.dumps(data), encoding="utf-8")
    section = readme_section(tmp_path)
    assert "### A large job (1,000 documents" in section and "evals/results/large_job.md" in section
    assert (
        "| local, 1 worker | 1,000 of 1,000 | 300 min | 3.33 | 2,500 MiB | +0 MiB | 40.0 MiB | 21 s |"
        in section
    )


def test_every_designs_learning_curve_reaches_the_results_summary(tmp_path: Path) -> None:
    """The first design's curve (``learning_curve.json``) and each later design's file, the
    first one first, each with what its adapters learned from."""

    def curve(slm: float, design: dict[str, object] | None) -> dict[str, object]:
        modes = {
            "slm": {"accuracy": slm, "by_kind": {"live_multiple": {"accuracy": slm}}},
            "tiered": {"accuracy": 0.5, "slm_share": 0.7, "llm_tokens_per_item": 160.0},
        }
        split = {"lessons": 400, "train_requests": 329, "test": 80}
        return {
            "graph": "bfcl",
            "split": split,
            "points": {"0": {"modes": modes}},
            **({"design": design} if design else {}),
        }

    verified = {"lessons": "verified", "learning_rate": 1e-4}
    (tmp_path / "learning_curve-verified-lr0.0001.json").write_text(json.dumps(curve(0.412, verified)))
    (tmp_path / "learning_curve.json").write_text(json.dumps(curve(0.375, None)))
    section = results_section(tmp_path)
    first, second = section.index("| 37.5% |"), section.index("| 41.2% |")
    assert "### The SLM learns from the LLM" in section and first < second
    assert "400 LLM decisions on 329 train requests, learning rate 0.0005" in section
    verified_text = "400 verified LLM decisions (BFCL's checker marks them right) on 329 train requests"
    assert f"{verified_text}, learning rate 0.0001" in section


def test_the_tiered_headline_is_computed_from_both_policies(tmp_path: Path) -> None:
    def metrics(success: float, share: float, tokens: float, wall_ms: float) -> dict[str, object]:
        return {
            "metrics": {
                "tasks": 10,
                "success_rate": success,
                "slm_share": share,
                "llm_tokens_per_task": tokens,
                "wall_ms_mean": wall_ms,
            }
        }

    path = tmp_path / "tasks.json"
    record_policy(path, "tasks", "tasks", "tiered", metrics(0.6, 0.75, 300, 9000), lambda data: "")
    assert "of the all-LLM success rate" not in results_section(tmp_path)  # no llm run to compare
    record_policy(path, "tasks", "tasks", "llm", metrics(0.8, 0.0, 1200, 12000), lambda data: "")
    assert (
        "reaches 75% of the all-LLM success rate with 75% of model calls served locally, "
        "25% of the LLM tokens and 75% of the time per task"
    ) in results_section(tmp_path)


def test_key_facts_cut_off_by_the_token_cap_keep_the_complete_ones() -> None:
    from tierflow.evals.summaries import _complete_strings

    cut = '{"facts": ["Sockets connect hosts.", "A \\"server\\" socket listens.", "Non-blocking so'
    assert _complete_strings(cut) == ["Sockets connect hosts.", 'A "server" socket listens.']


def test_refresh_metrics_recounts_the_recorded_calls(tmp_path: Path) -> None:
    """An older results file's SLM share is recomputed from its items' model calls: an
    escalated SLM call counts as one SLM call, and nothing is run again."""
    from tierflow.evals.tool_suite import refresh_metrics

    def call(tier: str, escalated: bool = False) -> dict[str, Any]:
        return {
            "node": "select_tool",
            "tier": tier,
            "prompt_tokens": 10,
            "completion_tokens": 2,
            "latency_ms": 5.0,
            "escalated": escalated,
            "reason": "escalation_score: high" if escalated else None,
            "confidence": None,
        }

    def item(number: int, calls: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": f"multiple_{number}",
            "category": "multiple",
            "correct": True,
            "valid": True,
            "output": [],
            "error_type": None,
            "detail": "",
            "latency_ms": 100.0,
            "run_id": f"r{number}",
            "calls": calls,
        }

    items = [item(1, [call("slm"), call("slm")]), item(2, [call("slm", escalated=True), call("llm")])]
    environment = {
        "models": {"slm": "s", "llm": "l"},
        "git_commit": "abc",
        "git_dirty": False,
        "machine": {"cores": 2},
        "created_at": "2026-12-03",
    }
    entry = {
        "policy": {"default": "tiered"},
        "metrics": {"slm_share": 0.5},
        "items": items,
        "environment": environment,
    }
    path = tmp_path / "bfcl_multiple.json"
    path.write_text(json.dumps({"suite": "bfcl_multiple", "kind": "tools", "policies": {"tiered": entry}}))
    metrics = refresh_metrics(path)["policies"]["tiered"]["metrics"]
    assert metrics["slm_share"] == pytest.approx(3 / 4) and metrics["kept_local"] == 0.5
    assert json.loads(path.read_text())["policies"]["tiered"]["metrics"] == metrics
    assert "| tiered | 2 |" in path.with_suffix(".md").read_text()


def test_the_benchmark_times_each_kind_of_step_signal() -> None:
    from tierflow.evals.bench import signal_costs
    from tierflow.results import bench_rows

    costs = signal_costs(repeats=5)
    assert set(costs) == {"choose_ms_p50", "extract_ms_p50", "text_ms_p50"}
    assert all(0 < value < 1000 for value in costs.values())
    committed = json.loads((Path(__file__).parents[1] / "evals" / "results" / "bench.json").read_text())
    rows = bench_rows({**committed, "signal_costs": costs})
    assert any(row[0].startswith("signals and P(wrong)") for row in rows)


# The kit-level evaluation ---------------------------------------------------------------
def test_the_triage_reports_are_labelled_varied_and_split_once() -> None:
    from tierflow.evals.kit import load_reports, split_of
    from tierflow.graphs.examples.triage import CATEGORIES

    reports = load_reports()
    assert len(reports) >= 60 and len({r.id for r in reports}) == len(reports)
    assert {r.category for r in reports} == set(CATEGORIES)
    assert {r.difficulty for r in reports} == {"easy", "hard", "misleading"}
    assert {r.severity for r in reports} <= {"low", "medium", "high", "critical"}
    splits = [split_of(r.id) for r in reports]
    assert 0.35 < splits.count("test") / len(reports) < 0.55 and splits == [split_of(r.id) for r in reports]


def test_the_kit_evaluation_runs_each_mode_through_the_app_and_resumes(tmp_path: Path) -> None:
    """Scripted tiers: the SLM always says bug/low, the LLM knows every report's labels."""
    from tierflow.agents.scripted import ScriptedModel
    from tierflow.agents.tiers import Tiers
    from tierflow.app import App
    from tierflow.evals.kit import gap_closed, kit_eval, kit_markdown, load_reports
    from tierflow.settings import Settings

    gold = {r.text: r for r in load_reports()}

    def oracle(messages: Any) -> str:
        text = "\n".join(m["content"] for m in messages)
        report = next(r for t, r in gold.items() if t in text)
        if "customer_email" not in text:  # the choice, not the fields
            return json.dumps({"label": report.category})
        return json.dumps({"product": "app", "severity": report.severity, "summary": "It broke."})

    def small(messages: Any) -> str:
        if "customer_email" not in "\n".join(m["content"] for m in messages):
            return json.dumps({"label": "bug"})
        return json.dumps({"product": "app", "severity": "low", "summary": "It broke."})

    def app() -> App:
        tiers = Tiers(
            ScriptedModel([small] * 500, name="tiny"), ScriptedModel([oracle] * 500, tier="llm", name="big")
        )
        return App(Settings(data_dir=tmp_path / "data"), tiers=tiers)

    modes = ["slm", "llm", "tiered-validation", "tiered-calibrated", "tiered-share"]
    with app() as first:
        data = kit_eval(first, tmp_path / "work", modes=modes, limit=4, slm_share=0.75)
    assert data["modes"]["llm"]["accuracy"] == 1.0 and data["modes"]["slm"]["slm_share"] == 1.0
    assert data["modes"]["tiered-validation"]["accuracy"] == data["modes"]["slm"]["accuracy"]
    fitted = data["calibration"]["modes"]
    assert set(fitted["tiered-calibrated"]["nodes"]) == {"classify", "extract_fields"}
    assert fitted["tiered-share"]["estimated_slm_share"] >= 0.75  # reached on the calib items
    markdown = kit_markdown(data)
    assert len(data["items"]) == 4 * len(modes) and "| tiered-calibrated |" in markdown
    assert "- tiered-share (SLM share 75%): classify" in markdown
    if data["modes"]["slm"]["accuracy"] < 1.0:
        assert gap_closed(data, "tiered-validation") == 0.0
        # Each mode starts from the memory calibration left: the tiered modes' SLM outputs
        # are never compared with the llm mode's verified output of the same report.
        tiered = [
            call
            for run in first.store.list_runs(limit=1000)
            if run.task.startswith("kit:tiered")
            for step in first.store.get_run(run.id).steps
            for call in step.model_calls
            if call.tier == "slm" and call.features
        ]
        assert any(call.features["has_past"] == 1.0 for call in tiered)  # the memory is on
        assert all(call.features["past_similarity"] < 0.99 for call in tiered)
    with app() as again:  # a finished evaluation runs nothing again
        runs = len(again.store.list_runs(limit=1000))
        assert kit_eval(again, tmp_path / "work", modes=modes, limit=4)["modes"] == data["modes"]
        assert len(again.store.list_runs(limit=1000)) == runs


def test_bfcl_requests_run_as_kit_steps_split_by_group_and_scored_by_bfcls_checker(tmp_path: Path) -> None:
    """Scripted tiers: the SLM picks the right function (or none) and gets its arguments'
    values wrong; the LLM knows each item's answer. Calibration gathers labels of both steps."""
    from tierflow.agents.scripted import ScriptedModel
    from tierflow.agents.tiers import Tiers
    from tierflow.app import App
    from tierflow.evals.bfcl import is_reserved
    from tierflow.evals.kit import BfclSuite, kit_eval
    from tierflow.evals.routing_data import source_group
    from tierflow.settings import Settings

    suite = BfclSuite({"calib": {"live_simple": 3, "live_irrelevance": 2}, "test": {"live_simple": 3}})
    calib, test = suite.split()
    assert len(calib) == 5 and len(test) == 3
    assert not {source_group(i.id) for i in calib} & {source_group(i.id) for i in test}
    assert not any(is_reserved(i.id) for i in calib + test)
    fresh = BfclSuite(suite.sample, draw=1)
    assert [i.id for i in fresh.items("calib")] == [i.id for i in calib]  # the same calibration
    assert len(fresh.items("test")) == 3 and not {i.id for i in fresh.items("test")} & {i.id for i in test}
    by_request = {i.input["request"].strip()[-200:]: i for i in calib + test}

    def item_of(messages: Any) -> Any:
        text = "\n".join(m["content"] for m in messages)
        return next(i for r, i in by_request.items() if r in text), text

    def answer(item: Any, text: str, right: bool) -> str:
        if "Write the arguments of the function" not in text:
            return json.dumps({"label": item.gold["tool"]})
        _, arguments = next(iter(item.extra.ground_truth[0].items()))
        values = {k: v[0] for k, v in arguments.items() if v and v[0] != ""}
        if not right:  # valid, but every string and number off
            values = {
                k: v + "?" if isinstance(v, str) else v + 1 if isinstance(v, int | float) else v
                for k, v in values.items()
            }
        return json.dumps(values)

    def app() -> App:
        tiers = Tiers(
            ScriptedModel([lambda m: answer(*item_of(m), right=False)] * 200, name="tiny"),
            ScriptedModel([lambda m: answer(*item_of(m), right=True)] * 200, tier="llm", name="big"),
        )
        return App(Settings(data_dir=tmp_path / "data"), tiers=tiers)

    with app() as evaluation:
        data = kit_eval(evaluation, tmp_path / "work", suite=suite, modes=["slm", "llm", "tiered-calibrated"])
        labels = evaluation.store.labels(graph="bfcl-kit")
    assert data["modes"]["llm"]["accuracy"] == 1.0 and data["modes"]["slm"]["accuracy"] < 1.0
    assert {label.node for label in labels} == {"choose_tool", "write_args"}
    assert "gold" in {label.source for label in labels if label.node == "choose_tool"}
    slm = [line for line in data["items"] if line["mode"] == "slm"]
    ran = [line for line in slm if line["status"] == "succeeded"]  # an invalid enum value fails the run
    assert data["modes"]["slm"]["failed_runs"] == len(slm) - len(ran)
    assert all(line["checks"] == {"call": False, "tool": True} and line["slm_calls"] == 2 for line in ran)
    assert all(line["answered"]["error"].startswith("value_error") for line in ran)


def test_the_held_out_tasks_ask_about_knowledge_units_and_the_users_documents() -> None:
    from tierflow.evals.tasks import HELDOUT_FILE

    suite = load_tasks()
    first, second = load_tasks(HELDOUT_FILE), load_tasks(HELDOUT_FILE.with_name("tasks_heldout2.json"))
    for held_out in (first, second):
        assert {t.category for t in held_out.tasks} == {"no_tool", "units", "documents"}
        assert not {t.id for t in held_out.tasks} & {t.id for t in suite.tasks}
        assert not {t.task for t in held_out.tasks} & {t.task for t in suite.tasks}
        assert held_out.documents is not None and len(list(held_out.documents.glob("*.md"))) >= 2
    assert not {t.task for t in first.tasks} & {t.task for t in second.tasks}
    assert first.documents != second.documents
    assert suite.documents is None


def test_the_learning_curve_collects_llm_decisions_and_runs_each_point(tmp_path: Path) -> None:
    """Scripted tiers, no training: the LLM's decisions on train requests stop at what the
    largest point asks for, and point 0 (the base SLM) runs every test request under slm and
    tiered through the app, with the shipped priors taken as fitted for the pair."""
    from tierflow.agents.scripted import ScriptedModel
    from tierflow.agents.tiers import Tiers
    from tierflow.app import App
    from tierflow.evals.kit import BfclSuite
    from tierflow.evals.learning_curve import (
        CURVE_SAMPLE,
        Design,
        _collect,
        _lessons,
        curve_markdown,
        learning_curve,
    )
    from tierflow.evals.routing_data import source_group
    from tierflow.settings import Settings

    suite = BfclSuite(CURVE_SAMPLE)
    train, test = suite.items("train"), suite.items("test")
    assert not {source_group(i.id) for i in train} & {source_group(i.id) for i in test}
    by_request = {i.input["request"].strip()[-200:]: i for i in train + test}

    def reply(messages: Any) -> str:
        text = "\n".join(m["content"] for m in messages)
        item = next(i for r, i in by_request.items() if r in text)
        if "Write the arguments of the function" not in text:
            return json.dumps({"label": item.gold["tool"]})
        _, arguments = next(iter(item.extra.ground_truth[0].items()))
        return json.dumps({k: v[0] for k, v in arguments.items() if v and v[0] != ""})

    def tiers() -> Tiers:
        return Tiers(
            ScriptedModel([reply] * 400, name="tiny"), ScriptedModel([reply] * 400, tier="llm", name="big")
        )

    conf = Settings(data_dir=tmp_path / "data", memory=False, learn=False)
    with App(conf, tiers=tiers()) as app:
        _collect(app, suite, train, 5, lambda _: None, tmp_path / "checked.jsonl", Design())
        assert 5 <= len(_lessons(app.store)) <= 6  # a request gives one decision or two
    data = learning_curve(conf, tmp_path / "work", points=(0,), limit=3, tiers=tiers())
    point = data["points"]["0"]
    assert set(point["modes"]) == {"slm", "tiered"} and point["modes"]["slm"]["items"] == 3
    assert point["modes"]["slm"]["slm_share"] == 1.0 and "training" not in point
    assert "| 0 |" in curve_markdown(data)


def test_a_verified_curve_learns_only_the_decisions_bfcls_checker_marks_right(tmp_path: Path) -> None:
    """Under the verified design, the LLM's decisions on a request it got wrong (a wrong
    tool: both its choice and its arguments fail their checks) are not lessons, and the
    collection goes on until the point has enough verified ones."""
    from tierflow.agents.scripted import ScriptedModel
    from tierflow.agents.tiers import Tiers
    from tierflow.app import App
    from tierflow.evals.kit import NONE, BfclSuite
    from tierflow.evals.learning_curve import CURVE_SAMPLE, VERIFIED, Design, _collect, _lessons, _taught
    from tierflow.settings import Settings

    suite = BfclSuite(CURVE_SAMPLE)
    train = [i for i in suite.items("train") if i.gold["tool"] != NONE][:12]
    wrong = {i.id for i in train[::3]}  # every third request gets a tool that is not the gold one
    by_request = {i.input["request"].strip()[-200:]: i for i in train}

    def reply(messages: Any) -> str:
        text = "\n".join(m["content"] for m in messages)
        item = next(i for r, i in by_request.items() if r in text)
        if "Write the arguments of the function" not in text:
            return json.dumps({"label": NONE if item.id in wrong else item.gold["tool"]})
        _, arguments = next(iter(item.extra.ground_truth[0].items()))
        return json.dumps({k: v[0] for k, v in arguments.items() if v and v[0] != ""})

    model = ScriptedModel([reply] * 100, tier="llm", name="big")
    conf = Settings(data_dir=tmp_path / "data", memory=False, learn=False)
    verified, checked = Design("verified", 1e-4), tmp_path / VERIFIED
    with App(conf, tiers=Tiers(ScriptedModel([], name="tiny"), model)) as app:
        reports: list[Progress] = []
        _collect(app, suite, train, 10, reports.append, checked, verified)
        every, taught = _lessons(app.store), _taught(app.store, checked, verified)
        assert _taught(app.store, checked, Design()) == every
    runs = [json.loads(line) for line in checked.read_text().splitlines()]
    # a line per run in a log: each report has its outcome, a wrong run's "left out"
    assert [r.item for r in reports] == [r["id"] for r in runs]
    assert {r.item for r in reports if r.outcome == "left out"} == {r["id"] for r in runs} & wrong
    assert {r["id"] for r in runs} & wrong  # some collected runs were wrong ...
    assert len(taught) >= 10 and len(every) > len(taught)  # ... and their decisions left out
    right_runs = {r["run_id"] for r in runs if r["id"] not in wrong}
    assert {lesson.run_id for lesson in taught} <= right_runs
    # the lessons, saved, are what a later curve learns from without collecting again
    from tierflow.evals.learning_curve import learning_curve
    from tierflow.learning.learn import read_lessons, write_lessons

    write_lessons(tmp_path / "taught.jsonl", taught)
    assert read_lessons(tmp_path / "taught.jsonl") == taught
    silent = Tiers(ScriptedModel([], name="tiny"), ScriptedModel([], tier="llm", name="big"))
    data = learning_curve(
        conf, tmp_path / "again", points=(0,), modes=(), tiers=silent, taught_from=tmp_path / "taught.jsonl"
    )
    assert data["split"]["lessons_from"] == str(tmp_path / "taught.jsonl")
    assert Design().tag == "" and Design("verified", 1e-4).tag == "-verified-lr0.0001"
    with pytest.raises(ValueError, match="all or verified"):
        Design("some")


def test_a_curve_point_whose_runs_are_done_needs_only_its_training_record(tmp_path: Path) -> None:
    """Results and training records copied to another machine go on without the adapter's
    file: a point with every test run done is not trained again; one with runs left is."""
    from tierflow.evals.learning_curve import Design, _adapter

    folder = tmp_path / "point-100"
    folder.mkdir()
    (folder / "training.json").write_text(json.dumps({"steps": 100}), encoding="utf-8")
    gguf, record = _adapter(tmp_path / "base.gguf", [], folder, 1.0, Design(), lambda _: None, needed=False)
    assert record == {"steps": 100} and gguf == folder / "adapter.gguf" and not gguf.exists()
    with pytest.raises(RuntimeError, match="training the adapter"):  # no base model: the training fails
        _adapter(tmp_path / "base.gguf", [], folder, 1.0, Design(), lambda _: None, needed=True)


def test_each_memory_question_set_holds_its_evidence_in_its_own_corpus() -> None:
    """The dev set (for trying changes to cited answers) is written on another corpus than
    the main set, the held-out set asks none of the main set's questions on its corpus, the
    calibration set none of the dev set's on theirs, and every answerable question's
    evidence is in the file it names."""
    from tierflow.evals.memory_qa import QUESTION_SETS, holds, load_questions
    from tierflow.tools.readers import read_document

    corpora = {name: s.corpus.resolve() for name, s in QUESTION_SETS.items()}
    assert corpora["dev"] != corpora["main"] == corpora["heldout"]
    asked = {name: {q["question"] for q in load_questions(s.questions)} for name, s in QUESTION_SETS.items()}
    assert not asked["heldout"] & asked["main"]  # held out: none of the main set's questions
    assert corpora["calibration"] == corpora["dev"] and not asked["calibration"] & asked["dev"]
    for name, question_set in QUESTION_SETS.items():
        questions = load_questions(question_set.questions)
        answerable = [q for q in questions if q["evidence"]]
        assert answerable and len(answerable) < len(questions), name  # some must be declined
        for question in answerable:
            text = read_document(question_set.corpus / str(question["file"])).text
            assert holds(text, str(question["evidence"])), (name, question["id"])


def test_an_unknown_memory_question_set_or_calibrating_on_the_measured_one_exits_2(tmp_path: Path) -> None:
    from tierflow.cli import app
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, ["eval", "memory", "--set", "nope", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "unknown question set 'nope'" in result.output
    calibrated_on_itself = ["eval", "memory", "--set", "dev", "--calibrate", "dev", "--out", str(tmp_path)]
    result = CliRunner().invoke(app, calibrated_on_itself)
    assert result.exit_code == 2 and "questions it is measured on" in result.output
    assert not list(tmp_path.iterdir())


def test_a_judges_reply_cut_off_while_it_repeats_its_verdicts_still_counts() -> None:
    """The 1.5B judge sometimes goes on writing verdicts until max_tokens: a reply cut off
    with a verdict for every fact counts (the first ones, in order); one cut off before it
    gave them all, or that is not JSON while complete, is an error."""
    from tierflow.agents.scripted import ScriptedModel
    from tierflow.errors import TierflowError
    from tierflow.evals.summaries import judge_coverage

    looping = '{"verdicts": [true, false, true, true, true, true, true, tr'
    judge = ScriptedModel([looping], tier="llm", name="judge", finish_reason="length")
    assert judge_coverage(judge, ["a", "b", "c"], "summary") == [True, False, True]
    short = ScriptedModel(['{"verdicts": [true, fal'], tier="llm", name="judge", finish_reason="length")
    with pytest.raises(TierflowError, match="not JSON"):
        judge_coverage(short, ["a", "b", "c"], "summary")
    broken = ScriptedModel(["true, false, true"], tier="llm", name="judge")
    with pytest.raises(TierflowError, match="not JSON"):
        judge_coverage(broken, ["a", "b", "c"], "summary")
    complete = ScriptedModel(['{"verdicts": [false]}'], tier="llm", name="judge")
    assert judge_coverage(complete, ["a", "b"], "summary") == [False, False]


def _two_part_document() -> str:
    """A document of two parts: a compressor's figures, then a garden's plants."""
    first = [
        "The Zephyr compressor reaches a ratio of 42 on plain text files with dictionary mode.",
        "Zephyr streams blocks through a sliding window of 64 kilobytes before encoding.",
        "Checksums use the Adler algorithm so corrupted archives are rejected early.",
        "The toolkit documentation describes the Zephyr project and its releases in detail.",
    ]
    second = [
        "The botanical garden grows saffron crocus bulbs under glass every autumn season.",
        "Gardeners water the orchid greenhouse with collected rainwater twice weekly.",
        "Visitors may photograph the carnivorous pitcher plants near the northern pond.",
        "The garden guide describes the botanical collection and its visitors in detail.",
    ]
    return "\n\n".join(first) + "\n\n" + "\n\n".join(second)


def test_key_sentences_are_read_per_part_and_a_summary_covers_them_by_their_telling_words() -> None:
    """Checked by code, no model: each part has key sentences, a summary stating one part's
    specifics covers that part's only, and one that names the topic alone covers none."""
    from tierflow.evals.key_sentences import coverage, key_sentences

    text, part = _two_part_document(), 400
    keys = key_sentences(text, part)
    assert {key.part for key in keys} == {0, 1}
    assert any("Zephyr compressor" in key.text for key in keys if key.part == 0)
    assert any("saffron" in key.text for key in keys if key.part == 1)
    first_only = coverage(
        text, "Zephyr compresses text at a ratio of 42 in a sliding 64 kilobyte window.", part
    )
    assert first_only["parts"] == 2 and first_only["parts_drawn_on"] == 0.5
    assert 0 < float(first_only["covered"] or 0) < 0.5
    both = coverage(
        text,
        "Zephyr compresses text at a ratio of 42 in a sliding 64 kilobyte window. The garden grows "
        "saffron crocus bulbs and waters its orchid greenhouse with rainwater.",
        part,
    )
    assert both["parts_drawn_on"] == 1.0 and float(both["covered"] or 0) > float(first_only["covered"] or 0)
    assert coverage(text, "This is about Zephyr and a botanical garden.", part)["covered"] == 0  # topic alone


def test_a_batch_benchmarks_summaries_are_read_again_by_code_keeping_the_judges_figures(
    tmp_path: Path,
) -> None:
    from tierflow.evals.batch_bench import ALL_LLM, TIERED, rescore_batch
    from tierflow.evals.batch_corpus import load_manifest

    path = tmp_path / "batch.json"
    with pytest.raises(TierflowError, match="no runs"):
        rescore_batch(path)
    name = load_manifest()[0]["file"]
    run = {"documents": 1, "seconds": 1.0, "documents_per_minute": 1.0, "slm_share": 1.0, "llm_tokens": 0}
    runs = [
        {**run, "label": label, "summaries": {name: summary}, "escalated_documents": 0}
        for label, summary in ((TIERED, "A licence."), (ALL_LLM, "A licence for software."))
    ]
    data = {
        "corpus": {"documents": 1, "characters": 1, "formats": ["txt"]},
        "runs": runs,
        "parallel_efficiency": {"local_2_workers": 0.5, "ray_2_workers": 0.5},
        "llm_tokens_vs_all_llm": 0.2,
        "quality": {"coverage_of_llm_facts": 0.91},
    }
    path.write_text(json.dumps(data), encoding="utf-8")
    by_code = rescore_batch(path)
    written = json.loads(path.read_text(encoding="utf-8"))
    assert written["quality"]["coverage_of_llm_facts"] == 0.91 and written["quality"]["by_code"] == by_code
    assert by_code["documents"] == 1 and by_code["per_document"][0]["document"] == name
    assert "Checked by code" in path.with_suffix(".md").read_text(encoding="utf-8")


def test_the_prompt_trial_reads_each_documents_joined_summaries_by_code() -> None:
    from tierflow.evals.summary_prompts import DOCUMENTS, _by_code

    text = (DOCUMENTS / "sorting.txt").read_text(encoding="utf-8")
    copied = [{"document": "sorting.txt", "text": text}]  # the document itself covers all of it
    assert _by_code(copied) == {"key_sentences_covered": 1.0, "parts_drawn_on": 1.0}
    vague = [{"document": "sorting.txt", "text": "This part explains sorting."}]
    assert _by_code(vague)["key_sentences_covered"] == 0.0
    from tierflow.evals.summary_prompts import SENTENCES, variants

    for name, messages in variants("a chunk of text").items():  # each shows the text once, asks a budget
        joined = "\n".join(m["content"] for m in messages)
        assert joined.count("a chunk of text") == 1 and f" {SENTENCES} sentences" in joined, name


def test_a_signals_auc_ranks_wrong_outputs_above_right_ones() -> None:
    from tierflow.evals.answer_signals import auc, signal_aucs

    assert auc([0.9, 0.8], [0.1, 0.2]) == 1.0 and auc([0.1], [0.9]) == 0.0 and auc([0.5], [0.5]) == 0.5
    assert auc([], [0.1]) is None
    rows = [
        ({"p": 0.9, "flat": 1.0}, False),
        ({"p": 0.2, "flat": 1.0}, True),
        ({"p": 0.4, "flat": 1.0}, True),
    ]
    assert signal_aucs(rows) == {"p": 1.0, "flat": 0.5}


def test_the_memory_results_text_names_the_held_out_ranking_only_where_it_was_measured() -> None:
    """A run of answers alone (``--no-retrieval``, as the held-out questions are run) says so,
    and does not describe a retrieval check of 0 questions."""
    from tierflow.evals.memory_qa import memory_markdown

    results = Path(__file__).parents[1] / "evals" / "results"
    answers_only = json.loads((results / "memory_heldout.json").read_text(encoding="utf-8"))
    text = memory_markdown(answers_only)
    assert "Answers only (`--no-retrieval`)" in text and "Held-out:" not in text
    with_ranking = json.loads((results / "memory.json").read_text(encoding="utf-8"))
    assert "Held-out: 40 answerable questions" in memory_markdown(with_ranking)
