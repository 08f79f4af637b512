"""Training, calibrating and reporting the escalation score on paired SLM/LLM runs.

The runs file (``evals/routing_data.py``) holds, per BFCL item, the SLM's decision with its
signals and whether BFCL's checker accepted it, and the LLM's verdict on the same item.
From it:

* ``fit_scorer``: a logistic regression per node (select_tool, extract_args) for "the SLM's
  decision is wrong", fitted on the development splits (train and calib);
* ``calibrate``: per node, the thresholds that keep the most decisions on the SLM with an
  accuracy at most ``max_loss`` below the LLM's, chosen on the development items' out-of-fold
  scores (each scored by a fit that did not see it), so no item is both fitted and judged;
* ``routing_report``: on the test split, per node AUROC, the SLM-share/accuracy curve of the
  score against random routing and the perfect router, and the policy at each max_loss.

Routing replays what the ``tiered`` task graph does: the SLM chooses; a choice scored above
the select_tool threshold goes to the LLM, which then decides the whole call; otherwise the
SLM writes the arguments, and a call scored above the extract_args threshold goes to the LLM
whole. The LLM's decision is the one its own run made on the same prompts.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from tierflow.agents.scoring import (
    ARGS_FEATURES,
    SELECT_FEATURES,
    EscalationScorer,
    NodeScorer,
    args_features,
    select_features,
    tool_line,
)
from tierflow.agents.signals import TokenSignals
from tierflow.errors import TierflowError
from tierflow.evals.bfcl import Case, registry_for, request_text
from tierflow.evals.routing_data import LIVE, RUNS_FILE, read_runs, source_group
from tierflow.graphs.judging import tool_texts

__all__ = [
    "DEVELOPMENT",
    "FOLDS",
    "fold_of",
    "out_of_fold",
    "MAX_LOSSES",
    "Example",
    "examples_from_runs",
    "fit_scorer",
    "route",
    "routing_report",
    "routing_markdown",
    "score_runs",
    "train_scorer",
]

MAX_LOSSES = (0.0, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2)
"""The accuracy losses (against all-LLM) a threshold is calibrated for."""


@dataclass(frozen=True)
class Example:
    """One item: the SLM decision's features and verdict, and the LLM's verdict if run."""

    id: str
    category: str
    split: str
    chose_none: bool
    select: tuple[float, ...]
    args: tuple[float, ...] | None  # None when the SLM chose no tool
    slm_correct: bool
    llm_correct: bool | None


def _call(run: Mapping[str, Any], node: str) -> Mapping[str, Any] | None:
    return next((c for c in run["calls"] if c["node"] == node and c["tier"] == "slm"), None)


Relevance = Callable[[str, Sequence[str]], list[float]]


def example_features(
    case: Case, run: Mapping[str, Any], relevance: Relevance
) -> tuple[bool, list[float], list[float] | None]:
    """The features the tiered graph computes at run time, from a stored SLM run."""
    request, tools = request_text(case), tool_texts(list(registry_for(case)))
    select_call = _call(run, "select_tool")
    parsed = (select_call or {}).get("parsed") or {}
    choice = str(parsed.get("tool") or "none")
    similarities = relevance(request, [tool_line(tool) for tool in tools])
    select = select_features(request, tools, choice, (select_call or {}).get("choice"), similarities)
    if choice == "none":
        return True, select, None
    tool = next((t for t in tools if t.name == choice), None)
    args_call = _call(run, "extract_args")
    if tool is None or args_call is None:
        return False, select, args_features(request, tools[0], None, None, select)
    stored = args_call.get("signals")
    signals = TokenSignals(**stored) if stored else None
    arguments = args_call.get("parsed") if isinstance(args_call.get("parsed"), dict) else None
    return False, select, args_features(request, tool, arguments, signals, select)


def examples_from_runs(
    runs: Sequence[Mapping[str, Any]], cases: Mapping[str, Case], relevance: Relevance, policy: str = "slm"
) -> list[Example]:
    """The SLM runs of ``policy`` (``slm``, or ``slm_memory`` with a warm memory), paired
    with the LLM's verdicts where the LLM ran."""
    llm = {run["id"]: bool(run["correct"]) for run in runs if run["policy"] == "llm"}
    examples = []
    for run in runs:
        if run["policy"] != policy or run["id"] not in cases:
            continue
        none, select, args = example_features(cases[run["id"]], run, relevance)
        examples.append(
            Example(
                id=run["id"],
                category=run["category"],
                split=run["split"],
                chose_none=none,
                select=tuple(select),
                args=tuple(args) if args is not None else None,
                slm_correct=bool(run["correct"]),
                llm_correct=llm.get(run["id"]),
            )
        )
    return examples


