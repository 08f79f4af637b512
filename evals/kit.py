"""``tierflow eval kit``: escalation in a user's own graph of kit steps, on the triage example.

The graph is the triage example's ``classify`` (a ``choose`` among five categories) and
``extract_fields`` (an ``extract`` of a typed record), run on 90 support reports written for
it (``data/triage/reports.jsonl``: easy ones, hard ones and ones with misleading words),
each with its right category and severity. The reports are split once by a hash of their
id: ``calib`` (``tierflow calibrate`` runs on them, with the gold values) and ``test``
(reported). On the test reports the graph runs, through the same ``App.run_graph`` a user's
run takes, under five modes:

* ``slm`` and ``llm``: one tier for every step;
* ``tiered-validation``: escalation on invalid output only (no scorer);
* ``tiered-priors``: the priors shipped with tierflow judge both steps;
* ``tiered-calibrated``: the scorers ``calibrate`` fitted on the calib reports.

Accuracy is the share of step outputs that are right (the category, and the severity of the
extracted fields), beside the share of reports with both right. Every run is stored, and a
stopped evaluation goes on where it stopped (the item results and the calibration runs are
kept in its data directory).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from langgraph.graph import END, START, StateGraph
from tierflow.agents.calibration import StepScorers, fit_scorers, shipped_priors
from tierflow.evals.report import gap_closed as report_gap_closed
from tierflow.graphs.calibrating import CalibrationItem, collect_labels
from tierflow.graphs.steps import choose, extract
from tierflow.records import OnProgress, Progress

__all__ = [
    "REPORTS_FILE",
    "MODES",
    "Report",
    "load_reports",
    "split_of",
    "triage_graph",
    "kit_eval",
    "kit_markdown",
]

REPORTS_FILE = Path(__file__).parent / "data" / "triage" / "reports.jsonl"
GRAPH_NAME = "triage-eval"
MODES = ("slm", "llm", "tiered-validation", "tiered-priors", "tiered-calibrated")
Split = Literal["calib", "test"]


@dataclass(frozen=True)
class Report:
    id: str
    text: str
    category: str
    severity: str
    difficulty: str


def load_reports(path: Path = REPORTS_FILE) -> list[Report]:
    reports = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            data = json.loads(line)
            reports.append(
                Report(data["id"], data["report"], data["category"], data["severity"], data["difficulty"])
            )
    return reports


def split_of(report_id: str) -> Split:
    """55% calib, 45% test, fixed by the report's id."""
    bucket = int(hashlib.sha256(f"triage:{report_id}".encode()).hexdigest(), 16) % 20
    return "calib" if bucket < 11 else "test"


def triage_graph() -> Any:
    """The triage example's two kit steps (its routing and reply add no model decision)."""
    from tierflow.graphs.context import TierContext
    from tierflow.graphs.examples.triage import CATEGORIES, ReportFields, TriageInput, TriageState

    builder = StateGraph(TriageState, context_schema=TierContext, input_schema=TriageInput)
    builder.add_node("classify", choose(CATEGORIES, inputs="report", into="category"))
    builder.add_node("extract_fields", extract(ReportFields, inputs="report", into="fields"))
    builder.add_edge(START, "classify")
    builder.add_edge("classify", "extract_fields")
    builder.add_edge("extract_fields", END)
    return builder.compile(name=GRAPH_NAME)


def _gold(report: Report) -> dict[str, Any]:
    return {"category": report.category, "fields": {"severity": report.severity}}


Runner = Callable[..., Any]


def kit_eval(
    app: Any,
    work_dir: Path,
    *,
    modes: Sequence[str] = MODES,
    max_loss: float = 0.02,
    limit: int | None = None,
    on_progress: OnProgress | None = None,
) -> dict[str, Any]:
    """Calibrate on the calib reports (when ``tiered-calibrated`` is asked for), then run each
    mode on the test reports; ``work_dir`` keeps the item results of a stopped run."""
    reports = load_reports()
    calib = [r for r in reports if split_of(r.id) == "calib"]
    test = [r for r in reports if split_of(r.id) == "test"][:limit]
    graph = triage_graph()
    report = on_progress or (lambda _: None)
    slm, llm = app.tiers.slm.name, app.tiers.llm.name
    priors = shipped_priors()
    scorers: dict[str, StepScorers] = {
        "tiered-validation": StepScorers(),
        "tiered-priors": StepScorers({}, priors),
    }
    calibration: dict[str, Any] = {}
    if "tiered-calibrated" in modes:
        items = [CalibrationItem(r.id, {"report": r.text}, _gold(r)) for r in calib]
        collect_labels(graph, GRAPH_NAME, items, app.run_graph, app.store, app.tiers.llm, on_progress=report)
        labels = app.store.labels(graph=GRAPH_NAME, slm_model=slm, llm_model=llm)
        fitted, fits = fit_scorers(labels, graph=GRAPH_NAME, slm=slm, llm=llm, max_loss=max_loss)
        scorers["tiered-calibrated"] = StepScorers(fitted.nodes, priors)
        calibration = {
            "reports": len(calib),
            "max_loss": max_loss,
            "nodes": {
                fit.node: {
                    "labels": fit.labels,
                    "slm_wrong": fit.slm_wrong,
                    "threshold": fit.point.threshold,
                    "estimated_slm_share": fit.point.slm_share,
                    "estimated_loss": fit.point.loss,
                }
                for fit in fits
            },
        }
    work_dir.mkdir(parents=True, exist_ok=True)
    results_file = work_dir / "items.jsonl"
    done = _done(results_file)
    policy_of = {"slm": "slm", "llm": "llm"}
    for mode in modes:
        for number, item in enumerate(test, start=1):
            if (mode, item.id) not in done:
                context = {"scorers": scorers.get(mode, StepScorers()), "shadow_rate": 0.0}
                result = app.run_graph(
                    graph,
                    {"report": item.text},
                    policy=policy_of.get(mode, "tiered"),
                    name=GRAPH_NAME,
                    task=f"kit:{mode}:{item.id}",
                    context=context,
                )
                line = _item_line(app.store, mode, item, result)
                with results_file.open("a", encoding="utf-8") as handle:
                    handle.write(json.dumps(line) + "\n")
                done[(mode, item.id)] = line
            line = done[(mode, item.id)]
            report(Progress(mode, number, len(test), "right" if line["right"] else "wrong", item.id))
    lines = [done[(mode, item.id)] for mode in modes for item in test]
    return {
        "suite": "kit",
        "graph": "triage example: classify (choose) and extract_fields (extract)",
        "split": {"calib": len(calib), "test": len(test)},
        "calibration": calibration,
        "priors": {kind: dict(prior.trained_on) for kind, prior in priors.items()},
        "modes": {mode: _metrics([line for line in lines if line["mode"] == mode]) for mode in modes},
        "items": lines,
    }


