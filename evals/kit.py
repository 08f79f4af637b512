"""``tierflow eval kit``: escalation in a user's own graph of kit steps.

Two graphs, each of a ``choose`` step and an ``extract`` step, as a Python graph author
writes them with the tiering kit:

* ``triage``: the triage example's ``classify`` (a ``choose`` among five categories) and
  ``extract_fields`` (an ``extract`` of a typed record), on 90 support reports written for it
  (``data/triage/reports.jsonl``: easy ones, hard ones and ones with misleading words), each
  with its right category and severity. Split once by a hash of the report's id.
* ``bfcl``: BFCL live requests (``live_simple``, ``live_multiple``, ``live_irrelevance``;
  never a reserved id) as a graph per request: ``choose_tool`` (a ``choose`` among the
  request's functions and ``none``) and, when a function was chosen, ``write_args`` (an
  ``extract`` of that function's arguments, a pydantic model made from its parameters).
  BFCL's own checker scores the call. Items are split by source group (the id's middle
  number), so no tool set is on both sides: ``calib`` items come from the routing split's
  calib groups and ``test`` items from its test groups, and no train group (what the shipped
  priors were fitted on) is used at all.

``tierflow calibrate`` runs on the calib items (labelled against the gold value of the
``choose`` step, and against the LLM's output for the ``extract`` step, as a user without
gold values would have them). On the test items each graph runs, through the same
``App.run_graph`` a user's run takes, under six modes:

* ``slm`` and ``llm``: one tier for every step;
* ``tiered-validation``: escalation on invalid output only (no scorer);
* ``tiered-priors``: the priors shipped with tierflow judge both steps;
* ``tiered-calibrated``: the scorers ``calibrate --max-loss`` fitted on the calib items;
* ``tiered-share``: the same labels, fitted by ``calibrate --slm-share`` (one cutoff for both
  steps at which the graph's SLM share of calls reaches the target on the calib items).

Every run is stored, and a stopped evaluation goes on where it stopped (the item results
and the calibration runs are kept in its data directory).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from pydantic import BaseModel
from tierflow.agents.calibration import (
    CALIBRATE_MAX_LOSS,
    METHODS,
    StepScorers,
    fit_scorers,
    fitted_share,
    shipped_priors,
)
from tierflow.evals.report import gap_closed as report_gap_closed
from tierflow.graphs.calibrating import CalibrationItem, collect_labels
from tierflow.graphs.steps import choose, extract
from tierflow.records import OnProgress, Progress
from typing_extensions import TypedDict

__all__ = [
    "REPORTS_FILE",
    "MODES",
    "calibration_target",
    "SUITES",
    "KitItem",
    "Report",
    "load_reports",
    "split_of",
    "triage_graph",
    "bfcl_graph",
    "suite_named",
    "kit_eval",
    "kit_markdown",
    "gap_closed",
]

REPORTS_FILE = Path(__file__).parent / "data" / "triage" / "reports.jsonl"
MODES = ("slm", "llm", "tiered-validation", "tiered-priors", "tiered-calibrated", "tiered-share")
"""``tiered-calibrated`` runs at the thresholds ``calibrate --max-loss`` chose, and
``tiered-share`` at those ``calibrate --slm-share`` chose, from the same labels."""
SUITES = ("triage", "bfcl")
NONE = "none"
"""The ``choose_tool`` option of calling no function."""


@dataclass(frozen=True)
class KitItem:
    """One input of a kit graph: the graph's input, the right values of the state keys its
    steps write (what calibrate labels against) and the item's kind (difficulty, category)."""

    id: str
    input: dict[str, Any]
    gold: dict[str, Any]
    kind: str
    extra: Any = field(default=None, compare=False)


class KitSuite(Protocol):
    name: str
    graph_name: str
    title: str
    checks: tuple[str, ...]
    """What is judged on each item; the first ``scored`` of them make its accuracy."""

    def split(self) -> tuple[list[KitItem], list[KitItem]]:
        """The calib items and the test items."""
        ...

    def graph(self, item: KitItem) -> Any: ...

    def judge(self, item: KitItem, state: Mapping[str, Any]) -> tuple[dict[str, bool], float, dict[str, Any]]:
        """The item's checks, its accuracy and what the graph answered (for the item line)."""
        ...


