"""A graph's step scorers: per node, P(the SLM's output is wrong) and the thresholds for
stated losses, with what they were fitted on. ``tierflow calibrate`` writes them; a run
loads the file that matches its graph and its model pair.

A scorer carries the model pair it was fitted for. ``StepScorers.for_step`` never hands out
one fitted for another pair as if it fitted this one: it returns it with ``matches=False``,
and the caller says so and falls back to the scorer's strictest threshold.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from tierflow.agents.judging import (
    FEATURES,
    STEP_KINDS,
    Labelled,
    Logistic,
    StepKind,
    ThresholdPoint,
    calls_share,
    choose_thresholds,
    fit_logistic,
    grouped_folds,
    log_loss,
    recalibrate,
    share_thresholds,
)
from tierflow.agents.policy import DEFAULT_MAX_LOSS
from tierflow.errors import ConfigError
from tierflow.records import StoredLabel

__all__ = [
    "StepScorer",
    "StepScorers",
    "ScorerMatch",
    "scorer_file",
    "NodeFit",
    "fit_scorers",
    "fit_and_save",
    "fitted_share",
    "label_per_output",
    "METHODS",
    "LOSSES",
    "CALIBRATE_MAX_LOSS",
    "PRIORS_FILE",
    "shipped_priors",
    "save_priors",
]

FORMAT = 1

PRIORS_FILE = Path(__file__).parent / "data" / "step_priors.json"
"""The shipped priors of ``choose`` and ``extract`` steps (``tierflow eval priors`` fits them)."""


@dataclass(frozen=True)
class StepScorer:
    """One node's score and thresholds, and what they were fitted on (``slm``, ``llm``,
    ``graph``, ``node``, ``items``, ``wrong``, ``created_at``, ``source``)."""

    kind: StepKind
    model: Logistic
    thresholds: tuple[ThresholdPoint, ...]
    trained_on: Mapping[str, Any] = field(default_factory=dict)

    def threshold(self, max_loss: float) -> float:
        """The threshold fitted for the largest loss at most ``max_loss`` (the strictest
        one when ``max_loss`` is below them all)."""
        ordered = sorted(self.thresholds, key=lambda point: point.max_loss)
        chosen = ordered[0].threshold if ordered else 0.0
        for point in ordered:
            if point.max_loss <= max_loss + 1e-9:
                chosen = point.threshold
        return chosen

    def run_threshold(self, max_loss: float | None) -> float:
        """The threshold a run uses: for the policy's ``max_loss`` when it names one; else, for
        a calibrated scorer, the operating point ``tierflow calibrate`` chose (for its
        ``--max-loss`` or ``--slm-share``), and for a shipped prior, ``DEFAULT_MAX_LOSS``'s."""
        if max_loss is not None:
            return self.threshold(max_loss)
        if self.trained_on.get("source", "calibrated") == "calibrated":
            if "threshold" in self.trained_on:
                return float(self.trained_on["threshold"])
            if self.trained_on.get("max_loss") is not None:  # files written before the threshold was kept
                return self.threshold(float(self.trained_on["max_loss"]))
        return self.threshold(DEFAULT_MAX_LOSS)

    @property
    def strictest(self) -> float:
        return min((point.threshold for point in self.thresholds), default=0.0)

    def pair(self) -> tuple[str, str]:
        return str(self.trained_on.get("slm", "")), str(self.trained_on.get("llm", ""))

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "model": self.model.to_json(),
            "thresholds": [vars(point) for point in self.thresholds],
            "trained_on": dict(self.trained_on),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StepScorer:
        kind = data["kind"]
        if kind not in STEP_KINDS:
            raise ValueError(f"unknown step kind {kind!r}")
        return cls(
            kind=kind,
            model=Logistic.from_json(data["model"]),
            thresholds=tuple(ThresholdPoint(**point) for point in data["thresholds"]),
            trained_on=dict(data.get("trained_on") or {}),
        )


@dataclass(frozen=True)
class ScorerMatch:
    """The scorer a step uses, and whether it was fitted for the run's model pair."""

    scorer: StepScorer
    matches: bool

    def threshold(self, max_loss: float | None) -> float:
        """The threshold for the policy's ``max_loss`` (``StepScorer.run_threshold``); for a
        scorer of another pair, its strictest (it escalates more, never less, than it was
        fitted to)."""
        return self.scorer.run_threshold(max_loss) if self.matches else self.scorer.strictest


