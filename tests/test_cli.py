"""The `tierflow` command as a user runs it: a real process, real models, exit codes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tierflow.memory import TraceStore
from tierflow.settings import load_settings

TIERFLOW = [sys.executable, "-m", "tierflow"]


def tierflow(
    *args: str, env: dict[str, str] | None = None, timeout: int = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TIERFLOW, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
        check=False,
    )


def no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout


@pytest.mark.real_slm
@pytest.mark.real_llm
def test_run_uses_both_tiers_and_the_calculator(slm_path: Path) -> None:
    result = tierflow("run", "What is 17 * 23 + 4?", "--json")
    no_traceback(result)
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    assert output["status"] == "succeeded" and "395" in output["answer"]
    assert output["run_id"] and output["stats"]["slm_calls"] >= 1

    shown = tierflow("runs", "show", output["run_id"], "--json")
    assert shown.returncode == 0, shown.stderr
    trace = json.loads(shown.stdout)
    calls = [call for step in trace["steps"] for call in step["model_calls"]]
    tools = [call for step in trace["steps"] for call in step["tool_calls"]]
    assert any(c["node"] == "plan" and c["tier"] == "llm" for c in calls)
    assert any(c["tier"] == "slm" and c["node"] in ("select_tool", "extract_args") for c in calls)
    assert any(t["tool"] == "calculator" and t["result"] == "395" for t in tools)
    for call in calls:
        for key in (
            "node",
            "tier",
            "model",
            "prompt_tokens",
            "completion_tokens",
            "latency_ms",
            "escalated",
            "escalation_reason",
        ):
            assert key in call
    human = tierflow("runs", "show", output["run_id"][:6])
    assert "calculator" in human.stdout and "slm" in human.stdout and "llm" in human.stdout
    listed = json.loads(tierflow("runs", "list", "--json").stdout)
    assert listed[0]["run_id"] == output["run_id"]


def test_unreachable_llm_is_stored_as_failed(slm_path: Path) -> None:
    env = {
        "TIERFLOW_LLM_BASE_URL": "http://127.0.0.1:9/v1",
        "TIERFLOW_LLM_MODEL": "x",
        "TIERFLOW_LLM_MAX_RETRIES": "0",
    }
    result = tierflow("run", "Plan my week", "--json", env=env)
    no_traceback(result)
    assert result.returncode == 1
    output = json.loads(result.stdout)
    assert output["status"] == "failed" and "could not reach the LLM" in output["error"]
    stored = TraceStore.from_url(load_settings().resolved_database_url()).get_run(output["run_id"])
    assert stored.status == "failed" and "could not reach the LLM" in (stored.error or "")


@pytest.mark.parametrize(
    ("args", "env", "code", "message"),
    [
        (["run", "   "], {}, 2, "the task is empty"),
        (["runs", "show", "doesnotexist"], {}, 1, "no run matches"),
        (["run", "hi"], {"TIERFLOW_SLM_MODEL": "/nowhere/model.gguf"}, 1, "does not exist"),
        (
            ["run", "hi"],
            {"TIERFLOW_SLM_MODEL": "smollm2-135m", "TIERFLOW_MODELS_DIR": "/tmp/tf-empty"},
            1,
            "tierflow models pull smollm2-135m",
        ),
        (["run", "hi"], {"TIERFLOW_MAX_STEPS": "zero"}, 1, "max_steps"),
        (["run", "hi", "--tier", "plan=gpt"], {}, 2, "NODE=TIER"),  # a usage error (exit 1 before issue 25)
        (["models", "pull", "gpt-5"], {}, 1, "no catalog model"),
        (["runs", "list", "--status", "bogus"], {}, 2, "is not one of"),
        (["run", "hi", "--policy", "fastest"], {}, 2, "is not one of"),
        (["runs", "list", "--since", "yesterday"], {}, 2, "neither a span nor a date"),
        (["run", "-"], {}, 2, "the task is empty"),  # stdin is empty
    ],
)
def test_bad_input_gets_a_clear_error(args: list[str], env: dict[str, str], code: int, message: str) -> None:
    result = tierflow(*args, env=env)
    no_traceback(result)
    assert result.returncode == code
    assert message in result.stderr


def test_corrupt_model_file_is_explained(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.gguf"
    corrupt.write_bytes(b"GGUF" + os.urandom(256))
    result = tierflow("run", "hi", env={"TIERFLOW_SLM_MODEL": str(corrupt)})
    no_traceback(result)
    assert result.returncode == 1 and "could not load" in result.stderr


def test_version_and_runs_list_filters() -> None:
    store = TraceStore.from_url(load_settings().resolved_database_url())
    assert tierflow("--version").stdout.strip().startswith("tierflow 0.")
    old = store.start_run("an old task about invoices")
    store.finish_run(old, "succeeded", answer="done")
    new = store.start_run("a new task about parcels")
    store.finish_run(new, "failed", error="boom")
    listed = json.loads(tierflow("runs", "list", "--json", "--search", "PARCELS").stdout)
    assert [r["run_id"] for r in listed] == [new]
    listed = json.loads(tierflow("runs", "list", "--json", "--status", "succeeded", "--since", "1h").stdout)
    assert [r["run_id"] for r in listed] == [old]
    none = tierflow("runs", "list", "--since", "2030-01-01")
    assert none.returncode == 0 and "no runs match" in none.stderr


def test_config_masks_secrets() -> None:
    result = tierflow("config", "--json", env={"TIERFLOW_LLM_API_KEY": "sk-very-secret-value"})
    assert result.returncode == 0
    shown = json.loads(result.stdout)
    assert shown["llm_api_key"] == "**** (set)" and "sk-very-secret-value" not in result.stdout


def test_models_list_and_empty_runs_list() -> None:
    models = json.loads(tierflow("models", "list", "--json").stdout)
    assert {m["name"] for m in models} >= {"qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"}
    assert next(m for m in models if m["name"] == "qwen2.5-coder-0.5b")["pulled"] is True
    assert json.loads(tierflow("runs", "list", "--json").stdout) == []


def _write(tmp_path: Path, name: str, data: object) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return f"@{path}"


TRIAGE = "tierflow.graphs.examples.triage:graph"
REPORT = {"report": "The dashboard shows a blank page since this morning for our whole team."}


@pytest.mark.real_slm
@pytest.mark.real_llm
def test_run_a_graph_on_the_embedded_default(tmp_path: Path) -> None:
    result = tierflow("run", "--graph", TRIAGE, "--input", _write(tmp_path, "report.json", REPORT), "--json")
    no_traceback(result)
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    assert output["status"] == "succeeded" and output["state"]["reply"]
    shown = json.loads(tierflow("runs", "show", output["run_id"], "--json").stdout)
    calls = {(c["node"], c["tier"]) for s in shown["steps"] for c in s["model_calls"]}
    assert {("classify", "slm"), ("extract_fields", "slm"), ("draft_reply", "llm")} <= calls
    assert shown["graph"] == TRIAGE


DEAD_LLM = {"TIERFLOW_LLM_BASE_URL": "http://127.0.0.1:9/v1", "TIERFLOW_LLM_MODEL": "nobody"}


@pytest.mark.real_slm
def test_local_only_runs_with_no_llm_at_all(tmp_path: Path) -> None:
    arguments = ["--input", _write(tmp_path, "report.json", REPORT), "--local-only", "--json"]
    result = tierflow("run", "--graph", TRIAGE, *arguments, env=DEAD_LLM)
    no_traceback(result)
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    assert output["stats"]["llm_calls"] == 0 and output["state"]["reply"]
    shown = json.loads(tierflow("runs", "show", output["run_id"], "--json").stdout)
    refused = [c for s in shown["steps"] for c in s["model_calls"] if c["escalation_refused"]]
    assert [c["node"] for c in refused] == ["draft_reply"]
    assert refused[0]["escalation_refused"] == "local_only"


@pytest.mark.real_slm
def test_a_budget_of_one_token_stops_the_task_and_keeps_its_steps() -> None:
    result = tierflow("run", "What is 17 * 23 + 4?", "--max-llm-tokens", "1", "--json", env=DEAD_LLM)
    no_traceback(result)
    assert result.returncode == 1
    output = json.loads(result.stdout)
    assert output["status"] == "budget_exceeded" and "'plan'" in output["error"]
    shown = json.loads(tierflow("runs", "show", output["run_id"], "--json").stdout)
    assert shown["status"] == "budget_exceeded" and [s["node"] for s in shown["steps"]] == ["plan"]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--graph", "no.such.module:graph", "--input", "{}"], "does not import"),
        (["--graph", "tierflow.graphs.examples.triage:nothing", "--input", "{}"], "has no attribute"),
        (["--graph", "tierflow.graphs.examples.triage:CATEGORIES", "--input", "{}"], "not a compiled"),
        (["--graph", "tierflow.graphs.examples.triage", "--input", "{}"], "MODULE:ATTR"),
        (["--graph", TRIAGE, "--input", "{not json"], "not valid JSON"),
        (["--graph", TRIAGE, "--input", '{"text": "x"}'], "missing report"),
        (["--graph", TRIAGE, "--input", "@/nonexistent/in.json"], "cannot read"),
        (["--graph", TRIAGE], "needs --input"),
        (["--graph", TRIAGE, "--input", '{"report": "x"}', "--tier", "drafting=slm"], "'drafting'"),
        (["What is 2 + 2?", "--graph", TRIAGE, "--input", "{}"], "give a TASK, or --graph"),
    ],
)
def test_bad_graph_runs_exit_2_and_say_why(arguments: list[str], message: str) -> None:
    result = tierflow("run", *arguments, env=DEAD_LLM)
    no_traceback(result)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr


def test_hostile_graph_modules_and_inputs_exit_2_and_say_why(tmp_path: Path) -> None:
    """A module that fails or exits while imported, an input nested too deep, too large or
    not a regular file, and a bad --tier or --policy are usage errors (status 2), never an
    internal error (70) or a silent 0. A module of one's own imports from its folder."""
    (tmp_path / "broken_syntax.py").write_text("def graph(:\n")
    (tmp_path / "raises.py").write_text("raise RuntimeError('boom at import')\n")
    (tmp_path / "exits.py").write_text("import sys\nsys.exit(0)\n")
    (tmp_path / "mine.py").write_text("from tierflow.graphs.examples.triage import graph\n")
    big = tmp_path / "big.json"
    big.write_text('{"report": "' + "x" * (11 * 2**20) + '"}')
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)  # past Python's recursion limit
    cases = [
        (["--graph", "broken_syntax:graph", "--input", "{}"], "SyntaxError"),
        (["--graph", "raises:graph", "--input", "{}"], "boom at import"),
        (["--graph", "exits:graph", "--input", "{}"], "exited (sys.exit(0))"),
        (["--graph", "mine:graph", "--input", '{"text": "x"}'], "missing report"),  # it imported
        (["--graph", TRIAGE, "--input", f"@{deep}"], "nests deeper than"),
        (["--graph", TRIAGE, "--input", "[" * 80 + "]" * 80], "nests deeper than"),
        (["--graph", TRIAGE, "--input", f"@{big}"], "over the 10,485,760"),
        (["--graph", TRIAGE, "--input", "@/dev/zero"], "not a regular file"),
        (["--graph", TRIAGE, "--input", f"@{tmp_path}"], "not a regular file"),
        (["--graph", TRIAGE, "--input", '{"report": "x"}', "--tier", "classify=bogus"], "NODE=TIER"),
        (["--graph", TRIAGE, "--input", '{"report": "x"}', "--policy", "bogus"], "bogus"),
    ]
    for arguments, message in cases:
        result = subprocess.run(
            [*TIERFLOW, "run", *arguments],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, **DEAD_LLM},
            stdin=subprocess.DEVNULL,
            cwd=tmp_path,
            check=False,
        )
        no_traceback(result)
        assert result.returncode == 2, (arguments[:2], result.returncode, result.stderr[-500:])
        assert message in result.stderr, (arguments[:2], result.stderr[-500:])