# The triage example ------------------------------------------------------------------
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


def split_of(report_id: str) -> str:
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
    return builder.compile(name=TriageSuite.graph_name)


class TriageSuite:
    name = "triage"
    graph_name = "triage-eval"
    title = "the triage example: classify (choose) and extract_fields (extract)"
    checks: tuple[str, ...] = ("category", "severity")

    def __init__(self) -> None:
        self._graph: Any = None

    def split(self) -> tuple[list[KitItem], list[KitItem]]:
        items = [
            KitItem(
                r.id,
                {"report": r.text},
                {"category": r.category, "fields": {"severity": r.severity}},
                r.difficulty,
            )
            for r in load_reports()
        ]
        return [i for i in items if split_of(i.id) == "calib"], [i for i in items if split_of(i.id) == "test"]

    def graph(self, item: KitItem) -> Any:
        if self._graph is None:
            self._graph = triage_graph()
        return self._graph

    def judge(self, item: KitItem, state: Mapping[str, Any]) -> tuple[dict[str, bool], float, dict[str, Any]]:
        fields = state.get("fields")
        severity = fields.get("severity") if isinstance(fields, dict) else getattr(fields, "severity", None)
        checks = {
            "category": state.get("category") == item.gold["category"],
            "severity": severity == item.gold["fields"]["severity"],
        }
        answered = {"category": state.get("category"), "severity": severity}
        return checks, sum(checks.values()) / len(checks), answered


# BFCL live requests as kit steps -----------------------------------------------------------
class BfclKitInput(TypedDict):
    request: str


class BfclKitState(BfclKitInput, total=False):
    tool: str
    arguments: Any


def bfcl_graph(functions: Sequence[Mapping[str, Any]], name: str = "bfcl-kit") -> Any:
    """A request's function call as a graph of kit steps: ``choose_tool`` picks one of the
    functions (or ``none``), and ``write_args`` extracts the chosen one's arguments."""
    from tierflow.evals.bfcl import function_schema
    from tierflow.graphs.context import TierContext
    from tierflow.tools.schema import model_from_schema

    options = {str(f["name"]): str(f.get("description") or "")[:300] for f in functions}
    options[NONE] = "no function fits: the request needs none of them, or lacks what they need"
    writers = {
        str(f["name"]): extract(
            model_from_schema(f"{f['name']}_arguments", function_schema(dict(f), "python")),
            inputs="request",
            into="arguments",
            instructions=f"Write the arguments of the function {f['name']} for the request: "
            f"{str(f.get('description') or '')[:300]}",
        )
        for f in functions
    }

    def write_args(state: BfclKitState, config: RunnableConfig) -> dict[str, Any]:
        return writers[state["tool"]](state, config)

    def after_choice(state: BfclKitState) -> str:
        return "write_args" if state.get("tool") in writers else END

    builder = StateGraph(BfclKitState, context_schema=TierContext, input_schema=BfclKitInput)
    builder.add_node(
        "choose_tool",
        choose(
            options,
            inputs="request",
            into="tool",
            instructions="Choose the function that serves the request, or none.",
        ),
    )
    builder.add_node("write_args", write_args)
    builder.add_edge(START, "choose_tool")
    builder.add_conditional_edges("choose_tool", after_choice, ["write_args", END])
    builder.add_edge("write_args", END)
    return builder.compile(name=name)


BFCL_SAMPLE = {
    "calib": {"live_simple": 30, "live_multiple": 40, "live_irrelevance": 25},
    "test": {"live_simple": 30, "live_multiple": 30, "live_irrelevance": 20},
}
"""Items drawn per split and category (the calib groups hold 18 live_simple items)."""


