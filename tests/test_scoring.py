"""The escalation score: its features, its file, and what the tool-call graph does with it
(scripted tiers standing in for models that report choice probabilities and token signals)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from tierflow.agents.policy import TierPolicy
from tierflow.agents.scoring import (
    ARGS_FEATURES,
    SELECT_FEATURES,
    EscalationScorer,
    NodeScorer,
    ToolText,
    args_features,
    select_features,
)
from tierflow.agents.scripted import ScriptedModel
from tierflow.agents.signals import TokenSignals
from tierflow.agents.tiers import Tiers
from tierflow.errors import ConfigError
from tierflow.evals.bfcl import Case, registry_for
from tierflow.evals.toolcalls import decide_call
from tierflow.memory.embeddings import Relevance, load_embeddings
from tierflow.memory.traces import TraceStore

from tests.scripted import EXTRACT, SELECT

WEATHER = ToolText(
    "weather_get",
    "The current weather in a city.",
    {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "days": {"type": "integer", "minimum": 1, "maximum": 14},
            "unit": {"type": "string", "enum": ["C", "F"]},
        },
        "required": ["city"],
    },
)
STOCKS = ToolText("stock_price", "The latest price of a stock ticker.", {"type": "object", "properties": {}})
REQUEST = "What's the weather in Paris for the next 3 days?"


def feature(values: list[float], name: str, names: tuple[str, ...] = ARGS_FEATURES) -> float:
    return values[names.index(name)]


def test_select_features_read_the_choice_and_the_request() -> None:
    chose = select_features(
        REQUEST,
        [WEATHER, STOCKS],
        "weather_get",
        {"weather_get": 0.7, "stock_price": 0.2, "none": 0.1},
        [0.55, 0.1],
    )
    assert len(chose) == len(SELECT_FEATURES)
    assert feature(chose, "p_choice", SELECT_FEATURES) == pytest.approx(0.7)
    assert feature(chose, "margin", SELECT_FEATURES) == pytest.approx(0.5)
    assert feature(chose, "name_overlap", SELECT_FEATURES) == 1.0  # "weather" is in the request
    assert feature(chose, "chosen_is_best_overlap", SELECT_FEATURES) == 1.0
    assert feature(chose, "chosen_similarity", SELECT_FEATURES) == 0.55
    assert feature(chose, "chosen_is_most_similar", SELECT_FEATURES) == 1.0
    wrong = select_features(
        REQUEST, [WEATHER, STOCKS], "stock_price", {"weather_get": 0.4, "stock_price": 0.6}, [0.55, 0.1]
    )
    assert feature(wrong, "chosen_is_most_similar", SELECT_FEATURES) == 0.0
    assert feature(wrong, "chosen_is_best_overlap", SELECT_FEATURES) == 0.0
    assert feature(wrong, "best_other_overlap", SELECT_FEATURES) > feature(
        wrong, "description_overlap", SELECT_FEATURES
    )
    none = select_features(REQUEST, [WEATHER], "none", {"none": 0.9, "weather_get": 0.1}, [0.6])
    assert (
        feature(none, "chose_none", SELECT_FEATURES) == 1.0
        and feature(none, "p_none", SELECT_FEATURES) == 0.9
        and feature(none, "none_x_max_similarity", SELECT_FEATURES) == 0.6
    )
    unknown = select_features(REQUEST, [WEATHER], "none", {"none": 1.0}, None)  # no embeddings
    assert feature(unknown, "max_similarity", SELECT_FEATURES) == 0.0


def test_argument_features_check_values_against_the_request_and_schema() -> None:
    select = select_features(REQUEST, [WEATHER], "weather_get", {"weather_get": 1.0}, None)
    signals = TokenSignals(tokens=4, min_logprob=-3.5, mean_logprob=-1.0, forced_tokens=1)
    grounded = args_features(REQUEST, WEATHER, {"city": "paris", "days": 3}, signals, select)
    assert len(grounded) == len(ARGS_FEATURES)
    assert feature(grounded, "strings_grounded") == 1.0 and feature(grounded, "numbers_grounded") == 1.0
    assert feature(grounded, "value_min_logprob") == -3.5 and feature(grounded, "range_violations") == 0
    invented = args_features(REQUEST, WEATHER, {"city": "London", "days": 30, "unit": "K"}, signals, select)
    assert feature(invented, "strings_ungrounded") == 2  # London and K are not in the request
    assert feature(invented, "numbers_ungrounded") == 1
    assert feature(invented, "range_violations") == 2  # 30 > 14, and K is not in the enum
    assert feature(invented, "optional_filled") == 1.0


def logistic(features: tuple[str, ...], weights: dict[str, float], intercept: float) -> NodeScorer:
    return NodeScorer(
        features=features,
        mean=tuple(0.0 for _ in features),
        scale=tuple(1.0 for _ in features),
        coef=tuple(weights.get(name, 0.0) for name in features),
        intercept=intercept,
        thresholds=((0.0, 0.2), (0.05, 0.5), (0.1, 0.8)),
    )


@cache
def embedding_relevance() -> Relevance:
    """The request-to-tool similarity the app gives runs: the offline embedding model's."""
    from tierflow.settings import Settings

    return Relevance(load_embeddings(Settings().resolved_models_dir()))


