"""The signals any tiered step computes of the SLM's output, and the fitting of a score and
its thresholds from labelled outputs (pure functions: no model is loaded)."""

from __future__ import annotations

import math
import random

import pytest
from pydantic import BaseModel
from tierflow.agents.judging import (
    FEATURES,
    Labelled,
    StepView,
    choose_thresholds,
    fit_logistic,
    grouped_folds,
    same_output,
    step_features,
)
from tierflow.records import ChoiceProbabilities, TokenSignals
from tierflow.tools.schema import model_from_schema


def test_every_kind_computes_exactly_its_named_signals() -> None:
    views = {
        "choose": (StepView("choose", "a refund for order 12", ("refund", "bug")), "refund"),
        "extract": (StepView("extract", "Send 12 to Ann"), {"to": "Ann", "amount": 12}),
        "text": (StepView("text", "Mars is red."), "Mars is red."),
    }
    for kind, (view, value) in views.items():
        features = step_features(view, value, str(value), max_tokens=64)
        assert tuple(features) == FEATURES[kind]
        assert all(math.isfinite(v) for v in features.values())


def test_choose_signals_tell_a_sure_choice_from_an_unsure_one() -> None:
    view = StepView("choose", "Customer asks for a refund of a double charge", ("refund", "bug", "other"))
    sure = ChoiceProbabilities({"refund": 0.97, "bug": 0.02, "other": 0.01}, "refund", 1.0)
    unsure = ChoiceProbabilities({"bug": 0.45, "refund": 0.40, "other": 0.15}, "bug", 1.0)
    confident = step_features(view, "refund", "", max_tokens=8, probabilities=sure)
    doubtful = step_features(view, "bug", "", max_tokens=8, probabilities=unsure)
    assert confident["p_choice"] == pytest.approx(0.97) and confident["margin"] == pytest.approx(0.95)
    assert doubtful["margin"] == pytest.approx(0.05) and doubtful["entropy"] > confident["entropy"]
    assert confident["choice_in_source"] == 1.0 and confident["choice_is_best_in_source"] == 1.0
    assert doubtful["choice_in_source"] == 0.0 and doubtful["best_other_in_source"] == 1.0


class Transfer(BaseModel):
    recipient: str
    amount: float
    note: str = ""


def test_extract_signals_ground_each_value_in_the_input() -> None:
    view = StepView("extract", "Please send 250 euros to Ann Lee for the March rent.")
    signals = TokenSignals(tokens=6, min_logprob=-2.5, mean_logprob=-0.4, forced_tokens=1)
    right = step_features(view, Transfer(recipient="Ann Lee", amount=250), "", max_tokens=64, signals=signals)
    wrong = step_features(view, Transfer(recipient="Bob", amount=520, note="rent"), "", max_tokens=64)
    assert right["strings_grounded_share"] == 1.0 and right["numbers_ungrounded"] == 0.0
    assert right["has_token_signals"] == 1.0 and right["value_min_logprob"] == -2.5
    assert wrong["strings_ungrounded"] == 1.0 and wrong["numbers_ungrounded"] == 1.0
    assert wrong["has_token_signals"] == 0.0 and wrong["source_numbers_unused"] == 1.0


def test_text_signals_catch_copies_truncation_and_facts_from_nowhere() -> None:
    source = "Mars is often called the Red Planet. It is 228 million km from the Sun."
    copied = step_features(StepView("text", source), source, source, max_tokens=64, completion_tokens=20)
    wrong = step_features(
        StepView("text", source),
        "The Red Planet is known as the Moon, 35 km away.",
        "",
        max_tokens=64,
        completion_tokens=64,
        finish_reason="length",
    )
    assert copied["copied_share"] == 1.0 and copied["numbers_ungrounded"] == 0.0
    assert copied["names_ungrounded"] == 0.0 and copied["truncated"] == 0.0
    assert wrong["truncated"] == 1.0 and wrong["budget_share"] == 1.0
    assert wrong["numbers_ungrounded"] == 1.0 and wrong["names_ungrounded"] == 1.0  # "Moon"
    assert step_features(StepView("text", source), "", "", max_tokens=64)["empty"] == 1.0


def test_a_csv_lines_values_are_read_apart_when_an_answer_is_judged() -> None:
    # "bolts,340,0.12" states 340 and 0.12; read as 3400.12, an answer quoting 340 would
    # count as a number from nowhere.
    source = "part,count,price\nbolts,340,0.12\nnuts,1,200,0.05"
    answer = "There are 340 bolts at 0.12 each."
    features = step_features(StepView("text", source), answer, "", max_tokens=64, completion_tokens=12)
    assert features["numbers_ungrounded"] == 0.0
    invented = step_features(StepView("text", source), "There are 3400 bolts.", "", max_tokens=64)
    assert invented["numbers_ungrounded"] == 1.0