class BfclSuite:
    name = "bfcl"
    graph_name = "bfcl-kit"
    title = "BFCL live requests: choose_tool (choose) and write_args (extract)"
    checks: tuple[str, ...] = ("call", "tool")

    def __init__(
        self, sample: Mapping[str, Mapping[str, int]] | None = None, seed: int = 0, draw: int = 0
    ) -> None:
        self.sample = dict(sample or BFCL_SAMPLE)
        self.seed = seed
        self.draw = draw

    def split(self) -> tuple[list[KitItem], list[KitItem]]:
        return self.items("calib"), self.items("test")

    def items(self, split: str) -> list[KitItem]:
        """The sampled items of one split of the routing split's groups (train, calib or
        test), shuffled by the seed. The test items of draw N leave out those of draws 0 to
        N-1: a design that has looked at a draw is judged on a fresh one."""
        from tierflow.evals.bfcl import load_category, request_text
        from tierflow.evals.routing_data import split_of as group_split

        taken: set[str] = set()
        if split == "test":
            for earlier in range(self.draw):
                taken |= {item.id for item in BfclSuite(self.sample, self.seed, earlier).items("test")}
        salt = f":draw{self.draw}" if split == "test" and self.draw else ""
        found: list[KitItem] = []
        for category, count in self.sample[split].items():
            pool = [c for c in load_category(category) if len(c.ground_truth or []) <= 1]
            cases = [c for c in pool if group_split(c.id) == split and c.id not in taken]
            for case in random.Random(f"kit:{self.seed}:{category}:{split}{salt}").sample(
                cases, min(count, len(cases))
            ):
                gold = next(iter((case.ground_truth or [{}])[0]), NONE)
                found.append(
                    KitItem(case.id, {"request": request_text(case)}, {"tool": gold}, category, case)
                )
        random.Random(f"kit:{self.seed}:{split}{salt}").shuffle(found)
        return found

    def graph(self, item: KitItem) -> Any:
        return bfcl_graph(item.extra.functions, self.graph_name)

    def judge(self, item: KitItem, state: Mapping[str, Any]) -> tuple[dict[str, bool], float, dict[str, Any]]:
        from tierflow.evals.bfcl import check

        tool = str(state.get("tool") or NONE)
        arguments = state.get("arguments")
        if isinstance(arguments, BaseModel):
            arguments = arguments.model_dump(by_alias=True, exclude_unset=True, exclude_none=True)
        called = tool != NONE and state.get("arguments") is not None
        verdict = check(item.extra, [{tool: arguments or {}}] if called else [])
        checks = {"call": verdict.correct, "tool": tool == item.gold["tool"]}
        answered = {"tool": tool, "arguments": arguments, "error": verdict.error_type}
        return checks, float(verdict.correct), answered


def suite_named(name: str, draw: int = 0) -> KitSuite:
    """The suite of this name; ``draw`` picks a fresh draw of BFCL test requests."""
    if name == "triage":
        if draw:
            raise ValueError("the triage suite has one fixed test split; --draw is for bfcl")
        return TriageSuite()
    if name == "bfcl":
        return BfclSuite(draw=draw)
    raise ValueError(f"unknown kit suite {name!r}; suites: {', '.join(SUITES)}")


