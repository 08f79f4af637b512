"""The shipped priors of the tiering kit's ``choose`` and ``extract`` steps, fitted on BFCL.

A graph nobody has calibrated yet still needs a judge for its steps. BFCL tool calls are
two kit steps: choosing the tool (or none) among the offered ones is a ``choose``, writing
its arguments is an ``extract``. The paired SLM/LLM runs of the routing set
(``evals/data/routing/runs.jsonl``) hold, for every item, the SLM's option probabilities,
its arguments with their token log-probabilities, and both tiers' verdicts; each becomes a
labelled output of a ``choose`` or ``extract`` step, with the signals the kit computes at
run time (``step_features``).

Only the train split is used (split by source group, never a reserved id), folds are
grouped by source group, and the thresholds are chosen on out-of-fold scores, as
``tierflow calibrate`` does for a user's own graph.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from tierflow.agents.calibration import NodeFit, StepScorer, fit_scorers
from tierflow.agents.judging import StepView, step_features
from tierflow.evals.bfcl import Case, is_reserved, request_text
from tierflow.evals.routing_data import source_group, split_of
from tierflow.records import ChoiceProbabilities, StoredLabel, TokenSignals

__all__ = ["prior_labels", "fit_priors", "NONE", "MAX_LOSS"]

NONE = "none"
"""The option of calling no tool."""

PAIR = ("qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b")

MAX_LOSS = 0.02
"""The loss whose threshold a fit reports (the priors hold thresholds for every loss)."""


def _call(run: Mapping[str, Any], node: str) -> Mapping[str, Any] | None:
    return next((c for c in run["calls"] if c["node"] == node), None)


def _gold_tools(case: Case) -> set[str]:
    return {name for call in case.ground_truth or [] for name in call} or {NONE}


def _chosen(run: Mapping[str, Any] | None) -> str:
    call = _call(run, "select_tool") if run else None
    parsed = (call or {}).get("parsed") or {}
    return str(parsed.get("tool") or NONE)


def prior_labels(
    runs: Sequence[Mapping[str, Any]], cases: Mapping[str, Case], split: str = "train"
) -> list[StoredLabel]:
    """The SLM's outputs on ``split``'s items as labelled ``choose`` and ``extract`` outputs.

    ``choose`` is right when the tool chosen is one the answer calls (``none`` for an item
    that needs no call). ``extract`` is labelled only where the SLM chose a right tool, and
    is right when BFCL's checker accepted the call. The LLM's verdicts come from its run of
    the same item. Each label's ``run_id`` is the item's source group, so folds keep a group
    together."""
    llm_runs = {run["id"]: run for run in runs if run["policy"] == "llm"}
    labels: list[StoredLabel] = []
    now = datetime.now(UTC)
    for run in runs:
        case = cases.get(run["id"])
        if run["policy"] != "slm" or case is None or is_reserved(case.id) or split_of(case.id) != split:
            continue
        llm = llm_runs.get(case.id)
        gold = _gold_tools(case)
        options = (*(function["name"] for function in case.functions), NONE)
        request = request_text(case)
        chosen = _chosen(run)
        select = _call(run, "select_tool")
        probabilities = (select or {}).get("choice")
        view = StepView("choose", request, options, "tool")
        choice = ChoiceProbabilities(dict(probabilities), chosen, 0.0) if probabilities else None
        features = step_features(view, chosen, chosen, max_tokens=32, probabilities=choice)
        llm_chose = _chosen(llm)
        labels.append(_label(case, "choose", chosen in gold, llm_chose in gold, features, len(labels), now))
        args = _call(run, "extract_args")
        if chosen == NONE or chosen not in gold or args is None or not isinstance(args.get("parsed"), dict):
            continue
        stored = args.get("signals")
        signals = TokenSignals(**stored) if stored else None
        features = step_features(
            StepView("extract", request, into="arguments"),
            args["parsed"],
            "",
            max_tokens=512,
            signals=signals,
        )
        llm_right = bool(llm and llm["correct"] and llm_chose == chosen)
        labels.append(_label(case, "extract", bool(run["correct"]), llm_right, features, len(labels), now))
    return labels


def _label(
    case: Case,
    kind: str,
    slm_right: bool,
    llm_right: bool,
    features: dict[str, float],
    number: int,
    now: datetime,
) -> StoredLabel:
    return StoredLabel(
        run_id=source_group(case.id),
        model_call_id=number,
        graph="bfcl",
        node=kind,
        kind=kind,
        slm_model=PAIR[0],
        llm_model=PAIR[1],
        slm_right=slm_right,
        llm_right=llm_right,
        source="gold",
        features=features,
        detail=case.id,
        created_at=now,
    )


def fit_priors(
    runs: Sequence[Mapping[str, Any]], cases: Mapping[str, Case], *, max_loss: float = MAX_LOSS
) -> tuple[dict[str, StepScorer], list[NodeFit]]:
    """The ``choose`` and ``extract`` priors fitted on the train split's labels."""
    labels = prior_labels(runs, cases)
    created = datetime.now(UTC).isoformat(timespec="seconds")
    scorers, fits = fit_scorers(
        labels,
        graph="bfcl (train split, grouped by source group)",
        slm=PAIR[0],
        llm=PAIR[1],
        max_loss=max_loss,
        created_at=created,
        source="prior",
    )
    return dict(scorers.nodes), fits