def _done(path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    if not path.exists():
        return {}
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return {(line["mode"], line["id"]): line for line in lines}


def _item_line(store: Any, mode: str, item: Report, result: Any) -> dict[str, Any]:
    state = result.state if result.ok else {}
    fields = state.get("fields")
    severity = fields.get("severity") if isinstance(fields, dict) else getattr(fields, "severity", None)
    calls = [call for step in store.get_run(result.run_id).steps for call in step.model_calls]
    return {
        "mode": mode,
        "id": item.id,
        "difficulty": item.difficulty,
        "status": result.status,
        "category": state.get("category"),
        "severity": severity,
        "category_right": state.get("category") == item.category,
        "severity_right": severity == item.severity,
        "right": state.get("category") == item.category and severity == item.severity,
        "slm_calls": sum(call.tier == "slm" for call in calls),
        "llm_calls": sum(call.tier == "llm" for call in calls),
        "llm_tokens": sum(
            call.prompt_tokens + call.completion_tokens for call in calls if call.tier == "llm"
        ),
        "escalated": sorted({call.node for call in calls if call.escalated}),
        "reasons": sorted({str(call.escalation_reason) for call in calls if call.escalated}),
        "p_wrong": {
            call.node: call.p_wrong for call in calls if call.tier == "slm" and call.p_wrong is not None
        },
        "latency_ms": round(sum(call.latency_ms or 0.0 for call in calls), 1),
    }


def _metrics(lines: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    n = len(lines) or 1
    slm_calls = sum(line["slm_calls"] for line in lines)
    calls = slm_calls + sum(line["llm_calls"] for line in lines)
    return {
        "items": len(lines),
        "accuracy": sum(line["category_right"] + line["severity_right"] for line in lines) / (2 * n),
        "both_right": sum(line["right"] for line in lines) / n,
        "category_accuracy": sum(line["category_right"] for line in lines) / n,
        "severity_accuracy": sum(line["severity_right"] for line in lines) / n,
        "slm_share": slm_calls / calls if calls else 0.0,
        "kept_local": sum(line["llm_calls"] == 0 for line in lines) / n,
        "llm_tokens_per_item": sum(line["llm_tokens"] for line in lines) / n,
        "model_latency_ms_mean": sum(line["latency_ms"] for line in lines) / n,
        "failed_runs": sum(line["status"] != "succeeded" for line in lines),
    }


def gap_closed(data: Mapping[str, Any], mode: str) -> float | None:
    modes = data["modes"]
    if "slm" not in modes or "llm" not in modes or mode not in modes:
        return None
    return report_gap_closed(modes["slm"]["accuracy"], modes[mode]["accuracy"], modes["llm"]["accuracy"])


def kit_markdown(data: Mapping[str, Any]) -> str:
    split = data["split"]
    rows = [
        "# Kit-level evaluation: the triage example's steps",
        "",
        f"{split['test']} test reports (calibrated on {split['calib']} others). Steps right: the category "
        "and the severity, over both steps. SLM share: of model calls; kept local: reports with no LLM call.",
        "",
        "| mode | steps right | category | severity | both right | SLM share | kept local | gap closed "
        "| LLM tokens/report |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for mode, m in data["modes"].items():
        closed = gap_closed(data, mode)
        rows.append(
            f"| {mode} | {m['accuracy']:.1%} | {m['category_accuracy']:.1%} | {m['severity_accuracy']:.1%} "
            f"| {m['both_right']:.1%} "
            f"| {m['slm_share']:.1%} | {m['kept_local']:.1%} | "
            f"{'' if mode in ('slm', 'llm') else 'no gap' if closed is None else f'{closed:.0%}'} "
            f"| {m['llm_tokens_per_item']:.0f} |"
        )
    return "\n".join(rows) + "\n"