# Running the modes -------------------------------------------------------------------------
def kit_eval(
    app: Any,
    work_dir: Path,
    *,
    suite: KitSuite | None = None,
    modes: Sequence[str] = MODES,
    max_loss: float = CALIBRATE_MAX_LOSS,
    slm_share: float = 0.6,
    limit: int | None = None,
    on_progress: OnProgress | None = None,
) -> dict[str, Any]:
    """Calibrate on the suite's calib items (when a calibrated mode is asked for), then
    run each mode on its test items; ``work_dir`` keeps the item results of a stopped run.
    Every mode starts from the verified outputs calibration left (``_MemoryStart``)."""
    suite = suite if suite is not None else TriageSuite()
    calib, test = suite.split()
    test = test[:limit]
    report = on_progress or (lambda _: None)
    slm, llm = app.tiers.slm.name, app.tiers.llm.name
    priors = shipped_priors()
    scorers: dict[str, StepScorers] = {
        "tiered-validation": StepScorers(),
        "tiered-priors": StepScorers({}, priors),
    }
    calibration: dict[str, Any] = {}
    targets = {"tiered-calibrated": {"max_loss": max_loss}, "tiered-share": {"slm_share": slm_share}}
    if any(mode in targets for mode in modes):
        by_id = {item.id: item for item in calib}
        collect_labels(
            None,
            suite.graph_name,
            [CalibrationItem(i.id, i.input, i.gold) for i in calib],
            app.run_graph,
            app.store,
            app.tiers.llm,
            on_progress=report,
            graph_for=lambda item: suite.graph(by_id[item.id]),
        )
        labels = app.store.labels(graph=suite.graph_name, slm_model=slm, llm_model=llm)
        calibration = {"items": len(calib), "modes": {}}
        for mode, target in targets.items():
            fitted, fits = fit_scorers(
                labels,
                graph=suite.graph_name,
                slm=slm,
                llm=llm,
                max_loss=target.get("max_loss"),
                slm_share=target.get("slm_share"),
                priors=priors,
            )
            scorers[mode] = StepScorers(fitted.nodes, priors)
            calibration["modes"][mode] = {
                **target,
                "estimated_slm_share": fitted_share(fits),
                "nodes": {
                    fit.node: {
                        "labels": fit.labels,
                        "slm_wrong": fit.slm_wrong,
                        "method": fit.method,
                        "log_loss": dict(fit.log_loss),
                        "threshold": fit.point.threshold,
                        "estimated_kept": fit.point.slm_share,
                        "estimated_loss": fit.point.loss,
                    }
                    for fit in fits
                },
            }
    work_dir.mkdir(parents=True, exist_ok=True)
    results_file = work_dir / "items.jsonl"
    done = _done(results_file)
    policy_of = {"slm": "slm", "llm": "llm"}
    start_memory = _MemoryStart(app.outputs, suite.graph_name, work_dir / "memory-start.json")
    for mode in modes:
        if any((mode, item.id) not in done for item in test):
            start_memory.restore()
        for number, item in enumerate(test, start=1):
            if (mode, item.id) not in done:
                context = {"scorers": scorers.get(mode, StepScorers()), "shadow_rate": 0.0}
                result = app.run_graph(
                    suite.graph(item),
                    item.input,
                    policy=policy_of.get(mode, "tiered"),
                    name=suite.graph_name,
                    task=f"kit:{mode}:{item.id}",
                    context=context,
                )
                line = item_line(app.store, suite, mode, item, result)
                with results_file.open("a", encoding="utf-8") as handle:
                    handle.write(json.dumps(line, default=str) + "\n")
                done[(mode, item.id)] = line
            line = done[(mode, item.id)]
            report(Progress(mode, number, len(test), "right" if line["right"] else "wrong", item.id))
    lines = [done[(mode, item.id)] for mode in modes for item in test]
    return {
        "suite": "kit",
        "graph": suite.title,
        "kit_suite": suite.name,
        "checks": list(suite.checks),
        "split": {"calib": len(calib), "test": len(test), "test_draw": getattr(suite, "draw", 0)},
        "calibration": calibration,
        "priors": {kind: dict(prior.trained_on) for kind, prior in priors.items()},
        "modes": {
            mode: kit_metrics([line for line in lines if line["mode"] == mode], suite.checks)
            for mode in modes
        },
        "items": lines,
    }


class _MemoryStart:
    """The verified outputs the test modes start from: those calibration left. Each mode
    starts there and keeps what its own runs verify, as a user's traffic would; no mode sees
    the outputs another mode verified for the same test requests (the ``llm`` mode's would
    tell a tiered mode each answer). The keys are kept in ``path`` for a resumed evaluation."""

    def __init__(self, outputs: Any, graph: str, path: Path) -> None:
        self.outputs, self.graph = outputs, graph
        if outputs is None:
            self.keys: set[str] = set()
        elif path.exists():
            self.keys = set(json.loads(path.read_text(encoding="utf-8")))
        else:
            self.keys = outputs.keys(graph)
            path.write_text(json.dumps(sorted(self.keys)), encoding="utf-8")

    def restore(self) -> None:
        if self.outputs is not None:
            self.outputs.forget(self.graph, keep=self.keys)


