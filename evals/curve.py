"""Confidence-based escalation: where to set ``TierPolicy.min_confidence``.

Input: per-item results of the ``slm`` and ``llm`` policies on the same BFCL items (the
suite files ``tierflow eval tools --policy slm --policy llm`` writes). For a threshold
``t`` an item stays on the SLM when the SLM's confidence in its tool choice is at least
``t`` and goes to the LLM otherwise; its outcome is then the one that tier really had on
that item. Items are split by a hash of their id into a calibration half, where the
threshold is chosen, and a test half, where it is reported, with the all-SLM and all-LLM
points and random routing at the same SLM share (expected accuracy
``share * acc_slm + (1 - share) * acc_llm``).

This routes whole items by the selection's confidence; the ``tiered`` policy at the chosen
threshold escalates only the selection node, and its own run is reported beside the curve.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tierflow.errors import TierflowError
from tierflow.evals.report import markdown_table, read_results
from tierflow.results import fmt

__all__ = [
    "Paired",
    "paired_items",
    "split",
    "curve",
    "calibrate",
    "confidence_report",
    "confidence_markdown",
    "THRESHOLDS",
]

THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(0, 21))
MAX_ACCURACY_LOSS = 0.02
"""Calibration target: the lowest threshold whose accuracy is within this of all-LLM."""


@dataclass(frozen=True)
class Paired:
    id: str
    suite: str
    confidence: float  # the SLM's confidence in its choice; 0 when it gave none
    slm_correct: bool
    llm_correct: bool


def paired_items(paths: Sequence[Path]) -> tuple[list[Paired], list[dict[str, Any]]]:
    """The items both policies ran, and where they came from: each file's slm and llm
    commit and models (each file is read once)."""
    items: list[Paired] = []
    sources: list[dict[str, Any]] = []
    for path in paths:
        data = read_results(path)
        policies = data.get("policies", {})
        if "slm" not in policies or "llm" not in policies:
            raise TierflowError(
                f"{path} lacks the slm or llm policy's results",
                hint="Run `tierflow eval tools --suite ... --policy slm --policy llm` first.",
            )
        runs = {}
        for label in ("slm", "llm"):
            env = policies[label].get("environment", {})
            runs[label] = {key: env.get(key) for key in ("created_at", "git_commit", "git_dirty", "models")}
        sources.append({"file": path.name, "suite": data.get("suite"), **runs})
        llm = {item["id"]: item for item in policies["llm"]["items"]}
        for item in policies["slm"]["items"]:
            if item["id"] in llm:
                items.append(
                    Paired(
                        id=item["id"],
                        suite=str(data.get("suite")),
                        confidence=float(item.get("select_confidence") or 0.0),
                        slm_correct=bool(item["correct"]),
                        llm_correct=bool(llm[item["id"]]["correct"]),
                    )
                )
    return items, sources


def split(items: Sequence[Paired]) -> tuple[list[Paired], list[Paired]]:
    """(calibration, test): a stable half each, by a hash of the item id."""
    calibration: list[Paired] = []
    test: list[Paired] = []
    for item in items:
        digest = hashlib.sha256(f"{item.suite}/{item.id}".encode()).digest()
        (calibration if digest[0] % 2 == 0 else test).append(item)
    return calibration, test


def _point(items: Sequence[Paired], threshold: float) -> dict[str, float]:
    kept = [item.confidence >= threshold for item in items]
    correct = [
        (item.slm_correct if keep else item.llm_correct) for item, keep in zip(items, kept, strict=True)
    ]
    share = sum(kept) / len(items)
    acc_slm = sum(item.slm_correct for item in items) / len(items)
    acc_llm = sum(item.llm_correct for item in items) / len(items)
    return {
        "threshold": threshold,
        "slm_share": share,
        "accuracy": sum(correct) / len(items),
        "random_routing_accuracy": share * acc_slm + (1 - share) * acc_llm,
    }


def curve(items: Sequence[Paired], thresholds: Sequence[float] = THRESHOLDS) -> list[dict[str, float]]:
    if not items:
        raise TierflowError("no paired items to draw a curve from")
    return [_point(items, t) for t in thresholds]


def calibrate(items: Sequence[Paired], thresholds: Sequence[float] = THRESHOLDS) -> float:
    """The lowest threshold within ``MAX_ACCURACY_LOSS`` of all-LLM accuracy on ``items``,
    or the most accurate one if none is."""
    points = curve(items, thresholds)
    acc_llm = sum(item.llm_correct for item in items) / len(items)
    target = acc_llm - MAX_ACCURACY_LOSS
    good = [p for p in points if p["accuracy"] >= target]
    best = min(good, key=lambda p: p["threshold"]) if good else max(points, key=lambda p: p["accuracy"])
    return best["threshold"]


def confidence_report(paths: Sequence[Path]) -> dict[str, Any]:
    """The calibrated threshold, its held-out result, and the curves (the caller adds the
    environment of this computation)."""
    items, sources = paired_items(paths)
    calibration, test = split(items)
    threshold = calibrate(calibration)
    chosen = _point(test, threshold)
    per_suite = {}
    for suite in sorted({item.suite for item in items}):
        subset = [item for item in test if item.suite == suite]
        if subset:
            per_suite[suite] = {**_point(subset, threshold), "items": len(subset)}
    return {
        "sources": sources,
        "items": {"calibration": len(calibration), "test": len(test)},
        "threshold": threshold,
        "max_accuracy_loss": MAX_ACCURACY_LOSS,
        "test": {
            "at_threshold": chosen,
            "all_slm": _point(test, 0.0),
            "all_llm": _point(test, 1.01),
            "per_suite": per_suite,
        },
        "curve_calibration": curve(calibration),
        "curve_test": curve(test),
    }


def confidence_markdown(report: dict[str, Any]) -> str:
    t = report["test"]
    rows = [
        ["all SLM", "–", fmt(1.0, "%"), fmt(t["all_slm"]["accuracy"], "%"), "–"],
        [
            "confidence routing",
            f"{report['threshold']:.2f}",
            fmt(t["at_threshold"]["slm_share"], "%"),
            fmt(t["at_threshold"]["accuracy"], "%"),
            fmt(t["at_threshold"]["random_routing_accuracy"], "%"),
        ],
        ["all LLM", "–", fmt(0.0, "%"), fmt(t["all_llm"]["accuracy"], "%"), "–"],
    ]
    curve_rows = [
        [
            f"{p['threshold']:.2f}",
            fmt(p["slm_share"], "%"),
            fmt(p["accuracy"], "%"),
            fmt(p["random_routing_accuracy"], "%"),
        ]
        for p in report["curve_test"]
    ]
    return (
        "# Confidence-based escalation\n\n"
        f"Threshold calibrated on {report['items']['calibration']} items (lowest threshold within "
        f"{100 * report['max_accuracy_loss']:.0f} points of all-LLM accuracy), reported on "
        f"{report['items']['test']} other items.\n\n"
        + markdown_table(
            ["routing", "threshold", "SLM share", "accuracy", "random routing, same share"], rows
        )
        + "\n## Curve on the test half\n\n"
        + markdown_table(["threshold", "SLM share", "accuracy", "random routing"], curve_rows)
    )