# Fitting ------------------------------------------------------------------------------
def _fit(rows: Sequence[Sequence[float]], wrong: Sequence[bool], features: tuple[str, ...]) -> NodeScorer:
    from sklearn.linear_model import LogisticRegression

    x = np.asarray(rows, dtype=float)
    y = np.asarray(wrong, dtype=int)
    if len(set(y.tolist())) < 2:
        raise TierflowError(
            "the training split has only right or only wrong SLM decisions: nothing to learn",
            hint="Collect more runs: `tierflow eval routing --collect`.",
        )
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale == 0] = 1.0
    model = LogisticRegression(C=0.5, max_iter=2000).fit((x - mean) / scale, y)
    return NodeScorer(
        features=features,
        mean=tuple(float(v) for v in mean),
        scale=tuple(float(v) for v in scale),
        coef=tuple(float(v) for v in model.coef_[0]),
        intercept=float(model.intercept_[0]),
        thresholds=((0.0, 0.5),),
    )


DEVELOPMENT = ("train", "calib")
"""The splits the score is fitted and its thresholds chosen on; ``test`` is only reported."""

FOLDS = 5


def _development(examples: Sequence[Example]) -> list[Example]:
    return [e for e in examples if e.split in DEVELOPMENT]


def fit_scorer(examples: Sequence[Example]) -> dict[str, NodeScorer]:
    """Per node, a scorer of "the SLM's decision is wrong" fitted on ``examples``, with the
    "none" gate learned on the same items."""
    with_args = [e for e in examples if e.args is not None]
    select = _fit([e.select for e in examples], [not e.slm_correct for e in examples], SELECT_FEATURES)
    return {
        "select_tool": replace(select, none_gate=fit_none_gate(examples)),
        "extract_args": _fit(
            [e.args for e in with_args if e.args], [not e.slm_correct for e in with_args], ARGS_FEATURES
        ),
    }


def fold_of(case_id: str, folds: int = FOLDS) -> int:
    """A fixed fold per item's source group (siblings never sit on both sides of a fit),
    independent of the train/calib/test split's hash."""
    return int(hashlib.sha256(f"fold:{source_group(case_id)}".encode()).hexdigest(), 16) % folds


def out_of_fold(examples: Sequence[Example], folds: int = FOLDS) -> list[Scored]:
    """Every example scored by a scorer fitted without its fold (cross-fitting): scores as
    honest as a held-out split's, on every item, so thresholds are chosen on all of them."""
    scored: list[Scored] = []
    for fold in range(folds):
        held = [e for e in examples if fold_of(e.id, folds) == fold]
        if held:
            scored += score(held, fit_scorer([e for e in examples if fold_of(e.id, folds) != fold]))
    return scored


# Routing ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Scored:
    example: Example
    select: float  # P(wrong) at select_tool
    args: float | None  # P(wrong) at extract_args, when the SLM chose a tool
    none_confirmed: bool = True  # a "none" the relevance gate confirms (always True for a tool)


def score(examples: Sequence[Example], nodes: Mapping[str, NodeScorer]) -> list[Scored]:
    select = nodes["select_tool"]
    return [
        Scored(
            e,
            select.p_wrong(e.select),
            nodes["extract_args"].p_wrong(e.args) if e.args is not None else None,
            not e.chose_none or select.none_confirmed(e.select),
        )
        for e in examples
    ]


def fit_none_gate(examples: Sequence[Example]) -> float:
    """The tool-similarity gate under which the SLM's "none" stands: the one that accepts
    the most more right "none" answers than wrong ones among ``examples``."""
    index = SELECT_FEATURES.index("max_similarity")
    nones = [e for e in examples if e.chose_none]
    gates = [round(g, 2) for g in np.linspace(0.1, 0.9, 81)]

    def net(gate: float) -> int:
        return sum((1 if e.slm_correct else -1) for e in nones if e.select[index] < gate)

    return float(max(gates, key=lambda gate: (net(gate), -gate)))