def _done(path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    if not path.exists():
        return {}
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return {(line["mode"], line["id"]): line for line in lines}


def item_line(store: Any, suite: KitSuite, mode: str, item: KitItem, result: Any) -> dict[str, Any]:
    state = result.state if result.ok else {}
    checks, accuracy, answered = suite.judge(item, state)
    calls = [call for step in store.get_run(result.run_id).steps for call in step.model_calls]
    return {
        "mode": mode,
        "id": item.id,
        "kind": item.kind,
        "status": result.status,
        "answered": answered,
        "checks": checks,
        "accuracy": accuracy,
        "right": all(checks.values()),
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


def kit_metrics(lines: Sequence[Mapping[str, Any]], checks: Sequence[str]) -> dict[str, Any]:
    n = len(lines) or 1
    slm_calls = sum(line["slm_calls"] for line in lines)
    calls = slm_calls + sum(line["llm_calls"] for line in lines)
    return {
        "items": len(lines),
        "accuracy": sum(line["accuracy"] for line in lines) / n,
        "all_right": sum(line["right"] for line in lines) / n,
        "checks": {check: sum(bool(line["checks"].get(check)) for line in lines) / n for check in checks},
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


ACCURACY = {"triage": "steps right (category and severity)", "bfcl": "calls right (BFCL's checker)"}


def calibration_target(fit: Mapping[str, Any]) -> str:
    """What a calibrated mode's fit was asked for: "max loss 2%" or "SLM share 60%"."""
    if fit.get("max_loss") is not None:
        return f"max loss {fit['max_loss']:.0%}"
    return f"SLM share {fit['slm_share']:.0%}"


def kit_markdown(data: Mapping[str, Any]) -> str:
    split, checks = data["split"], data["checks"]
    accuracy = ACCURACY.get(data.get("kit_suite", ""), "accuracy")
    rows = [
        f"# Kit-level evaluation: {data['graph']}",
        "",
        f"{split['test']} test items (calibrated on {split['calib']} others). Accuracy: {accuracy}. "
        "SLM share: of model calls; kept local: items with no LLM call.",
        "",
        f"| mode | accuracy | {' | '.join(checks)} | all right | SLM share | kept local | gap closed "
        "| LLM tokens/item |",
        "|---|---|" + "---|" * len(checks) + "---|---|---|---|---|",
    ]
    for mode, m in data["modes"].items():
        closed = gap_closed(data, mode)
        rows.append(
            f"| {mode} | {m['accuracy']:.1%} | "
            + " | ".join(f"{m['checks'][check]:.1%}" for check in checks)
            + f" | {m['all_right']:.1%} | {m['slm_share']:.1%} | {m['kept_local']:.1%} | "
            f"{'' if mode in ('slm', 'llm') else 'no gap' if closed is None else f'{closed:.0%}'} "
            f"| {m['llm_tokens_per_item']:.0f} |"
        )
    fitted = data.get("calibration", {}).get("modes", {})
    if fitted:
        rows += [
            "",
            "Calibration, out of fold on the calib items (threshold, outputs kept on the SLM, loss):",
            "",
        ]
    for mode, fit in fitted.items():
        nodes = "; ".join(
            f"{node}{_method(n)} {n['threshold']:.2f}, {n['estimated_kept']:.0%} kept, "
            f"loss {n['estimated_loss']:+.1%}"
            for node, n in fit["nodes"].items()
        )
        share = f"SLM share of calls {fit['estimated_slm_share']:.1%}"
        rows.append(f"- {mode} ({calibration_target(fit)}): {nodes}; {share}")
    if data.get("note"):
        rows += ["", str(data["note"])]
    return "\n".join(rows) + "\n"


def _method(node: Mapping[str, Any]) -> str:
    """How a node's score was fitted, with the out-of-fold log-loss of each way."""
    losses = node.get("log_loss") or {}
    if not losses:
        return ""
    method = METHODS.get(str(node.get("method")), "refit")
    return f" ({method}; log-loss " + ", ".join(f"{m} {v:.3f}" for m, v in losses.items()) + ")"