@dataclass(frozen=True)
class StepScorers:
    """The scorers of one graph's nodes (calibrated) and of step kinds (shipped priors)."""

    nodes: Mapping[str, StepScorer] = field(default_factory=dict)
    priors: Mapping[StepKind, StepScorer] = field(default_factory=dict)
    path: Path | None = None

    def for_step(self, node: str, kind: StepKind, slm: str, llm: str) -> ScorerMatch | None:
        """The node's own scorer when it is of this kind, else the kind's prior; ``None``
        when there is neither (the step is judged by validation alone)."""
        scorer = self.nodes.get(node)
        if scorer is None or scorer.kind != kind:
            scorer = self.priors.get(kind)
        if scorer is None:
            return None
        return ScorerMatch(scorer, scorer.pair() == (slm, llm))

    def calibrated_for(self, node: str, kind: StepKind, slm: str, llm: str) -> bool:
        """Whether the node has a scorer of its own, of this kind, fitted for these models
        (it then takes precedence over any built-in judge of the step)."""
        scorer = self.nodes.get(node)
        return scorer is not None and scorer.kind == kind and scorer.pair() == (slm, llm)

    def save(self, path: Path) -> None:
        document = {"format": FORMAT, "nodes": {node: s.to_json() for node, s in self.nodes.items()}}
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        partial.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
        partial.replace(path)

    @classmethod
    def load(cls, path: Path, priors: Mapping[StepKind, StepScorer] | None = None) -> StepScorers:
        """The scorers in ``path`` (none when it does not exist), with ``priors``."""
        if not path.exists():
            return cls({}, dict(priors or {}), None)
        hint = f"Calibrate the graph again (tierflow calibrate), or remove {path}."
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
            nodes = {node: StepScorer.from_json(data) for node, data in document["nodes"].items()}
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"the step scorers in {path} cannot be read: {exc}", hint=hint) from None
        return cls(nodes, dict(priors or {}), path)


def save_priors(priors: Mapping[str, StepScorer], path: Path = PRIORS_FILE) -> None:
    """Write priors per kind of step (``tierflow eval priors``)."""
    document = {"format": FORMAT, "priors": {kind: scorer.to_json() for kind, scorer in priors.items()}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")


@cache
def shipped_priors(path: Path = PRIORS_FILE) -> dict[StepKind, StepScorer]:
    """The priors per kind of step that judge a step no calibration covers: fitted on BFCL
    tool calls seen as kit steps, for the default model pair (another pair gets their
    strictest threshold). None when the file is missing."""
    if not path.exists():
        return {}
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        scorers = [StepScorer.from_json(data) for data in document["priors"].values()]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"the shipped step priors in {path} cannot be read: {exc}", hint="Reinstall tierflow."
        ) from None
    return {scorer.kind: scorer for scorer in scorers}


def scorer_file(directory: Path, graph: str) -> Path:
    """Where a graph's calibrated scorers live under ``directory`` (the data dir's
    ``scorers/``): one file per graph name."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", graph) or "graph"
    return directory / f"{safe}.json"


# Fitting ------------------------------------------------------------------------------
CALIBRATE_MAX_LOSS = 0.02
"""``tierflow calibrate``'s default loss per node: with a hundred labels, one output is 1%,
so a budget of 0.01 would keep on the SLM only what no label contradicts."""

LOSSES = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2)
"""The accuracy losses a fit chooses thresholds for (with the one asked for)."""


METHODS = {"prior": "shipped prior, rescaled", "refit": "refit"}
"""How a node's score can be fitted, as the CLI, the console and the evaluations name it;
``fit_scorers`` keeps the one with the lower out-of-fold log-loss."""


@dataclass(frozen=True)
class NodeFit:
    """What a fit measured of one node, out of fold: the labels it had, the threshold chosen
    (for the loss or the SLM share asked for), the share of its outputs that stay on the SLM
    there, and the loss; how the score was fitted (``METHODS``) and each way's log-loss."""

    node: str
    kind: StepKind
    labels: int
    slm_wrong: int
    point: ThresholdPoint
    method: str = "refit"
    log_loss: Mapping[str, float] = field(default_factory=dict)


def label_per_output(labels: Sequence[StoredLabel]) -> list[StoredLabel]:
    """One label per SLM output, in the order first labelled: a gold label wins over a
    shadow one of the same output."""
    by_call: dict[int, StoredLabel] = {}
    for label in labels:
        if label.model_call_id not in by_call or label.source == "gold":
            by_call[label.model_call_id] = label
    return list(by_call.values())