def route(item: Scored, select_threshold: float, args_threshold: float) -> bool:
    """Does the decision stay on the SLM?"""
    if item.select > select_threshold or not item.none_confirmed:
        return False
    return item.args is None or item.args <= args_threshold


def _router(select_threshold: float, args_threshold: float) -> Callable[[Scored], bool]:
    return lambda item: route(item, select_threshold, args_threshold)


def _below(threshold: float) -> Callable[[Scored], bool]:
    return lambda item: _decision_score(item) <= threshold


def _outcome(items: Sequence[Scored], keep: Callable[[Scored], bool]) -> tuple[float, float]:
    """(accuracy, SLM share) when ``keep`` says which decisions stay on the SLM."""
    right = local = 0
    for item in items:
        stays = keep(item)
        local += stays
        right += item.example.slm_correct if stays else bool(item.example.llm_correct)
    return right / len(items), local / len(items)


def _paired(items: Sequence[Scored]) -> list[Scored]:
    return [item for item in items if item.example.llm_correct is not None]


def calibrate(
    items: Sequence[Scored], max_losses: Sequence[float] = MAX_LOSSES
) -> dict[float, tuple[float, float]]:
    """Per max_loss, the (select, args) thresholds with the largest SLM share whose accuracy
    is at most max_loss below all-LLM on ``items`` (ties: the more accurate)."""
    paired = _paired(items)
    llm_accuracy = sum(bool(i.example.llm_correct) for i in paired) / len(paired)
    grid = [round(t, 3) for t in np.linspace(0, 1, 101)]
    outcomes = [(s, a, *_outcome(paired, _router(s, a))) for s in grid for a in grid]
    chosen: dict[float, tuple[float, float]] = {}
    for loss in max_losses:
        fine = [o for o in outcomes if o[2] >= llm_accuracy - loss - 1e-9]
        pool = fine or [max(outcomes, key=lambda o: o[2])]
        s, a, _, _ = max(pool, key=lambda o: (o[3], o[2], -o[0] - o[1]))
        chosen[loss] = (s, a)
    return chosen


def with_thresholds(
    nodes: Mapping[str, NodeScorer], table: Mapping[float, tuple[float, float]]
) -> dict[str, NodeScorer]:
    return {
        node: replace(nodes[node], thresholds=tuple((loss, pair[i]) for loss, pair in table.items()))
        for i, node in enumerate(("select_tool", "extract_args"))
    }


def auroc(scores: Sequence[float], wrong: Sequence[bool]) -> float | None:
    from sklearn.metrics import roc_auc_score

    if len(set(wrong)) < 2:
        return None
    return float(roc_auc_score(np.asarray(wrong, dtype=int), np.asarray(scores, dtype=float)))


def _decision_score(item: Scored) -> float:
    if not item.none_confirmed:
        return 1.0
    return max(item.select, item.args if item.args is not None else 0.0)


def curve(items: Sequence[Scored]) -> list[dict[str, float]]:
    """SLM share against accuracy as one threshold on the decision's score moves, with random
    routing at the same share and the perfect router's best accuracy at that share."""
    paired = _paired(items)
    if not paired:
        return []
    slm = sum(i.example.slm_correct for i in paired) / len(paired)
    llm = sum(bool(i.example.llm_correct) for i in paired) / len(paired)
    points = []
    for threshold in [round(t, 2) for t in np.linspace(0, 1, 21)]:
        accuracy, share = _outcome(paired, _below(threshold))
        points.append(
            {
                "threshold": threshold,
                "slm_share": share,
                "accuracy": accuracy,
                "random": share * slm + (1 - share) * llm,
                "perfect": _perfect_at(paired, share),
            }
        )
    return points


def _perfect_at(items: Sequence[Scored], share: float) -> float:
    """The best accuracy any router reaches keeping ``share`` of the decisions on the SLM."""
    n = len(items)
    keep = round(share * n)
    gain = sorted(
        (int(i.example.slm_correct) - int(bool(i.example.llm_correct)) for i in items), reverse=True
    )
    llm_right = sum(bool(i.example.llm_correct) for i in items)
    return (llm_right + sum(gain[:keep])) / n


def _perfect_router(items: Sequence[Scored]) -> dict[str, float]:
    """Escalate exactly the items the SLM gets wrong and the LLM gets right."""
    n = len(items)
    right = sum(i.example.slm_correct or bool(i.example.llm_correct) for i in items)
    escalated = sum((not i.example.slm_correct) and bool(i.example.llm_correct) for i in items)
    return {"accuracy": right / n, "slm_share": 1 - escalated / n}