def scorer() -> EscalationScorer:
    """Keeps every choice; judges a call wrong when one of its strings is not in the request."""
    return EscalationScorer(
        {
            "select_tool": logistic(SELECT_FEATURES, {}, -5.0),
            "extract_args": logistic(ARGS_FEATURES, {"strings_ungrounded": 6.0}, -3.0),
        },
        {"runs_file": "test"},
    )


def test_thresholds_follow_max_loss_and_the_file_round_trips(tmp_path: Path) -> None:
    node = scorer().nodes["extract_args"]
    assert [node.threshold(loss) for loss in (0.0, 0.03, 0.05, 0.2)] == [0.2, 0.2, 0.5, 0.8]
    assert node.p_wrong([0.0] * len(ARGS_FEATURES)) == pytest.approx(1 / (1 + 2.718281828**3), rel=1e-6)
    path = tmp_path / "scorer.json"
    scorer().save(path)
    loaded = EscalationScorer.load(path)
    assert loaded.nodes == scorer().nodes and loaded.trained_on == {"runs_file": "test"}


def test_a_missing_or_corrupt_scorer_names_the_file_and_the_command(tmp_path: Path) -> None:
    missing = tmp_path / "none.json"
    with pytest.raises(ConfigError, match="none.json") as raised:
        EscalationScorer.load(missing)
    assert "tierflow eval routing --train" in (raised.value.hint or "")
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text("{not json")
    with pytest.raises(ConfigError, match="corrupt.json"):
        EscalationScorer.load(corrupt)
    stale = tmp_path / "stale.json"
    document = json.loads(
        json.dumps({"trained_on": {}, "nodes": {"select_tool": scorer().nodes["select_tool"].to_json()}})
    )
    document["nodes"]["select_tool"]["features"] = ["old_feature"]
    stale.write_text(json.dumps(document))
    with pytest.raises(ConfigError, match="other features"):
        EscalationScorer.load(stale)


def test_the_shipped_scorer_loads_with_a_threshold_per_node() -> None:
    from tierflow.agents.scoring import default_scorer

    shipped = default_scorer()
    assert set(shipped.nodes) == {"select_tool", "extract_args"}
    assert shipped.trained_on["train_items"] > 0 and shipped.trained_on["runs_sha256"]
    for node in shipped.nodes.values():
        assert 0.0 <= node.threshold(TierPolicy().loss_or_default) <= 1.0