def test_the_fit_learns_which_way_a_signal_points() -> None:
    rng = random.Random(7)
    rows, wrong = [], []
    for _ in range(400):
        margin = rng.random()
        rows.append({"margin": margin, "noise": rng.random()})
        wrong.append(rng.random() < 0.9 - 0.8 * margin)  # a small margin: mostly wrong
    model = fit_logistic(rows, wrong, ("margin", "noise"))
    assert (
        model.p_wrong({"margin": 0.05, "noise": 0.5})
        > 0.7
        > 0.3
        > model.p_wrong({"margin": 0.95, "noise": 0.5})
    )
    assert abs(model.coef[1]) < abs(model.coef[0]) / 4
    again = type(model).from_json(model.to_json())
    assert again.p_wrong({"margin": 0.3}) == pytest.approx(model.p_wrong({"margin": 0.3}))


def test_a_fit_on_one_class_is_the_constant_rate() -> None:
    model = fit_logistic([{"x": 1.0}, {"x": 2.0}, {"x": 3.0}], [False, False, False], ("x",))
    assert model.coef == (0.0,)
    assert model.p_wrong({"x": 100.0}) == pytest.approx(0.5 / 4)


def test_thresholds_keep_the_most_outputs_the_stated_loss_allows() -> None:
    items = [
        Labelled(0.1, slm_right=True),
        Labelled(0.2, slm_right=True),
        Labelled(0.3, slm_right=False),  # kept at 0.3 or above: 1 of 10 lost
        Labelled(0.4, slm_right=True),
        Labelled(0.5, slm_right=True),
        Labelled(0.6, slm_right=False),  # kept at 0.6 or above: 2 of 10 lost
        Labelled(0.7, slm_right=True),
        Labelled(0.8, slm_right=False, llm_right=False),  # both wrong: keeping it costs nothing
        Labelled(0.9, slm_right=False),
        Labelled(0.95, slm_right=True, llm_right=False),  # the SLM right where the LLM is not
    ]
    strict, some, more = choose_thresholds(items, [0.0, 0.1, 0.2])
    assert (strict.threshold, strict.slm_share, strict.loss) == (0.2, 0.2, 0.0)
    assert (some.threshold, some.slm_share) == (0.5, 0.5) and some.loss == pytest.approx(0.1)
    assert more.threshold == 1.0 and more.slm_share == 1.0 and more.loss == pytest.approx(0.2)
    assert more.loss_low < more.loss < more.loss_high
    (nothing,) = choose_thresholds([], [0.05])
    assert nothing.threshold == 0.0 and nothing.slm_share == 0.0


def test_folds_keep_a_group_together() -> None:
    groups = [f"live_multiple_{n // 3}" for n in range(60)]
    folds = grouped_folds(groups, 5)
    for group in set(groups):
        assert len({fold for fold, g in zip(folds, groups, strict=True) if g == group}) == 1
    assert len(set(folds)) > 1


def test_outputs_are_compared_field_by_field_leaving_free_text_and_unnamed_fields_out() -> None:
    slm = {
        "product": "Kanban board",
        "severity": "high",
        "summary": "Cards snap back to their old column on drop.",
    }
    llm = {
        "product": "kanban  board",
        "severity": "high",
        "summary": "Dragging a card does nothing: it returns at once.",
    }
    assert same_output("extract", slm, llm)  # the summaries are free text: worded apart
    assert not same_output("extract", {**slm, "severity": "low"}, llm)
    assert same_output("extract", slm, {"severity": "high"})  # a gold value of one field
    assert not same_output("extract", slm, {"severity": "medium"})
    assert not same_output("extract", {**slm, "summary": "crash"}, llm)  # short: compared
    assert same_output("choose", " Bug", "bug") and not same_output("choose", "bug", "spam")
    assert same_output("text", "a", "a") is None


def test_an_empty_optional_field_means_its_default() -> None:
    # A tier that leaves an optional argument out and one that writes its default make the
    # same call; the comparison must not count that as a disagreement.
    weather = model_from_schema(
        "weather",
        {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "default": "fahrenheit"}},
            "required": ["city"],
        },
    )
    written = weather.model_validate({"city": "New York, NY", "unit": "fahrenheit"})
    left_out = weather.model_validate({"city": "New York, NY", "unit": None})
    assert same_output("extract", written, left_out)
    assert same_output("extract", written, {"city": "new york,  ny"})  # a stored dict, read as the model
    assert not same_output(
        "extract", weather.model_validate({"city": "New York, NY", "unit": "celsius"}), left_out
    )