def fit_scorers(
    labels: Sequence[StoredLabel],
    *,
    graph: str,
    slm: str,
    llm: str,
    max_loss: float | None = None,
    slm_share: float | None = None,
    priors: Mapping[StepKind, StepScorer] | None = None,
    folds: int = 5,
    created_at: str = "",
    source: str = "calibrated",
) -> tuple[StepScorers, list[NodeFit]]:
    """Per node, a scorer fitted on ``labels`` (a gold label wins over a shadow one for the
    same output); ``source`` says what they are (``calibrated``, or ``prior`` for the
    shipped ones). Thresholds are chosen on out-of-fold scores, grouped by run (one input's
    outputs never sit on both sides of a fit); the stored model is then fitted on all.

    With a prior for the node's kind in ``priors``, the score is either fitted afresh or the
    prior rescaled to the labels (``recalibrate``), whichever predicts the held-out labels
    better (out-of-fold log-loss): a hundred labels are too few to weigh a dozen signals, but
    enough to set a good ranking's scale.

    The operating point each scorer keeps (runs use it unless their policy names a
    ``max_loss``) is, per node, the most outputs kept on the SLM within ``max_loss``; or,
    with ``slm_share``, one cutoff for all nodes at which the graph's SLM share of model
    calls reaches it (``share_thresholds``). Without either, ``max_loss`` is ``CALIBRATE_MAX_LOSS``."""
    if max_loss is not None and slm_share is not None:
        raise ValueError("give max_loss or slm_share, not both")
    if max_loss is None and slm_share is None:
        max_loss = CALIBRATE_MAX_LOSS
    by_node: dict[str, list[StoredLabel]] = {}
    for label in label_per_output(labels):
        if label.kind in STEP_KINDS:
            by_node.setdefault(label.node, []).append(label)
    losses = sorted({*LOSSES, *([max_loss] if max_loss is not None else [])})
    prior_of: dict[str, StepScorer] = {str(kind): scorer for kind, scorer in (priors or {}).items()}
    chosen = {node: _best_fit(items, prior_of.get(items[0].kind), folds) for node, items in by_node.items()}
    scored = {node: fit.scored for node, fit in sorted(chosen.items())}
    shared = share_thresholds(scored, slm_share) if slm_share is not None else {}
    nodes: dict[str, StepScorer] = {}
    fits = []
    for node, items in sorted(by_node.items()):
        kind: StepKind = items[0].kind  # type: ignore[assignment]  # checked against STEP_KINDS
        best = chosen[node]
        points = tuple(choose_thresholds(best.scored, losses))
        point = shared[node] if slm_share is not None else next(p for p in points if p.max_loss == max_loss)
        wrong = sum(not i.slm_right for i in items)
        trained_on = {
            "slm": slm,
            "llm": llm,
            "graph": graph,
            "node": node,
            "items": len(items),
            "wrong": wrong,
            "created_at": created_at,
            "source": source,
            "method": best.method,
            "log_loss": best.log_loss,
            "max_loss": max_loss,
            "slm_share_target": slm_share,
            "threshold": point.threshold,
            "estimated_loss": round(point.loss, 4),
            "estimated_slm_share": round(point.slm_share, 4),
        }
        nodes[node] = StepScorer(kind, best.model, points, trained_on)
        fits.append(NodeFit(node, kind, len(items), wrong, point, best.method, best.log_loss))
    return StepScorers(nodes), fits


@dataclass(frozen=True)
class _Fit:
    method: str
    model: Logistic
    scored: list[Labelled]
    log_loss: dict[str, float]


def _best_fit(items: Sequence[StoredLabel], prior: StepScorer | None, folds: int) -> _Fit:
    """The node's score by each method (``METHODS``; ``prior`` only with one), scored out of
    fold on the same folds, and the one with the lower log-loss (the prior on a tie: it has
    two parameters)."""
    kind: StepKind = items[0].kind  # type: ignore[assignment]  # checked by the caller
    rows = [item.features for item in items]
    wrong = [not item.slm_right for item in items]
    fitters: dict[str, Callable[[Sequence[Mapping[str, float]], Sequence[bool]], Logistic]] = {}
    if prior is not None:
        fitters["prior"] = lambda x, y: recalibrate(prior.model, x, y)
    fitters["refit"] = lambda x, y: fit_logistic(x, y, FEATURES[kind])
    fold_of = grouped_folds([item.run_id for item in items], folds)
    scored_by: dict[str, list[Labelled]] = {}
    for method, fitter in fitters.items():
        scored = []
        for fold in sorted(set(fold_of)):
            train = [k for k, f in enumerate(fold_of) if f != fold]
            model = fitter([rows[k] for k in train], [wrong[k] for k in train])
            scored += [
                Labelled(model.p_wrong(rows[k]), items[k].slm_right, items[k].llm_right)
                for k, f in enumerate(fold_of)
                if f == fold
            ]
        scored_by[method] = scored
    losses = {method: round(log_loss(scored), 4) for method, scored in scored_by.items()}
    best = min(losses, key=lambda method: losses[method])  # the first (the prior) on a tie
    return _Fit(best, fitters[best](rows, wrong), scored_by[best], losses)


def fit_and_save(
    labels: Sequence[StoredLabel],
    directory: Path,
    *,
    graph: str,
    slm: str,
    llm: str,
    max_loss: float | None = None,
    slm_share: float | None = None,
) -> tuple[Path, list[NodeFit]]:
    """What ``tierflow calibrate`` does with a graph's labels: scorers fitted now (with the
    shipped priors to rescale) for ``max_loss`` or ``slm_share``, saved to the graph's file
    under ``directory``. Returns the file and what each node's fit measured."""
    created = datetime.now(UTC).isoformat(timespec="seconds")
    scorers, fits = fit_scorers(
        labels,
        graph=graph,
        slm=slm,
        llm=llm,
        max_loss=max_loss,
        slm_share=slm_share,
        priors=shipped_priors(),
        created_at=created,
    )
    path = scorer_file(directory, graph)
    scorers.save(path)
    return path, fits


def fitted_share(fits: Sequence[NodeFit]) -> float:
    """The graph's SLM share of model calls that the fits estimate, out of fold."""
    return calls_share(sum(fit.labels for fit in fits), sum(fit.labels * fit.point.slm_share for fit in fits))