def _summary(items: Sequence[Scored], select_t: float, args_t: float) -> dict[str, Any]:
    paired = _paired(items)
    n = len(paired)
    slm = sum(i.example.slm_correct for i in paired) / n
    llm = sum(bool(i.example.llm_correct) for i in paired) / n
    accuracy, share = _outcome(paired, lambda item: route(item, select_t, args_t))
    gap = llm - slm
    return {
        "items": n,
        "slm": slm,
        "llm": llm,
        "tiered": accuracy,
        "tiered_slm_share": share,
        "gap_closed": (accuracy - slm) / gap if gap > 0 else None,
        "random_same_share": share * slm + (1 - share) * llm,
        "perfect": _perfect_router(paired),
    }


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def train_scorer(
    cases: Mapping[str, Case], relevance: Relevance, *, runs_path: Path = RUNS_FILE, commit: str | None = None
) -> tuple[EscalationScorer, list[Scored]]:
    """Fit on the development splits (train and calib) and choose the thresholds on their
    out-of-fold scores; the scorer and every item scored (development items out of fold,
    test items by the final scorer)."""
    runs = read_runs(runs_path)
    examples = examples_from_runs(runs, cases, relevance)
    development = _development(examples)
    nodes = fit_scorer(development)
    scored = _report_scores(examples, nodes)
    folded = [s for s in scored if s.example.split in DEVELOPMENT]
    table = calibrate(folded)
    trained_on = {
        "runs_file": str(runs_path.name),
        "runs_sha256": file_digest(runs_path),
        "commit": commit,
        "train_items": len(development),
        "calib_items": len(_paired(folded)),
        "calibration": f"thresholds chosen on {FOLDS}-fold out-of-fold scores of the train and calib splits",
        "models": sorted({c["model"] for r in runs for c in r["calls"]}),
    }
    return EscalationScorer(with_thresholds(nodes, table), trained_on), scored


def score_runs(
    scorer: EscalationScorer,
    cases: Mapping[str, Case],
    relevance: Relevance,
    runs_path: Path = RUNS_FILE,
    policy: str = "slm",
) -> list[Scored]:
    """Every item of the runs file scored: test items by ``scorer``, development items out
    of fold (as their thresholds were chosen), so that no reported figure is in-sample."""
    examples = examples_from_runs(read_runs(runs_path), cases, relevance, policy)
    return _report_scores(examples, scorer.nodes, cross_fit=policy == "slm")


def _report_scores(
    examples: Sequence[Example], nodes: Mapping[str, NodeScorer], *, cross_fit: bool = True
) -> list[Scored]:
    """Development items out of fold (as their thresholds are chosen; left out without
    ``cross_fit``), then the held-out items scored by ``nodes``."""
    development = _development(examples)
    held_out = score([e for e in examples if e.split not in DEVELOPMENT], nodes)
    return (out_of_fold(development) if cross_fit and development else []) + held_out


def routing_report(
    scorer: EscalationScorer,
    scored: Sequence[Scored],
    max_loss: float,
    warm: Sequence[Scored] = (),
    memory_size: int = 0,
    fresh: Sequence[Scored] = (),
) -> dict[str, Any]:
    """Held-out results on the test split: AUROC per node, the curve, the chosen policy."""
    test = [s for s in scored if s.example.split == "test"]
    with_args = [s for s in test if s.args is not None]
    select_t = scorer.nodes["select_tool"].threshold(max_loss)
    args_t = scorer.nodes["extract_args"].threshold(max_loss)
    groups: dict[str, list[Scored]] = {"live (all three)": [s for s in test if s.example.category in LIVE]}
    for category in sorted({s.example.category for s in test}):
        groups[category] = [s for s in test if s.example.category == category]
    groups["all"] = list(test)
    warm_live = [s for s in warm if s.example.split == "test" and s.example.category in LIVE]
    if _paired(warm_live):
        groups[f"live, warm memory ({memory_size} LLM decisions from train and calib)"] = warm_live
    fresh_live = [s for s in fresh if s.example.category in LIVE]
    if _paired(fresh_live):
        groups["live, fresh draw (items outside the routing set)"] = fresh_live
    return {
        "max_loss": max_loss,
        "thresholds": {"select_tool": select_t, "extract_args": args_t},
        "auroc": {
            "select_tool": auroc([s.select for s in test], [not s.example.slm_correct for s in test]),
            "extract_args": auroc(
                [s.args or 0.0 for s in with_args], [not s.example.slm_correct for s in with_args]
            ),
            "decision": auroc([_decision_score(s) for s in test], [not s.example.slm_correct for s in test]),
        },
        "groups": {
            name: _summary(items, select_t, args_t) for name, items in groups.items() if _paired(items)
        },
        "by_max_loss": {
            str(loss): _summary(
                [s for s in test if s.example.category in LIVE],
                scorer.nodes["select_tool"].threshold(loss),
                scorer.nodes["extract_args"].threshold(loss),
            )
            for loss in MAX_LOSSES
        },
        "calibration": {
            str(loss): _summary(
                [s for s in scored if s.example.split in DEVELOPMENT],
                scorer.nodes["select_tool"].threshold(loss),
                scorer.nodes["extract_args"].threshold(loss),
            )
            for loss in MAX_LOSSES
        },
        "curves": {name: curve(items) for name, items in groups.items() if _paired(items)},
        "trained_on": dict(scorer.trained_on),
    }


