"""``tierflow eval routing``'s arithmetic on made-up items: routing, threshold calibration for
a max_loss, the curve against random and perfect routing, the splits and the reserved ids."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tierflow.agents.judging import FEATURES
from tierflow.agents.scoring import ARGS_FEATURES, SELECT_FEATURES
from tierflow.evals.bfcl import is_reserved, load_category, reserved_digests
from tierflow.evals.routing import (
    FOLDS,
    Example,
    Scored,
    _perfect_at,
    calibrate,
    curve,
    fit_scorer,
    fold_of,
    out_of_fold,
    route,
)
from tierflow.evals.routing_data import _jobs, read_runs, split_of


def item(
    slm: bool, llm: bool | None, select: float, args: float | None = None, split: str = "calib"
) -> Scored:
    example = Example("x", "live_simple", split, args is None, (), None, slm, llm)
    return Scored(example, select, args)


# Four kinds of items: both right, only the LLM right, only the SLM right, both wrong.
ITEMS = [
    *[item(True, True, 0.1, 0.1) for _ in range(4)],
    *[item(False, True, 0.2, 0.9) for _ in range(4)],  # the score sees these
    *[item(True, False, 0.1, 0.2) for _ in range(1)],
    *[item(False, False, 0.8, None) for _ in range(1)],
]


def test_a_decision_stays_on_the_slm_only_below_both_thresholds() -> None:
    assert route(item(True, True, 0.3, 0.3), 0.5, 0.5)
    assert not route(item(True, True, 0.6, 0.3), 0.5, 0.5)
    assert not route(item(True, True, 0.3, 0.6), 0.5, 0.5)
    assert route(item(True, True, 0.3, None), 0.5, 0.0)  # no call written: only the choice is judged


def test_calibration_keeps_the_most_on_the_slm_within_max_loss() -> None:
    thresholds = calibrate(ITEMS, max_losses=(0.0, 0.5))
    strict = thresholds[0.0]
    kept = [route(i, *strict) for i in ITEMS]
    accuracy = (
        sum(
            i.example.slm_correct if k else bool(i.example.llm_correct)
            for i, k in zip(ITEMS, kept, strict=True)
        )
        / 10
    )
    assert accuracy >= 0.8  # all-LLM accuracy on these items is 8/10
    assert sum(kept) == 6  # both-right, only-SLM-right and both-wrong stay; what the LLM fixes escalates
    loose = thresholds[0.5]
    assert sum(route(i, *loose) for i in ITEMS) == 10  # a loss of 0.5 allows everything on the SLM


def test_the_curve_runs_from_all_llm_to_all_slm_and_brackets_random_and_perfect() -> None:
    points = curve(ITEMS)
    assert points[0]["slm_share"] == 0.0 and points[0]["accuracy"] == pytest.approx(0.8)
    assert points[-1]["slm_share"] == 1.0 and points[-1]["accuracy"] == pytest.approx(0.5)
    for point in points:
        assert point["perfect"] >= point["accuracy"] - 1e-9
        assert point["perfect"] >= point["random"] - 1e-9


def test_the_perfect_router_escalates_only_what_the_llm_fixes() -> None:
    assert _perfect_at(ITEMS, 0.6) == pytest.approx(0.9)  # 6 local: both-right, only-SLM, both-wrong
    assert _perfect_at(ITEMS, 1.0) == pytest.approx(0.5)


def test_splits_are_fixed_by_id_and_both_tiers_run_every_item() -> None:
    cases = load_category("live_simple")[:40]
    assert [split_of(c.id) for c in cases] == [split_of(c.id) for c in cases]
    assert {split_of(c.id) for c in cases} == {"train", "calib", "test"}
    jobs = _jobs(cases, ("slm", "llm"))
    assert len([j for j in jobs if j[1] == "slm"]) == len([j for j in jobs if j[1] == "llm"]) == len(cases)
    phases = [split_of(case.id) == "train" for case, _ in jobs]
    assert phases == sorted(phases)  # paired held-out items first: a partial collection can report


def development_examples(n: int) -> list[Example]:
    """Items whose one feature says "wrong" when high, with every fifth label flipped."""
    examples = []
    for number in range(n):
        wrong = number % 2 == 0
        label = wrong != (number % 5 == 0)
        value = 1.0 if wrong else 0.0
        select = tuple(value if name == "p_none" else 0.0 for name in SELECT_FEATURES)
        args = tuple(value if name == "p_none" else 0.0 for name in ARGS_FEATURES)
        example = Example(f"item-{number}", "live_simple", "train", False, select, args, not label, True)
        examples.append(example)
    return examples


def test_thresholds_are_chosen_on_scores_from_fits_that_never_saw_the_item() -> None:
    examples = development_examples(120)
    folded = out_of_fold(examples)
    assert sorted(s.example.id for s in folded) == sorted(e.id for e in examples)  # each once
    assert {fold_of(e.id) for e in examples} == set(range(FOLDS))
    for fold in range(FOLDS):
        seen = [e for e in examples if fold_of(e.id) != fold]
        refit = fit_scorer(seen)["select_tool"]
        for item in (s for s in folded if fold_of(s.example.id) == fold):
            assert item.select == pytest.approx(refit.p_wrong(item.example.select))
    # The signal is learned out of fold too: high-feature items score higher.
    high = [s.select for s in folded if s.example.select[SELECT_FEATURES.index("p_none")] == 1.0]
    low = [s.select for s in folded if s.example.select[SELECT_FEATURES.index("p_none")] == 0.0]
    assert min(high) > max(low)


def test_no_reserved_item_is_ever_loaded_or_in_the_runs_file() -> None:
    assert len(reserved_digests()) == 300
    every = [json.loads(line) for line in load_raw("live_simple")]
    assert sum(is_reserved(item["id"]) for item in every) == 100  # the raw file holds them
    for category in ("live_simple", "live_multiple", "live_irrelevance"):
        assert not any(is_reserved(case.id) for case in load_category(category))
    assert not any(is_reserved(run["id"]) for run in read_runs())


def load_raw(category: str) -> list[str]:
    from tierflow.evals.bfcl import bfcl_data_dir

    return (bfcl_data_dir() / f"BFCL_v4_{category}.json").read_text(encoding="utf-8").splitlines()


def test_runs_file_lines_are_complete(tmp_path: Path) -> None:
    for run in read_runs()[:50]:
        assert {"id", "category", "split", "policy", "correct", "calls"} <= set(run)
        assert run["split"] == split_of(run["id"])
        json.dumps(run)


def test_live_items_of_one_source_group_share_their_split_and_fold() -> None:
    from tierflow.evals.routing_data import source_group

    assert source_group("live_multiple_12-4-0") == source_group("live_irrelevance_300-4-2") == "live:4"
    assert source_group("simple_python_7") == "simple_python_7"
    groups: dict[str, set[str]] = {}
    for run in read_runs():
        groups.setdefault(source_group(run["id"]), set()).add(split_of(run["id"]))
    assert all(len(splits) == 1 for splits in groups.values())
    assert len({fold_of("live_simple_1-4-0"), fold_of("live_multiple_9-4-1")}) == 1


def test_the_kit_priors_learn_from_train_items_only_as_choose_and_extract_outputs() -> None:
    from tierflow.evals.priors import prior_labels
    from tierflow.evals.routing_data import routing_cases

    cases = {case.id: case for case in routing_cases()}
    labels = prior_labels(read_runs(), cases)
    ids = {label.detail for label in labels}
    assert ids and all(split_of(str(i)) == "train" and not is_reserved(str(i)) for i in ids)
    choose = [label for label in labels if label.kind == "choose"]
    extract = [label for label in labels if label.kind == "extract"]
    assert len(choose) == len(ids) and 0 < len(extract) < len(choose)
    assert {label.node for label in labels} == {"choose", "extract"}
    assert any(not label.slm_right for label in choose) and any(label.slm_right for label in choose)
    # an output is labelled as the kit's signals see it at run time
    assert set(choose[0].features) == set(FEATURES["choose"]) and set(extract[0].features) == set(
        FEATURES["extract"]
    )
