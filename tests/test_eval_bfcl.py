"""The BFCL harness: reading cases, mapping Gorilla specs, scoring with BFCL's checker, and
running cases through the tool-call graph on scripted tiers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tierflow.agents.scripted import ScriptedModel
from tierflow.agents.tiers import Tiers
from tierflow.errors import ToolError
from tierflow.evals.bfcl import (
    SINGLE_TURN,
    Case,
    CaseFileError,
    check,
    load_case_file,
    load_category,
    registry_for,
    request_text,
    to_json_schema,
)
from tierflow.evals.tool_suite import load_suite, sample
from tierflow.evals.toolcalls import CallRecord, ItemResult, percentile, run_cases, summarize_items
from tierflow.memory.traces import TraceStore
from tierflow.settings import TierPolicy

from tests.scripted import EXTRACT, SELECT

WEATHER = {
    "name": "weather.get",
    "description": "The weather in a city.",
    "parameters": {
        "type": "dict",
        "properties": {
            "city": {"type": "string", "description": "City name."},
            "days": {"type": "integer", "description": "Forecast days.", "default": 1},
            "unit": {"type": "string", "enum": ["C", "F"], "description": "Unit."},
        },
        "required": ["city"],
    },
}
ANSWER = [{"weather.get": {"city": ["Paris", "paris"], "days": ["", 1], "unit": ["", "C"]}}]


def case(category: str = "simple_python", functions: list[dict[str, Any]] | None = None, **kw: Any) -> Case:
    return Case(
        id=kw.get("id", f"{category}_0"),
        category=category,
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        functions=functions or [WEATHER],
        ground_truth=kw.get("ground_truth", ANSWER),
    )


def write_lines(path: Path, lines: list[Any]) -> Path:
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


# Type mapping ---------------------------------------------------------------------------
def test_gorilla_types_map_to_json_schema() -> None:
    spec = {
        "type": "dict",
        "description": "A shape.",
        "properties": {
            "points": {"type": "tuple", "items": {"type": "float"}},
            "tags": {"type": "array", "items": {"type": "string"}},
            "meta": {"type": "dict", "properties": {"x": {"type": "any"}}, "required": ["x"]},
            "scale": {"type": "float", "default": 1.0},
        },
        "required": ["points"],
    }
    schema = to_json_schema(spec)
    assert schema["type"] == "object" and schema["required"] == ["points"]
    assert schema["properties"]["points"] == {"type": "array", "items": {"type": "number"}}
    assert schema["properties"]["tags"]["items"] == {"type": "string"}
    assert schema["properties"]["meta"] == {
        "type": "object",
        "properties": {"x": {"type": "string"}},
        "required": ["x"],
    }
    assert schema["properties"]["scale"] == {"type": "number", "default": 1.0}


def test_java_and_javascript_values_are_strings_in_that_syntax() -> None:
    java = to_json_schema({"type": "HashMap", "description": "Options."}, "java")
    assert java["type"] == "string" and "Java HashMap" in java["description"]
    js = to_json_schema({"type": "array", "items": {"type": "integer"}}, "javascript")
    assert js["type"] == "string" and "items" not in js


def test_registry_validates_arguments_against_the_mapped_schema() -> None:
    tool = registry_for(case()).get("weather.get")
    assert tool is not None
    assert tool.arguments({"city": "Paris"}) == {"city": "Paris"}  # defaults are not invented
    assert tool.arguments({"city": "Paris", "days": "3", "unit": "F"}) == {
        "city": "Paris",
        "days": 3,
        "unit": "F",
    }
    for bad in ({"days": 2}, {"city": "Paris", "unit": "K"}, {"city": "Paris", "wind": True}):
        with pytest.raises(ToolError, match="invalid arguments for weather.get"):
            tool.arguments(bad)
    with pytest.raises(ToolError, match="described by a schema only"):
        tool.call({"city": "Paris"})


def test_every_function_of_the_shipped_categories_becomes_a_tool() -> None:
    for category in ("simple_python", "multiple", "irrelevance", "simple_java", "live_multiple"):
        cases = load_category(category)
        assert len(cases) >= 50
        for item in cases:
            registry = registry_for(item)
            assert len(registry) == len(item.functions)
            assert request_text(item).strip()


# Scoring ----------------------------------------------------------------------------------
def test_checker_accepts_the_right_call_and_names_what_is_wrong() -> None:
    assert check(case(), [{"weather.get": {"city": "Paris"}}]).correct
    assert check(case(), [{"weather.get": {"city": "Paris", "unit": "C"}}]).correct
    wrong_value = check(case(), [{"weather.get": {"city": "Lyon"}}])
    assert not wrong_value.correct and wrong_value.error_type.startswith("value_error")
    wrong_type = check(case(), [{"weather.get": {"city": "Paris", "days": "two"}}])
    assert not wrong_type.correct and wrong_type.error_type.startswith("type_error")
    assert check(case(), []).error_type == "no_call"
    assert not check(case(), [{"other": {}}]).correct


def test_irrelevance_and_relevance_are_about_calling_at_all() -> None:
    irrelevant = case("irrelevance", ground_truth=None)
    assert check(irrelevant, []).correct
    assert (
        check(irrelevant, [{"weather.get": {"city": "Paris"}}]).error_type
        == "irrelevance_error:called_a_function"
    )
    relevant = case("live_relevance", ground_truth=None)
    assert check(relevant, [{"weather.get": {"city": "x"}}]).correct
    assert not check(relevant, []).correct


def test_a_real_bfcl_answer_scores_correct_and_a_changed_one_does_not() -> None:
    first = load_category("multiple")[0]
    assert first.ground_truth is not None
    ((name, params),) = first.ground_truth[0].items()
    call = {name: {key: values[0] for key, values in params.items() if values[0] != ""}}
    assert check(first, [call]).correct
    key = next(iter(call[name]))
    changed = {name: {**call[name], key: 987654}}
    assert not check(first, [changed]).correct


# Case files -------------------------------------------------------------------------------
def good_line(case_id: str = "mine_1", **extra: Any) -> dict[str, Any]:
    return {
        "id": case_id,
        "question": [[{"role": "user", "content": "Weather in Paris?"}]],
        "function": [WEATHER],
        "ground_truth": ANSWER,
        **extra,
    }


def test_case_file_with_inline_answers_and_with_an_answers_file(tmp_path: Path) -> None:
    inline = load_case_file(write_lines(tmp_path / "a.jsonl", [good_line(), good_line("mine_2")]))
    assert [c.id for c in inline] == ["mine_1", "mine_2"] and inline[0].category == "multiple"
    questions = [{k: v for k, v in good_line().items() if k != "ground_truth"}]
    answers = write_lines(tmp_path / "answers.jsonl", [{"id": "mine_1", "ground_truth": ANSWER}])
    (two,) = load_case_file(write_lines(tmp_path / "q.jsonl", questions), answers)
    assert two.ground_truth == ANSWER
    (none_expected,) = load_case_file(
        write_lines(tmp_path / "i.jsonl", [{**questions[0], "category": "irrelevance"}])
    )
    assert none_expected.category == "irrelevance" and none_expected.ground_truth is None


@pytest.mark.parametrize(
    ("third_line", "message"),
    [
        ("{not json", "line 3: not valid JSON"),
        ("[1, 2]", "line 3: expected a JSON object, got list"),
        ({"question": [[{"role": "user", "content": "x"}]], "function": []}, 'line 3: missing "id"'),
        ({**good_line("x"), "question": "hi"}, 'line 3: "question" must be one turn'),
        ({**good_line("x"), "function": [{"description": "no name"}]}, 'line 3: "function" must be a list'),
        (
            {k: v for k, v in good_line("x").items() if k != "ground_truth"},
            "line 3: case 'x' has no \"ground_truth\"",
        ),
        ({**good_line("x"), "ground_truth": {"a": 1}}, 'line 3: "ground_truth" must be a list'),
        (good_line("mine_1"), "line 3: duplicate id 'mine_1'"),
    ],
)
def test_a_malformed_case_file_names_the_line(tmp_path: Path, third_line: Any, message: str) -> None:
    path = write_lines(tmp_path / "cases.jsonl", [good_line(), "", third_line])
    with pytest.raises(CaseFileError) as caught:
        load_case_file(path)
    assert f"{path}, {message}" in caught.value.message
    assert caught.value.hint


def test_unreadable_or_empty_case_files(tmp_path: Path) -> None:
    with pytest.raises(CaseFileError, match="cannot read case file"):
        load_case_file(tmp_path / "missing.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(CaseFileError, match="holds no cases"):
        load_case_file(tmp_path / "empty.jsonl")
    bad_answers = write_lines(tmp_path / "answers.jsonl", [{"id": "mine_1"}])
    with pytest.raises(CaseFileError, match=r"answers.jsonl, line 1: expected"):
        load_case_file(write_lines(tmp_path / "q.jsonl", [good_line()]), bad_answers)


def test_suite_names_and_sampling() -> None:
    name, cases = load_suite("bfcl:irrelevance", None, None)
    assert name == "bfcl_irrelevance" and all(c.category == "irrelevance" for c in cases)
    first, again, other = sample(cases, 20, 0), sample(cases, 20, 0), sample(cases, 20, 1)
    assert [c.id for c in first] == [c.id for c in again] != [c.id for c in other]
    assert len(first) == 20 and sample(cases, None, 0) == cases
    with pytest.raises(Exception, match="unknown or multi-turn BFCL category"):
        load_suite("bfcl:multi_turn_base", None, None)
    with pytest.raises(Exception, match="either --suite"):
        load_suite(None, None, None)


# Running through the graph ----------------------------------------------------------------
def run_one(
    store: TraceStore,
    policy: TierPolicy,
    *,
    slm: dict[str, list[Any]],
    llm: dict[str, list[Any]],
    confidence: float | None = None,
) -> ItemResult:
    tiers = Tiers(
        ScriptedModel(tier="slm", by_node=slm, confidence=confidence),
        ScriptedModel(tier="llm", by_node=llm),
    )
    (result,) = run_cases([case()], tiers, policy, store)
    return result


def test_a_case_runs_through_select_and_extract(store: TraceStore) -> None:
    result = run_one(
        store,
        TierPolicy.preset("slm"),
        slm={SELECT: [{"tool": "weather.get"}], EXTRACT: [{"city": "Paris"}]},
        llm={},
    )
    assert result.correct and result.valid and result.output == [{"weather.get": {"city": "Paris"}}]
    assert [(c.node, c.tier) for c in result.calls] == [("select_tool", "slm"), ("extract_args", "slm")]
    assert store.get_run(result.run_id).graph == "tool_call"


def test_low_confidence_choice_escalates_to_the_llm(store: TraceStore) -> None:
    policy = TierPolicy(min_confidence=0.5)
    unsure = run_one(
        store,
        policy,
        slm={SELECT: [{"tool": "none"}], EXTRACT: [{"city": "Paris"}]},
        llm={SELECT: [{"tool": "weather.get"}], EXTRACT: [{"city": "Paris"}]},
        confidence=0.3,
    )
    assert unsure.correct and unsure.escalated and unsure.select_confidence == 0.3
    assert unsure.calls[0].reason is not None and unsure.calls[0].reason.startswith("low_confidence")
    assert [(c.node, c.tier) for c in unsure.calls] == [  # the LLM took the choice: it writes the call
        ("select_tool", "slm"),
        ("select_tool", "llm"),
        ("extract_args", "llm"),
    ]
    sure = run_one(store, policy, slm={SELECT: [{"tool": "none"}]}, llm={}, confidence=0.9)
    assert not sure.escalated and not sure.correct and sure.valid and sure.output == []
    slm_only = run_one(
        store, TierPolicy.preset("slm"), slm={SELECT: [{"tool": "none"}]}, llm={}, confidence=0.1
    )
    assert not slm_only.escalated  # an slm-only policy never escalates


def test_unusable_arguments_are_an_invalid_call(store: TraceStore) -> None:
    result = run_one(
        store,
        TierPolicy.preset("slm"),
        slm={SELECT: [{"tool": "weather.get"}], EXTRACT: [{"town": "Paris"}]},
        llm={},
    )
    assert not result.valid and not result.correct and result.error_type == "no_call"


# Metrics ----------------------------------------------------------------------------------
def item(correct: bool, calls: list[tuple[str, bool]], latency: float) -> ItemResult:
    return ItemResult(
        id="x",
        category="multiple",
        correct=correct,
        valid=True,
        output=[],
        error_type=None if correct else "value_error:string",
        detail="",
        latency_ms=latency,
        run_id="r",
        calls=[
            CallRecord(
                "select_tool", tier, 10, 2, 1.0, escalated, "low_confidence: x" if escalated else None, None
            )
            for tier, escalated in calls
        ],
    )


def test_metrics_count_calls_tokens_and_latency() -> None:
    items = [
        item(True, [("slm", False), ("slm", False)], 100),
        item(False, [("slm", True), ("llm", False), ("slm", False)], 300),
        item(True, [("llm", False)], 200),
    ]
    m = summarize_items(items)
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert m["escalation_rate"] == pytest.approx(1 / 3)
    assert m["slm_share"] == pytest.approx(4 / 6)  # the escalated SLM attempt is an SLM call
    assert m["kept_local"] == pytest.approx(1 / 3)  # the first item never reached the LLM
    assert (m["llm_calls"], m["llm_prompt_tokens"], m["llm_completion_tokens"]) == (2, 20, 4)
    assert m["latency_ms_p50"] == 200 and m["latency_ms_p95"] == pytest.approx(290)
    assert m["error_types"] == {"value_error:string": 1}
    assert m["escalation_reasons"] == {"low_confidence": 1}
    assert percentile([], 0.5) is None


def test_the_example_case_file_in_the_docs_loads() -> None:
    path = Path(__file__).parents[1] / "evals" / "data" / "example_cases.jsonl"
    cases = load_case_file(path)
    assert [c.category for c in cases] == ["multiple", "multiple", "irrelevance"]
    refund = cases[1]
    assert check(refund, [{"billing.refund": {"invoice_id": "INV-1042", "amount": 25.5}}]).correct
    assert not check(refund, [{"billing.refund": {"invoice_id": "INV-1042"}}]).correct


def first_choices(params: dict[str, Any]) -> dict[str, Any]:
    """A call built from the first accepted value of every parameter of a BFCL answer."""
    chosen = {}
    for key, options in params.items():
        if options and options[0] != "":
            value = options[0]
            chosen[key] = first_choices(value) if isinstance(value, dict) else value
    return chosen


@pytest.mark.parametrize("category", SINGLE_TURN)
def test_every_single_turn_category_loads_and_scores(category: str, store: TraceStore) -> None:
    cases = load_category(category)[:3]
    for item in cases:
        registry_for(item)
        if not item.ground_truth:
            continue
        calls = [{name: first_choices(params)} for call in item.ground_truth for name, params in call.items()]
        verdict = check(item, calls)
        if item.language == "python":  # Java/JS answers must be written as strings in that syntax
            assert verdict.correct, (item.id, verdict)
    # and they run through the tool-call graph (a scripted SLM that never calls a tool)
    tiers = Tiers(
        ScriptedModel(tier="slm", by_node={SELECT: [{"tool": "none"}] * 3}), ScriptedModel(tier="llm")
    )
    results = run_cases(cases, tiers, TierPolicy.preset("slm"), store)
    assert [r.correct for r in results] == [c.category.endswith("irrelevance") for c in cases]


def test_parameters_without_descriptions_or_required_lists(store: TraceStore) -> None:
    bare = {
        "name": "ping",
        "description": "Ping a host.",
        "parameters": {"type": "dict", "properties": {"host": {"type": "string"}}},
    }
    item = Case(
        "multiple_9",
        "multiple",
        [{"role": "user", "content": "Ping example.org"}],
        [bare],
        [{"ping": {"host": ["example.org"]}}],
    )
    tiers = Tiers(
        ScriptedModel(tier="slm", by_node={SELECT: [{"tool": "ping"}], EXTRACT: [{"host": "example.org"}]}),
        ScriptedModel(tier="llm"),
    )
    (result,) = run_cases([item], tiers, TierPolicy.preset("slm"), store)
    assert result.correct, result.detail


def test_an_internal_error_on_one_case_is_counted_and_the_run_goes_on(store: TraceStore) -> None:
    def explode(messages: object) -> str:
        raise RuntimeError("boom")

    tiers = Tiers(
        ScriptedModel(tier="slm", by_node={SELECT: [explode, {"tool": "none"}]}), ScriptedModel(tier="llm")
    )
    first, second = run_cases(
        [case(id="a"), case("irrelevance", id="b", ground_truth=None)], tiers, TierPolicy.preset("slm"), store
    )
    assert first.error_type == "internal_error" and "boom" in first.detail and not first.correct
    assert second.correct