def test_a_corrupt_memory_names_its_path_and_the_command_that_rebuilds_it(isolated_env: Path) -> None:
    folder = isolated_env / "memory" / "decisions"
    folder.mkdir(parents=True)
    (folder / "chroma.sqlite3").write_bytes(b"this is not a database" * 100)
    broken = tierflow("memory", "rebuild")
    no_traceback(broken)
    assert broken.returncode == 1
    assert str(folder) in broken.stderr and "tierflow memory rebuild --fresh" in broken.stderr
    fresh = tierflow("memory", "rebuild", "--fresh", "--json")
    no_traceback(fresh)
    assert fresh.returncode == 0, fresh.stderr
    summary = json.loads(fresh.stdout)
    assert summary["decisions"] == 0 and "decisions.moved-" in summary["moved_aside"]
    assert (Path(summary["moved_aside"]) / "chroma.sqlite3").exists()  # nothing deleted


def test_bad_calibrations_exit_2_and_say_why(tmp_path: Path) -> None:
    good = tmp_path / "good.jsonl"
    good.write_text('{"report": "The export crashes.", "category": "bug"}\n')
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"report": "fine"}\n{"text": "wrong key"}\n')
    broken = tmp_path / "broken.jsonl"
    broken.write_text("{not json\n")
    cases = [
        (["--inputs", str(bad)], "line 2"),
        (["--inputs", str(broken)], "line 1: not valid JSON"),
        (["--inputs", str(good), "--gold", "colour"], "no key 'colour'"),
        (["--inputs", str(good), "--max-loss", "1.5"], "less than or equal to 1"),
        (["--inputs", str(good), "--slm-share", "0.3"], "Invalid value for '--slm-share'"),
        (["--inputs", str(good), "--max-loss", "0.1", "--slm-share", "0.7"], "both set"),
        (["--inputs", str(tmp_path / "none.jsonl")], "cannot read"),
        ([], "nothing to calibrate on"),
    ]
    for arguments, message in cases:
        result = tierflow("calibrate", "--graph", TRIAGE, *arguments, env=DEAD_LLM)
        no_traceback(result)
        assert result.returncode == 2, (arguments, result.stderr)
        assert message in result.stderr, (arguments, result.stderr)
    task = tierflow("calibrate", "--graph", "task", "--inputs", str(good), env=DEAD_LLM)
    assert task.returncode == 2 and "calibrated from the labels its runs gathered" in task.stderr
    assert "--graph task --from-runs" in task.stderr