def _pct(value: float | None) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}%"


def routing_markdown(report: Mapping[str, Any]) -> str:
    auc = report["auroc"]
    lines = [
        "# Escalation score: routing between the SLM and the LLM",
        "",
        f"Held-out test split; thresholds chosen on out-of-fold scores of the train and calib "
        f"splits for max_loss "
        f"{report['max_loss']} (select_tool {report['thresholds']['select_tool']:.2f}, "
        f"extract_args {report['thresholds']['extract_args']:.2f}). AUROC for \"the SLM's decision "
        f'is wrong": select_tool {auc["select_tool"]:.3f}, extract_args {auc["extract_args"]:.3f}, '
        f"the whole decision {auc['decision']:.3f}.",
        "",
        "| items | n | slm | tiered | tiered's SLM share | llm | gap closed | random, same share "
        "| perfect router (SLM share) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in report["groups"].items():
        perfect = row["perfect"]
        lines.append(
            f"| {name} | {row['items']} | {_pct(row['slm'])} | {_pct(row['tiered'])} | "
            f"{_pct(row['tiered_slm_share'])} | {_pct(row['llm'])} | {_pct(row['gap_closed'])} | "
            f"{_pct(row['random_same_share'])} | {_pct(perfect['accuracy'])} ({_pct(perfect['slm_share'])}) |"
        )
    lines += [
        "",
        "## Live items at each max_loss",
        "",
        "| max_loss | tiered | SLM share | gap closed |",
        "|---|---|---|---|",
    ]
    for loss, row in report["by_max_loss"].items():
        lines.append(
            f"| {loss} | {_pct(row['tiered'])} | {_pct(row['tiered_slm_share'])} "
            f"| {_pct(row['gap_closed'])} |"
        )
    lines += [
        "",
        "## Development splits, out of fold (where the thresholds and the default max_loss were chosen)",
        "",
        "| max_loss | items | slm | tiered | SLM share | llm |",
        "|---|---|---|---|---|---|",
    ]
    for loss, row in report["calibration"].items():
        lines.append(
            f"| {loss} | {row['items']} | {_pct(row['slm'])} | {_pct(row['tiered'])} "
            f"| {_pct(row['tiered_slm_share'])} | {_pct(row['llm'])} |"
        )
    for name, points in report["curves"].items():
        lines += [
            "",
            f"## Curve: {name}",
            "",
            "| threshold | SLM share | accuracy | random routing | perfect router |",
            "|---|---|---|---|---|",
        ]
        for p in points:
            lines.append(
                f"| {p['threshold']:.2f} | {_pct(p['slm_share'])} | {_pct(p['accuracy'])} | "
                f"{_pct(p['random'])} | {_pct(p['perfect'])} |"
            )
    trained = report["trained_on"]
    lines += [
        "",
        f"Trained on {trained.get('train_items')} items, thresholds chosen on "
        f"{trained.get('calib_items')} out of fold "
        f"({trained.get('runs_file')}, sha256 {str(trained.get('runs_sha256'))[:12]}, commit "
        f"{trained.get('commit')}); models {', '.join(trained.get('models') or [])}. No reserved BFCL "
        "item is in any split. Memory: none (the SLM's prompts carry no examples).",
    ]
    return "\n".join(lines) + "\n"