# In the tool-call graph -----------------------------------------------------------------
REQUEST_PARIS = "Weather in Paris?"
SIGNALS = TokenSignals(tokens=3, min_logprob=-0.5, mean_logprob=-0.2, forced_tokens=0)
CASE = Case(
    id="weather_0",
    category="simple_python",
    messages=[{"role": "user", "content": REQUEST_PARIS}],
    functions=[
        {
            "name": "weather.get",
            "description": "The weather in a city.",
            "parameters": {"type": "dict", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        }
    ],
    ground_truth=[{"weather.get": {"city": ["Paris"]}}],
)


def run(
    store: TraceStore, slm_args: dict[str, Any], *, local_only: bool = False
) -> tuple[Any, list[Any], Tiers]:
    """The tool-call graph on the request, with the SLM's arguments ``slm_args``."""
    tiers = Tiers(
        ScriptedModel(
            tier="slm",
            by_node={SELECT: [{"tool": "weather.get"}], EXTRACT: [slm_args]},
            choices={"weather.get": 0.9, "none": 0.1},
            signals=SIGNALS,
        ),
        ScriptedModel(tier="llm", by_node={SELECT: [{"tool": "weather.get"}], EXTRACT: [{"city": "Paris"}]}),
    )
    result = decide_call(
        REQUEST_PARIS,
        registry_for(CASE),
        tiers,
        store,
        TierPolicy(max_loss=0.05),
        context={"scorer": scorer(), "relevance": embedding_relevance()},
        local_only=local_only,
    )
    calls = [c for step in store.get_run(result.run_id).steps for c in step.model_calls]
    return result.state, calls, tiers


def test_a_call_judged_right_stays_on_the_slm(store: TraceStore) -> None:
    final, calls, tiers = run(store, {"city": "Paris"})
    assert (final["tool"], final["arguments"]) == ("weather.get", {"city": "Paris"})
    assert [(c.node, c.tier, c.escalated) for c in calls] == [
        ("select_tool", "slm", False),
        ("extract_args", "slm", False),
    ]
    assert calls[1].p_wrong is not None and calls[1].p_wrong < 0.5
    assert calls[0].choice_probabilities == {"weather.get": 0.9, "none": 0.1}
    assert not tiers.model("llm").calls  # type: ignore[attr-defined]


def test_a_call_judged_wrong_goes_to_the_llm_whole(store: TraceStore) -> None:
    final, calls, _ = run(store, {"city": "Lyon"})  # Lyon is nowhere in the request
    assert (final["tool"], final["arguments"]) == ("weather.get", {"city": "Paris"})
    assert [(c.node, c.tier, c.escalated) for c in calls] == [
        ("select_tool", "slm", True),
        ("extract_args", "slm", True),
        ("select_tool", "llm", False),
        ("extract_args", "llm", False),
    ]
    assert calls[1].escalation_reason.startswith("escalation_score")
    assert calls[0].escalation_reason.startswith("its call was judged wrong")
    assert calls[1].p_wrong is not None and calls[1].p_wrong > 0.5


def test_local_only_keeps_the_slm_call_and_records_the_refusal(store: TraceStore) -> None:
    final, calls, tiers = run(store, {"city": "Lyon"}, local_only=True)
    assert final["arguments"] == {"city": "Lyon"}
    assert [(c.node, c.tier, c.escalated, c.escalation_refused) for c in calls] == [
        ("select_tool", "slm", False, None),
        ("extract_args", "slm", False, "local_only"),
    ]
    assert not tiers.model("llm").calls  # type: ignore[attr-defined]


@pytest.mark.parametrize(("similarity", "escalated"), [(0.8, True), (0.1, False)])
def test_no_tool_fits_is_never_taken_on_the_slms_word(
    store: TraceStore, similarity: float, escalated: bool
) -> None:
    from dataclasses import replace

    gated = scorer()
    gated = EscalationScorer(
        {**gated.nodes, "select_tool": replace(gated.nodes["select_tool"], none_gate=0.5)}, {}
    )
    tiers = Tiers(
        ScriptedModel(
            tier="slm", by_node={SELECT: [{"tool": "none"}]}, choices={"none": 0.95, "weather.get": 0.05}
        ),
        ScriptedModel(tier="llm", by_node={SELECT: [{"tool": "weather.get"}], EXTRACT: [{"city": "Paris"}]}),
    )
    context = {"scorer": gated, "relevance": lambda request, texts: [similarity] * len(texts)}
    result = decide_call(REQUEST_PARIS, registry_for(CASE), tiers, store, TierPolicy(), context=context)
    calls = [c for step in store.get_run(result.run_id).steps for c in step.model_calls]
    if escalated:  # the request is close to a tool: the LLM decides
        assert calls[0].escalation_reason.startswith("none_unconfirmed")
        assert result.state["tool"] == "weather.get"
    else:  # the request is far from every tool: the SLM's "none" stands
        assert [(c.node, c.tier, c.escalated) for c in calls] == [("select_tool", "slm", False)]


def test_without_a_relevance_the_score_is_never_fed_zeros(store: TraceStore) -> None:
    """A runner built without embeddings must not feed the score zeros (every tool would look
    unrelated to the request): the run fails saying what to pass, before the choice is kept."""
    reads_similarity = EscalationScorer(
        {
            "select_tool": logistic(SELECT_FEATURES, {"max_similarity": 20.0}, -5.0),
            "extract_args": logistic(ARGS_FEATURES, {}, -5.0),
        },
        {},
    )
    tiers = Tiers(
        ScriptedModel(tier="slm", by_node={SELECT: [{"tool": "weather.get"}]}, choices={"weather.get": 1.0}),
        ScriptedModel(tier="llm", by_node={SELECT: [{"tool": "weather.get"}], EXTRACT: [{"city": "Paris"}]}),
    )
    policy = TierPolicy(max_loss=0.05)
    result = decide_call(
        REQUEST_PARIS, registry_for(CASE), tiers, store, policy, context={"scorer": reads_similarity}
    )
    assert result.status == "failed" and "similarity to the tools" in (result.error or "")
    assert "relevance=" in (result.hint or "")
    (choice,) = [c for step in store.get_run(result.run_id).steps for c in step.model_calls]
    assert choice.p_wrong is None


def test_the_app_runs_tasks_on_the_scorer_the_settings_name(tmp_path: Path) -> None:
    """A scorer refitted for the user's own models is a file anywhere: ``escalation_scorer``
    names it, the app's task runs use it, and a missing one says which setting to fix."""
    from tierflow.app import App
    from tierflow.settings import Settings

    refitted = tmp_path / "my-scorer.json"
    scorer().save(refitted)
    with App(Settings(data_dir=tmp_path, memory=False, escalation_scorer=refitted)) as app:
        assert app.runner.scorer is not None and app.runner.scorer.path == refitted
        assert app.runner.scorer.nodes.keys() == scorer().nodes.keys()
    with App(Settings(data_dir=tmp_path, memory=False)) as app:
        assert app.runner.scorer is None  # the shipped one (TaskContext.escalation_scorer)
    with App(Settings(data_dir=tmp_path, memory=False, escalation_scorer=tmp_path / "gone.json")) as app:
        with pytest.raises(ConfigError, match="gone.json"):
            app.scorer  # noqa: B018


def test_an_infinite_or_overlong_number_is_never_grounded_and_never_crashes_a_check() -> None:
    """An SLM may write 1e999 in a JSON value (Python reads it as infinity), or a summary a
    400-digit figure: the signals and checks read them as ungrounded instead of failing."""
    from tierflow.agents.faithfulness import numbers_attributed
    from tierflow.agents.scoring import number_grounded

    assert not number_grounded(float("inf"), {1.0}) and not number_grounded(float("nan"), set())
    assert number_grounded(1.0, set()) and number_grounded(42.0, {42.0})
    numbers_attributed("The port is " + "9" * 400 + ".", "The port is 8080.")  # no OverflowError