CALIBRATION_REPORTS = [
    ("Since this morning the CSV export gives an empty file, version 4.2 on Windows.", "bug"),
    ("I was charged twice for the March invoice, please refund one of the payments.", "billing"),
    ("CHEAP WATCHES!!! Visit our shop today for 90% off, best replica brands.", "spam"),
    ("Congratulations, you have won a free cruise. Click here to claim your prize.", "spam"),
]


@pytest.mark.real_slm
@pytest.mark.real_llm
def test_calibrate_the_triage_example_on_the_real_models(isolated_env: Path, tmp_path: Path) -> None:
    """End to end, as a user runs it: label the SLM's outputs on a few reports with gold
    categories, fit the scorers, go on without redoing anything, and judge the next run."""
    inputs = tmp_path / "reports.jsonl"
    inputs.write_text(
        "".join(json.dumps({"report": r, "category": c}) + "\n" for r, c in CALIBRATION_REPORTS)
    )
    command = ("calibrate", "--graph", TRIAGE, "--inputs", str(inputs), "--gold", "category")
    first = tierflow(*command, "--json", timeout=1800)
    no_traceback(first)
    assert first.returncode == 0, first.stderr
    fitted = json.loads(first.stdout)
    nodes = {node["node"]: node for node in fitted["nodes"]}
    assert fitted["graph"] == "triage" and nodes["classify"]["labels"] == len(CALIBRATION_REPORTS)
    assert nodes["classify"]["kind"] == "choose" and nodes["extract_fields"]["kind"] == "extract"
    scorers = json.loads(Path(fitted["path"]).read_text())["nodes"]
    settings = load_settings()
    assert scorers["classify"]["trained_on"]["slm"] == settings.slm_model
    # each node's score is the shipped prior rescaled or a refit, whichever predicted held-out labels better
    losses = nodes["classify"]["log_loss"]
    assert set(losses) == {"prior", "refit"} and nodes["classify"]["method"] == min(losses, key=losses.get)
    assert scorers["classify"]["trained_on"]["method"] == nodes["classify"]["method"]
    store = TraceStore.from_url(settings.resolved_database_url())
    gold = [label for label in store.labels(graph="triage") if label.source == "gold"]
    assert len(gold) == len(CALIBRATION_REPORTS) and {label.node for label in gold} == {"classify"}

    again = tierflow(*command, timeout=600)
    assert again.returncode == 0 and "0 input(s) run, 4 already run before" in again.stderr

    run = tierflow("run", "--graph", TRIAGE, "--input", json.dumps({"report": "The app is down."}), "--json")
    assert run.returncode == 0, run.stderr
    trace = store.get_run(json.loads(run.stdout)["run_id"])
    (classify,) = [c for s in trace.steps for c in s.model_calls if c.node == "classify" and c.tier == "slm"]
    assert classify.scorer is not None and classify.scorer["source"] == "calibrated"
    assert classify.scorer["pair_matches"] is True and classify.p_wrong is not None
    operating = scorers["classify"]["trained_on"]["threshold"]  # the run uses calibrate's threshold
    assert classify.scorer["threshold"] == pytest.approx(operating, abs=1e-4)
