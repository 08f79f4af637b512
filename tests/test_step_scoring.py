"""Every kit step judged by a scorer: the signals recorded on each SLM output, escalation
above the node's threshold with the score in the trace, priors per kind of step, and a
scorer fitted for other models never used as if it fitted these (scripted tiers)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, TypedDict

import pytest
from langgraph.graph import START, StateGraph
from pydantic import BaseModel
from tierflow import TierContext, TierPolicy, choose, run_graph
from tierflow.agents.calibration import StepScorer, StepScorers, scorer_file
from tierflow.agents.judging import FEATURES, Labelled, choose_thresholds, fit_logistic
from tierflow.agents.scripted import ScriptedModel
from tierflow.agents.tiers import Tiers
from tierflow.memory import TraceStore
from tierflow.records import StoredModelCall

OPTIONS = ["refund", "bug", "question"]


class Ticket(TypedDict, total=False):
    text: str
    label: str


def graph():  # type: ignore[no-untyped-def]
    builder = StateGraph(Ticket, context_schema=TierContext)
    builder.add_node("classify", choose(OPTIONS, inputs="text", into="label"))
    builder.add_edge(START, "classify")
    return builder.compile(name="tickets")


def tiers(
    probabilities: dict[str, float],
    slm_says: str,
    llm_says: str = "refund",
    names: tuple[str, str] = ("tiny", "big"),
) -> Tiers:
    return Tiers(
        ScriptedModel(
            tier="slm", name=names[0], by_node={"classify": [{"label": slm_says}]}, choices=probabilities
        ),
        ScriptedModel(
            tier="llm",
            name=names[1],
            by_node={"classify": [{"label": llm_says}], "classify:shadow": [{"label": llm_says}]},
        ),
    )


def margin_scorer(slm: str = "tiny", llm: str = "big", source: str = "calibrated") -> StepScorer:
    """A choose scorer fitted on outputs whose small margin meant wrong."""
    rows = [{"margin": m / 20, "p_choice": 0.5 + m / 40} for m in range(20)]
    wrong = [m < 8 for m in range(20)]
    model = fit_logistic(rows, wrong, FEATURES["choose"])
    labelled = [Labelled(model.p_wrong(row), not bad) for row, bad in zip(rows, wrong, strict=True)]
    points = tuple(choose_thresholds(labelled, [0.0, 0.05]))
    trained_on = {"slm": slm, "llm": llm, "graph": "tickets", "node": "classify", "source": source}
    return StepScorer("choose", model, points, trained_on)


def shadowed_runs(store: TraceStore, count: int, wrong_every: int) -> None:
    """``count`` runs with every output shadowed; the SLM is unsure and wrong on every
    ``wrong_every``-th, sure and right otherwise."""
    for i in range(count):
        wrong = i % wrong_every == 0
        run_graph(
            graph(),
            {"text": f"ticket {i}"},
            tiers=tiers(UNSURE if wrong else SURE, "bug" if wrong else "refund"),
            store=store,
            context={"shadow_rate": 1.0},
        )


def calls(store: TraceStore, run_id: str) -> list[StoredModelCall]:
    return [call for step in store.get_run(run_id).steps for call in step.model_calls]


SURE = {"refund": 0.96, "bug": 0.03, "question": 0.01}
UNSURE = {"bug": 0.41, "refund": 0.38, "question": 0.21}


def test_every_slm_output_of_a_kit_step_has_its_signals_in_the_trace(store: TraceStore) -> None:
    result = run_graph(
        graph(), {"text": "I was charged twice"}, tiers=tiers(UNSURE, "bug"), store=store, policy="slm"
    )
    (call,) = calls(store, result.run_id)
    assert call.step_kind == "choose" and set(call.features or {}) == set(FEATURES["choose"])
    assert call.features and call.features["margin"] == pytest.approx(0.03)
    assert call.p_wrong is None and not call.escalated  # nothing judges it without a scorer


def test_an_output_the_scorer_judges_likely_wrong_goes_to_the_llm(store: TraceStore) -> None:
    scorers = StepScorers({"classify": margin_scorer()})
    doubtful = run_graph(
        graph(),
        {"text": "I was charged twice"},
        tiers=tiers(UNSURE, "bug"),
        store=store,
        context={"scorers": scorers},
    )
    slm_call, llm_call = calls(store, doubtful.run_id)
    assert doubtful.state["label"] == "refund" and llm_call.tier == "llm"
    assert slm_call.escalated and (slm_call.escalation_reason or "").startswith("escalation_score")
    assert slm_call.p_wrong is not None and slm_call.p_wrong > (slm_call.scorer or {})["threshold"]
    assert slm_call.scorer == {
        "source": "calibrated",
        "fitted_for": {"slm": "tiny", "llm": "big"},
        "pair_matches": True,
        "threshold": pytest.approx(scorers.nodes["classify"].run_threshold(TierPolicy().max_loss), abs=1e-4),
    }
    sure = run_graph(
        graph(),
        {"text": "refund please"},
        tiers=tiers(SURE, "refund"),
        store=store,
        context={"scorers": scorers},
    )
    (kept,) = calls(store, sure.run_id)
    assert kept.tier == "slm" and not kept.escalated and kept.p_wrong is not None


def test_a_prior_judges_a_node_that_was_never_calibrated(store: TraceStore) -> None:
    scorers = StepScorers({}, {"choose": margin_scorer(source="prior")})
    result = run_graph(
        graph(), {"text": "x"}, tiers=tiers(UNSURE, "bug"), store=store, context={"scorers": scorers}
    )
    slm_call, _ = calls(store, result.run_id)
    assert slm_call.escalated and (slm_call.scorer or {})["source"] == "prior"


def test_a_scorer_for_another_model_pair_is_never_used_silently(
    store: TraceStore, caplog: pytest.LogCaptureFixture
) -> None:
    other = margin_scorer(slm="qwen-0.5b", llm="gpt-4o")
    scorers = StepScorers({"classify": other})
    with caplog.at_level(logging.WARNING, logger="tierflow"):
        for _ in range(2):
            result = run_graph(
                graph(), {"text": "x"}, tiers=tiers(SURE, "refund"), store=store, context={"scorers": scorers}
            )
    warnings = [r.getMessage() for r in caplog.records if "fitted for the models" in r.getMessage()]
    assert len(warnings) == 1 and "qwen-0.5b / gpt-4o" in warnings[0]  # said once
    (call, *_) = calls(store, result.run_id)
    assert call.scorer is not None and call.scorer["pair_matches"] is False
    assert call.scorer["threshold"] == pytest.approx(other.strictest, abs=1e-4)


def test_scorers_round_trip_through_their_file_and_a_broken_file_says_so(tmp_path: Path) -> None:
    path = scorer_file(tmp_path / "scorers", "tickets/v2")
    assert path.name == "tickets_v2.json"
    StepScorers({"classify": margin_scorer()}).save(path)
    loaded = StepScorers.load(path)
    assert loaded.nodes["classify"].threshold(0.05) == margin_scorer().threshold(0.05)
    assert StepScorers.load(tmp_path / "none.json").nodes == {}
    path.write_text("{not json")
    from tierflow.errors import ConfigError

    with pytest.raises(ConfigError, match="cannot be read") as info:
        StepScorers.load(path)
    assert "calibrate" in info.value.hint


def test_shadow_labels_gather_on_kept_outputs_and_never_leave_a_local_run(store: TraceStore) -> None:
    shadow = {"shadow_rate": 1.0}
    agree = run_graph(graph(), {"text": "x"}, tiers=tiers(SURE, "refund"), store=store, context=shadow)
    differ = run_graph(
        graph(), {"text": "y"}, tiers=tiers(UNSURE, "bug"), store=store, context=shadow, policy="slm"
    )
    assert agree.state["label"] == "refund" and differ.state["label"] == "bug"  # the SLM's outputs stand
    assert [c.node for c in calls(store, differ.run_id)] == ["classify", "classify:shadow"]
    labels = store.labels(graph="tickets")
    assert [(label.run_id, label.slm_right, label.source) for label in labels] == [
        (agree.run_id, True, "shadow"),
        (differ.run_id, False, "shadow"),
    ]
    assert labels[1].node == "classify" and labels[1].kind == "choose" and labels[1].detail == '"refund"'
    assert (labels[1].slm_model, labels[1].llm_model) == ("tiny", "big")
    assert labels[1].features["margin"] == pytest.approx(0.03)
    local = run_graph(
        graph(), {"text": "z"}, tiers=tiers(UNSURE, "bug"), store=store, context=shadow, local_only=True
    )
    assert [c.tier for c in calls(store, local.run_id)] == ["slm"] and len(store.labels()) == 2
    off = run_graph(graph(), {"text": "w"}, tiers=tiers(UNSURE, "bug"), store=store, policy="slm")
    assert len(calls(store, off.run_id)) == 1 and len(store.labels()) == 2


def test_a_shadow_the_budget_cannot_take_is_skipped(store: TraceStore) -> None:
    from tierflow import Budget

    result = run_graph(
        graph(),
        {"text": "x"},
        tiers=tiers(UNSURE, "bug"),
        store=store,
        policy="slm",
        budget=Budget(max_llm_tokens=5),
        context={"shadow_rate": 1.0},
    )
    assert result.ok and [c.node for c in calls(store, result.run_id)] == ["classify"]
    assert store.labels() == []


def calibration_tiers(n: int) -> Tiers:
    """Inputs 0..n-1: the SLM is unsure and wrong on every third, sure and right otherwise."""
    slm_replies, llm_replies, choices = [], [], []
    for i in range(n):
        wrong = i % 3 == 0
        slm_replies.append({"label": "bug" if wrong else "refund"})
        llm_replies.append({"label": "refund"})
        choices.append(UNSURE if wrong else SURE)
    slm = ScriptedModel(tier="slm", name="tiny", by_node={"classify": slm_replies})
    probabilities = iter(choices)
    original = slm.complete

    def complete(messages, *, schema=None, max_tokens):  # type: ignore[no-untyped-def]
        slm._choices = next(probabilities)  # this input's option probabilities
        return original(messages, schema=schema, max_tokens=max_tokens)

    slm.complete = complete  # type: ignore[method-assign]
    return Tiers(slm, ScriptedModel(tier="llm", name="big", by_node={"classify:shadow": llm_replies}))


def test_calibrate_labels_each_input_once_and_fits_a_scorer_that_then_judges(
    store: TraceStore, tmp_path: Path
) -> None:
    from functools import partial

    from tierflow.agents.calibration import fit_scorers
    from tierflow.graphs.calibrating import collect_labels, read_inputs

    inputs = tmp_path / "inputs.jsonl"
    inputs.write_text("\n".join(f'{{"text": "ticket {i}", "label": "refund"}}' for i in range(30)) + "\n")
    compiled = graph()
    items = read_inputs(inputs, compiled, ["label"])
    assert (
        len(items) == 30 and items[0].gold == {"label": "refund"} and items[0].input == {"text": "ticket 0"}
    )
    tiered = calibration_tiers(30)
    run = partial(run_graph, tiers=tiered, store=store)
    seen: list[str] = []
    outcomes = lambda report: seen.append(report.outcome)  # noqa: E731
    ran = collect_labels(compiled, "tickets", items[:20], run, store, tiered.llm, on_progress=outcomes)
    assert ran == 20 and seen.count("labelled") == 20
    ran = collect_labels(compiled, "tickets", items, run, store, tiered.llm)  # a stopped calibration goes on
    assert ran == 10
    labels = store.labels(graph="tickets")
    gold = [label for label in labels if label.source == "gold"]
    assert len(gold) == 30 and sum(not label.slm_right for label in gold) == 10
    scorers, fits = fit_scorers(labels, graph="tickets", slm="tiny", llm="big", max_loss=0.0)
    (fit,) = fits
    assert (fit.node, fit.kind, fit.labels, fit.slm_wrong) == ("classify", "choose", 30, 10)
    assert fit.point.loss == 0.0 and fit.point.slm_share == pytest.approx(20 / 30)
    scorer = scorers.nodes["classify"]
    assert scorer.trained_on["items"] == 30 and scorer.trained_on["slm"] == "tiny"
    doubtful = run_graph(
        graph(), {"text": "new"}, tiers=tiers(UNSURE, "bug"), store=store, context={"scorers": scorers}
    )
    assert doubtful.state["label"] == "refund" and calls(store, doubtful.run_id)[0].escalated


def test_calibrate_lets_an_invalid_slm_output_escalate_and_labels_steps_that_prefer_the_llm(
    store: TraceStore, tmp_path: Path
) -> None:
    """The run goes on past an SLM output that is not valid (the LLM answers it, nothing is
    labelled of it), and a step that prefers the LLM under tiered is still tried on the SLM."""
    from functools import partial

    from tierflow.graphs.calibrating import CalibrationItem, collect_labels

    builder = StateGraph(Ticket, context_schema=TierContext)
    builder.add_node("classify", choose(OPTIONS, inputs="text", into="label", prefer="llm"))
    builder.add_edge(START, "classify")
    compiled = builder.compile(name="tickets")
    tiered = Tiers(
        ScriptedModel([{"label": "maybe"}, {"label": "bug"}], tier="slm", name="tiny", choices=SURE),
        ScriptedModel([{"label": "refund"}] * 4, tier="llm", name="big"),
    )
    items = [CalibrationItem(f"t{i}", {"text": f"ticket {i}"}, {"label": "refund"}) for i in range(2)]
    run = partial(run_graph, tiers=tiered, store=store)
    assert collect_labels(compiled, "tickets", items, run, store, tiered.llm) == 2
    assert [r.status for r in store.list_runs(limit=10)] == ["succeeded", "succeeded"]
    (label,) = [label for label in store.labels(graph="tickets") if label.source == "gold"]
    assert not label.slm_right and label.llm_right  # of the valid "bug" only


def test_from_runs_refits_on_the_shadow_labels_of_everyday_runs(store: TraceStore) -> None:
    from tierflow.agents.calibration import fit_scorers

    shadowed_runs(store, 24, wrong_every=4)
    labels = store.labels(graph="tickets", slm_model="tiny", llm_model="big")
    assert len(labels) == 24 and {label.source for label in labels} == {"shadow"}
    scorers, (fit,) = fit_scorers(labels, graph="tickets", slm="tiny", llm="big", max_loss=0.0)
    assert fit.slm_wrong == 6 and fit.point.slm_share == pytest.approx(18 / 24)
    assert scorers.nodes["classify"].model.p_wrong({"margin": 0.03}) > 0.5


def test_runs_use_the_operating_point_calibrate_chose_unless_the_policy_names_a_loss(
    store: TraceStore,
) -> None:
    from tierflow.agents.calibration import ScorerMatch, fit_scorers
    from tierflow.agents.policy import DEFAULT_MAX_LOSS

    shadowed_runs(store, 24, wrong_every=4)
    labels = store.labels(graph="tickets", slm_model="tiny", llm_model="big")
    scorers, (fit,) = fit_scorers(labels, graph="tickets", slm="tiny", llm="big", max_loss=0.05)
    scorer = scorers.nodes["classify"]
    assert scorer.trained_on["threshold"] == pytest.approx(fit.point.threshold)
    assert scorer.run_threshold(None) == pytest.approx(fit.point.threshold)
    assert scorer.run_threshold(0.0) == scorer.threshold(0.0)
    assert ScorerMatch(margin_scorer(slm="other"), matches=False).threshold(None) == margin_scorer().strictest
    prior = margin_scorer(source="prior")
    assert prior.run_threshold(None) == prior.threshold(DEFAULT_MAX_LOSS)  # a prior runs at the default
    before = {key: value for key, value in scorer.trained_on.items() if key != "threshold"}
    old = StepScorer(
        "choose", scorer.model, scorer.thresholds, before
    )  # a file from before the point was kept
    assert old.run_threshold(None) == scorer.threshold(0.05)

    def threshold_used(policy: TierPolicy) -> float:
        result = run_graph(
            graph(),
            {"text": "refund please"},
            tiers=tiers(SURE, "refund"),
            store=store,
            policy=policy,
            context={"scorers": scorers},
        )
        (call,) = [c for c in calls(store, result.run_id) if c.tier == "slm"]
        return float((call.scorer or {})["threshold"])

    assert threshold_used(TierPolicy()) == pytest.approx(fit.point.threshold, abs=1e-4)
    assert threshold_used(TierPolicy(max_loss=0.0)) == pytest.approx(scorer.threshold(0.0), abs=1e-4)


def test_a_share_target_escalates_the_likeliest_wrong_outputs_of_any_node_first() -> None:
    from tierflow.agents.calibration import fit_scorers
    from tierflow.agents.judging import calls_share, share_thresholds

    by_node = {
        "a": [Labelled(p, slm_right=p < 0.25) for p in (0.1, 0.2, 0.3, 0.4)],
        "b": [Labelled(p, slm_right=False) for p in (0.5, 0.6, 0.7, 0.8)],
    }
    points = share_thresholds(by_node, 0.6)  # 8 steps: 3 kept gives 8 of 13 calls on the SLM
    assert points["a"].threshold == points["b"].threshold == 0.3
    assert (points["a"].slm_share, points["b"].slm_share) == (0.75, 0.0)
    assert points["a"].loss == pytest.approx(0.25) and calls_share(8, 3) == pytest.approx(8 / 13)
    assert share_thresholds(by_node, 0.5)["a"].slm_share == 0.0  # every step escalated
    assert share_thresholds(by_node, 1.0)["b"].slm_share == 1.0  # none escalated
    with pytest.raises(ValueError, match="not both"):
        fit_scorers([], graph="g", slm="s", llm="l", max_loss=0.01, slm_share=0.6)


def test_calibrate_for_a_share_reaches_it_out_of_fold(store: TraceStore) -> None:
    from tierflow.agents.calibration import fit_scorers, fitted_share

    shadowed_runs(store, 24, wrong_every=4)
    labels = store.labels(graph="tickets", slm_model="tiny", llm_model="big")
    strict, (strict_fit,) = fit_scorers(labels, graph="tickets", slm="tiny", llm="big", max_loss=0.0)
    shared, fits = fit_scorers(labels, graph="tickets", slm="tiny", llm="big", slm_share=0.9)
    assert fitted_share(fits) >= 0.9 > fitted_share([strict_fit])
    trained_on = shared.nodes["classify"].trained_on
    assert trained_on["slm_share_target"] == 0.9 and trained_on["max_loss"] is None
    assert shared.nodes["classify"].run_threshold(None) == pytest.approx(fits[0].point.threshold)


def test_the_app_shadows_at_the_settings_rate_and_loads_the_graphs_scorers(tmp_path: Path) -> None:
    from tierflow.app import App
    from tierflow.settings import Settings

    settings = Settings(data_dir=tmp_path / "data", shadow_rate=1.0)
    StepScorers({"classify": margin_scorer()}).save(scorer_file(settings.scorers_dir(), "tickets"))
    with App(settings, tiers=tiers(SURE, "refund")) as app:
        kept = app.run_graph(graph(), {"text": "refund please"})
        (call, shadow) = calls(app.store, kept.run_id)
        assert call.scorer is not None and call.scorer["source"] == "calibrated"
        assert shadow.node == "classify:shadow" and len(app.store.labels(graph="tickets")) == 1
    off = Settings(data_dir=tmp_path / "data", shadow_rate=0.0)
    with App(off, tiers=tiers(SURE, "refund")) as app:
        again = app.run_graph(graph(), {"text": "refund please"})
        assert [c.node for c in calls(app.store, again.run_id)] == ["classify"]


def test_a_node_can_have_its_own_shadow_rate(store: TraceStore) -> None:
    context = {"shadow_rate": 1.0, "shadow_rates": {"classify": 0.0}}
    result = run_graph(graph(), {"text": "x"}, tiers=tiers(SURE, "refund"), store=store, context=context)
    assert [c.node for c in calls(store, result.run_id)] == ["classify"] and store.labels() == []
    sampled = 0
    for i in range(40):  # a share in between samples some of the outputs
        run = run_graph(
            graph(),
            {"text": f"t{i}"},
            tiers=tiers(SURE, "refund"),
            store=store,
            context={"shadow_rates": {"classify": 0.5}},
        )
        sampled += len(calls(store, run.run_id)) - 1
    assert 8 <= sampled <= 32 and len(store.labels()) == sampled


def test_the_shipped_priors_are_fitted_for_the_default_models_on_bfcl_train_items() -> None:
    from tierflow.agents.calibration import shipped_priors
    from tierflow.settings import Settings

    defaults = Settings()
    priors = shipped_priors()
    assert set(priors) == {"choose", "extract"}
    for kind, prior in priors.items():
        assert prior.kind == kind and prior.trained_on["source"] == "prior"
        assert prior.pair() == (defaults.slm_model, defaults.embedded_llm_model)
        assert "train split" in prior.trained_on["graph"] and prior.trained_on["items"] >= 100
        assert 0.0 < prior.strictest < prior.threshold(0.05) <= 1.0


def test_the_app_judges_an_uncalibrated_graph_by_the_shipped_priors(tmp_path: Path) -> None:
    from tierflow.app import App
    from tierflow.settings import Settings

    def default_pair(probabilities: dict[str, float], slm_says: str) -> Tiers:
        return tiers(probabilities, slm_says, names=("qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"))

    on = Settings(data_dir=tmp_path / "data", step_priors=True)
    with App(on, tiers=default_pair(UNSURE, "bug")) as app:
        doubted = app.run_graph(graph(), {"text": "refund please"})
        slm_call, llm_call = calls(app.store, doubted.run_id)
        assert slm_call.escalated and (slm_call.scorer or {})["source"] == "prior"
        assert (slm_call.scorer or {})["pair_matches"] and doubted.state["label"] == "refund"
    with App(on, tiers=default_pair(SURE, "refund")) as app:
        sure = app.run_graph(graph(), {"text": "refund please"})
        assert [c.tier for c in calls(app.store, sure.run_id)] == ["slm"]
    off = Settings(data_dir=tmp_path / "data", step_priors=False)
    with App(off, tiers=default_pair(UNSURE, "bug")) as app:
        alone = app.run_graph(graph(), {"text": "refund please"})
        (kept,) = calls(app.store, alone.run_id)
        assert kept.tier == "slm" and kept.scorer is None and alone.state["label"] == "bug"


def test_a_nodes_calibrated_scorer_comes_before_the_steps_built_in_judge(store: TraceStore) -> None:
    """The task graph's tool steps have a judge of their own (the shipped task score); once
    the user calibrates such a node for these models, the calibrated scorer judges it."""
    from tierflow import StepView, tiered_node
    from tierflow.agents.escalation import parse_model
    from tierflow.graphs.context import Judgement

    def classify(state: Ticket, scope: Any) -> dict[str, str]:
        keep = lambda value, completion: Judgement(0.0, 1.0)  # noqa: E731 - the built-in judge keeps it
        got = scope.ask(
            [{"role": "user", "content": state["text"]}],
            lambda completion: parse_model(_LabelModel)(completion).label,
            max_tokens=16,
            schema={"type": "object", "properties": {"label": {"type": "string", "enum": OPTIONS}}},
            judge=keep,
            view=StepView("choose", state["text"], tuple(OPTIONS), "label"),
        )
        return {"label": got.value}

    builder = StateGraph(Ticket, context_schema=TierContext)
    builder.add_node("classify", tiered_node(classify))
    builder.add_edge(START, "classify")
    compiled = builder.compile(name="tickets")
    judged_by = {}
    for name, scorers in (("judge", None), ("calibrated", StepScorers({"classify": margin_scorer()}))):
        result = run_graph(
            compiled, {"text": "hm"}, tiers=tiers(UNSURE, "bug"), store=store, context={"scorers": scorers}
        )
        judged_by[name] = calls(store, result.run_id)[0]
    assert not judged_by["judge"].escalated and judged_by["judge"].p_wrong == 0.0
    assert (
        judged_by["calibrated"].escalated and (judged_by["calibrated"].scorer or {})["source"] == "calibrated"
    )


def test_an_output_a_check_finds_wrong_escalates_unshadowed_and_is_kept_where_it_cannot(
    store: TraceStore,
) -> None:
    """``scope.ask(..., check=)``: a valid SLM output the check rejects goes to the LLM under
    tiered without a shadow call (the LLM answers it anyway), and is kept under slm (the
    step's answer carries the reason); an output the check passes is shadowed as before."""
    from tierflow import StepView, tiered_node
    from tierflow.agents.escalation import Rejected, parse_model

    def no_bugs(label: str, record: Any) -> Rejected | None:
        assert record.features is not None  # the check sees the output's signals
        return Rejected("schema_validation", "not a bug here") if label == "bug" else None

    def classify(state: Ticket, scope: Any) -> dict[str, str]:
        got = scope.ask(
            [{"role": "user", "content": state["text"]}],
            lambda completion: parse_model(_LabelModel)(completion).label,
            max_tokens=16,
            schema={"type": "object", "properties": {"label": {"type": "string", "enum": OPTIONS}}},
            view=StepView("choose", state["text"], tuple(OPTIONS), "label"),
            check=no_bugs,
        )
        return {"label": got.value}

    builder = StateGraph(Ticket, context_schema=TierContext)
    builder.add_node("classify", tiered_node(classify))
    builder.add_edge(START, "classify")
    compiled = builder.compile(name="tickets")
    shadowing = {"shadow_rate": 1.0, "scorers": StepScorers()}
    escalated = run_graph(compiled, {"text": "t"}, tiers=tiers(SURE, "bug"), store=store, context=shadowing)
    assert [(c.node, c.tier) for c in calls(store, escalated.run_id)] == [
        ("classify", "slm"),
        ("classify", "llm"),
    ]
    assert escalated.state["label"] == "refund" and calls(store, escalated.run_id)[0].escalated
    kept = run_graph(
        compiled, {"text": "t"}, tiers=tiers(SURE, "bug"), store=store, policy=TierPolicy(default="slm")
    )
    (alone,) = calls(store, kept.run_id)
    assert kept.state["label"] == "bug" and alone.error is None
    passed = run_graph(compiled, {"text": "t"}, tiers=tiers(SURE, "refund"), store=store, context=shadowing)
    assert [c.node for c in calls(store, passed.run_id)] == ["classify", "classify:shadow"]


class _LabelModel(BaseModel):
    label: str


def test_an_slm_output_is_compared_with_its_nodes_nearest_verified_output(tmp_path: Path) -> None:
    """The LLM's outputs (and SLM outputs the LLM agreed with) are kept per node in the
    memory; a later SLM output of that node on a near input says whether it agrees."""
    from tierflow.app import App
    from tierflow.settings import Settings

    def many(slm_says: str, llm_says: str = "refund") -> Tiers:
        return Tiers(
            ScriptedModel(
                tier="slm", name="tiny", by_node={"classify": [{"label": slm_says}] * 3}, choices=SURE
            ),
            ScriptedModel(tier="llm", name="big", by_node={"classify": [{"label": llm_says}] * 3}),
        )

    settings = Settings(data_dir=tmp_path / "data", shadow_rate=0.0)
    with App(settings, tiers=many("bug")) as app:
        first = app.run_graph(graph(), {"text": "I was charged twice for March"}, policy="slm")
        (alone,) = calls(app.store, first.run_id)
        assert alone.features and alone.features["has_past"] == 0.0  # nothing verified yet
        app.run_graph(graph(), {"text": "I was charged twice for March"}, policy="llm")
        disagrees = app.run_graph(graph(), {"text": "I was charged twice for March!"}, policy="slm")
        (call,) = calls(app.store, disagrees.run_id)
    assert call.features and call.features["has_past"] == 1.0 and call.features["past_similarity"] > 0.9
    assert call.features["past_agrees"] == 0.0  # the SLM says bug, the LLM said refund
    with App(settings, tiers=many("refund")) as app:  # the memory persists
        agrees = app.run_graph(graph(), {"text": "Charged twice in March, please refund"}, policy="slm")
        (call,) = calls(app.store, agrees.run_id)
    assert call.features and call.features["has_past"] == 1.0 and call.features["past_agrees"] == 1.0
    other = StateGraph(Ticket, context_schema=TierContext)
    other.add_node("classify", choose(OPTIONS, inputs="text", into="label"))
    other.add_edge(START, "classify")
    with App(settings, tiers=many("refund")) as app:  # another graph's node: nothing of its own
        elsewhere = app.run_graph(other.compile(name="other"), {"text": "I was charged twice"}, policy="slm")
        (call,) = calls(app.store, elsewhere.run_id)
    assert call.features and call.features["has_past"] == 0.0


def test_a_preset_named_by_string_keeps_the_settings_max_loss(tmp_path: Path) -> None:
    """``run_graph(policy="tiered")`` and ``--policy tiered`` run the preset with the
    settings' escalation thresholds, not the preset's defaults."""
    from tierflow.app import App
    from tierflow.settings import Settings

    settings = Settings(data_dir=tmp_path / "data", shadow_rate=0.0, policy=TierPolicy(max_loss=0.05))
    scorer = margin_scorer()
    assert scorer.threshold(0.05) != scorer.run_threshold(None)  # the preset's own would differ
    StepScorers({"classify": scorer}).save(scorer_file(settings.scorers_dir(), "tickets"))
    with App(settings, tiers=tiers(SURE, "refund")) as app:
        result = app.run_graph(graph(), {"text": "refund please"}, policy="tiered")
        (call, *_) = calls(app.store, result.run_id)
    assert call.scorer is not None and call.scorer["threshold"] == pytest.approx(
        scorer.threshold(0.05), abs=1e-4
    )
    assert TierPolicy(max_loss=0.05, nodes={"a": "llm"}).as_preset("slm") == TierPolicy(
        default="slm", max_loss=0.05
    )


def _labels_with_signals(n: int, wrong: Any, seed: int = 7) -> list[Any]:
    """``n`` choose labels with random signals; ``wrong(features, rng)`` says which are wrong."""
    import random
    from datetime import UTC, datetime

    from tierflow.records import StoredLabel

    rng = random.Random(seed)
    labels = []
    for i in range(n):
        features = {name: rng.gauss(0.0, 1.0) for name in FEATURES["choose"]}
        labels.append(
            StoredLabel(
                f"run{i}", i, "tickets", "classify", "choose", "tiny", "big",
                not wrong(features, rng), True, "gold", features, None, datetime.now(UTC),
            )
        )  # fmt: skip
    return labels


def _prior(coef: dict[str, float], intercept: float = 0.0) -> StepScorer:
    from tierflow.agents.judging import Logistic

    names = FEATURES["choose"]
    model = Logistic(
        names, (0.0,) * len(names), (1.0,) * len(names), tuple(coef.get(n, 0.0) for n in names), intercept
    )
    return StepScorer("choose", model, (), {"source": "prior", "slm": "other", "llm": "pair"})


def test_recalibrate_rescales_a_score_to_the_labels_rate_keeping_its_ranking() -> None:
    from tierflow.agents.judging import recalibrate

    prior = _prior({"margin": -3.0}, intercept=2.0).model  # far too sure that outputs are wrong
    labels = _labels_with_signals(200, lambda f, rng: rng.random() < 1 / (1 + 2.718 ** (f["margin"] + 1.5)))
    rows, wrong = [label.features for label in labels], [not label.slm_right for label in labels]
    rescaled = recalibrate(prior, rows, wrong)
    ranked = sorted(rows, key=prior.logit)
    assert sorted(rows, key=rescaled.logit) == ranked  # the same order
    mean_p = sum(rescaled.p_wrong(row) for row in rows) / len(rows)
    assert mean_p == pytest.approx(sum(wrong) / len(wrong), abs=0.03)
    assert sum(prior.p_wrong(row) for row in rows) / len(rows) > mean_p + 0.2
    backwards = recalibrate(_prior({"margin": 3.0}).model, rows, wrong)  # ranks them the wrong way
    assert backwards.coef == (0.0,) * len(backwards.coef)


def test_calibrate_keeps_the_prior_when_it_predicts_held_out_labels_better(store: TraceStore) -> None:
    """Forty labels that follow the prior's signal: the prior rescaled wins on out-of-fold
    log-loss over a fit of a dozen weights; labels that follow a signal the prior ignores:
    the refit wins. Either way the scorer records both losses and the method."""
    from tierflow.agents.calibration import fit_scorers

    prior = _prior({"margin": -2.0})
    follows = _labels_with_signals(40, lambda f, rng: f["margin"] < -0.3)
    scorers, (fit,) = fit_scorers(follows, graph="tickets", slm="tiny", llm="big", priors={"choose": prior})
    assert fit.method == "prior" and fit.log_loss["prior"] < fit.log_loss["refit"]
    stored = scorers.nodes["classify"]
    assert stored.trained_on["method"] == "prior" and stored.trained_on["slm"] == "tiny"
    assert stored.model.coef[FEATURES["choose"].index("margin")] < 0  # the prior's ranking, rescaled
    other = _labels_with_signals(120, lambda f, rng: f["entropy"] > 0.4, seed=3)
    _, (refit,) = fit_scorers(other, graph="tickets", slm="tiny", llm="big", priors={"choose": prior})
    assert refit.method == "refit" and refit.log_loss["refit"] < refit.log_loss["prior"]
    _, (alone,) = fit_scorers(follows, graph="tickets", slm="tiny", llm="big")
    assert alone.method == "refit" and set(alone.log_loss) == {"refit"}
