"""``tierflow calibrate``: run a graph on a user's sample inputs with both tiers, label each
SLM output right or wrong, and fit each node's scorer and threshold on those labels.

Each input runs once with every step on the SLM first and every kept SLM output shadowed by
the LLM (``shadow_rate`` 1), so both tiers answer the same prompt and the labels say whether
the SLM agreed. An SLM output that is not valid goes on to the LLM, as under ``tiered``, so
the run reaches its later steps; no scorer judges the outputs (what is being labelled is
the SLM's own behaviour, not a scorer's choice of it). With ``gold`` fields, an input line
also carries the right values of those state keys, and the outputs written to them are
labelled against the gold value instead (the LLM's as well). Runs are stored like any
other, under the graph's name, so a stopped calibration continues where it stopped and
``--from-runs`` can refit from every label the store holds, shadow labels of everyday runs
included.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tierflow.agents.calibration import StepScorers
from tierflow.agents.judging import JUDGE_SCHEMA, STEP_KINDS, judge_text_messages, same_output
from tierflow.agents.policy import TierPolicy
from tierflow.agents.protocol import ChatModel
from tierflow.errors import GraphError, TaskInputError
from tierflow.graphs.introspect import check_input, node_names
from tierflow.graphs.running import GraphResult
from tierflow.memory.traces import TraceStore
from tierflow.records import OnProgress, OutputLabel, Progress, StoredModelCall

__all__ = [
    "CalibrationItem",
    "read_inputs",
    "check_gold_fields",
    "collect_labels",
    "holds_a_key",
    "slm_first",
]

TASK_PREFIX = "calibrate:"


@dataclass(frozen=True)
class CalibrationItem:
    """One input line: its id (a digest of the line), the graph's input, and gold values."""

    id: str
    input: dict[str, Any]
    gold: dict[str, Any]


def read_inputs(path: Path, graph: Any, gold_fields: Sequence[str]) -> list[CalibrationItem]:
    """The JSONL file's lines as inputs of ``graph``; each must fit its input schema once the
    gold fields are taken out. A line that does not is a ``TaskInputError`` naming it."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        hint = "Give a UTF-8 JSONL file, one input per line."
        raise TaskInputError(f"cannot read {path}: {exc}", hint=hint) from None
    items = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TaskInputError(
                f"{where}: not valid JSON ({exc.msg})", hint="One JSON object per line."
            ) from None
        if not isinstance(data, dict):
            raise TaskInputError(f"{where}: not a JSON object", hint="One JSON object per line.")
        gold = {field: data[field] for field in gold_fields if field in data}
        given = {key: value for key, value in data.items() if key not in gold_fields}
        try:
            check_input(graph, given)
        except GraphError as exc:
            raise TaskInputError(f"{where}: {exc.message}", hint=exc.hint) from None
        digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
        items.append(CalibrationItem(digest, given, gold))
    if not items:
        raise TaskInputError(f"{path} holds no inputs", hint="One JSON object per line.")
    return items


def check_gold_fields(graph: Any, gold_fields: Sequence[str]) -> None:
    """Each gold field must be a key of the graph's output (``TaskInputError`` otherwise)."""
    if not gold_fields:
        return
    try:
        keys = set((graph.get_output_jsonschema().get("properties") or {}).keys())
    except Exception:  # noqa: BLE001 - an output schema pydantic cannot describe: use the channels
        keys = {name for name in getattr(graph, "channels", {}) if not name.startswith("__")}
    missing = [field for field in gold_fields if field not in keys]
    if missing:
        raise TaskInputError(
            f"the graph's output has no key {', '.join(map(repr, missing))}",
            hint=f"--gold names output keys: {', '.join(sorted(keys))}.",
        )


Runner = Callable[..., GraphResult]
"""Runs a graph as ``App.run_graph`` does: ``run(graph, input, policy=, name=, task=, context=)``."""


def collect_labels(
    graph: Any,
    name: str,
    items: Sequence[CalibrationItem],
    run: Runner,
    store: TraceStore,
    judge: ChatModel,
    *,
    on_progress: OnProgress | None = None,
    graph_for: Callable[[CalibrationItem], Any] | None = None,
) -> int:
    """Run each item not yet run (a stopped calibration goes on where it stopped), with every
    kept SLM output shadowed; label against gold values where given. Returns how many ran.

    ``graph_for``: the graph an item runs, where items differ (each request offers its own
    tools); the graphs share ``name``, and so their nodes' labels and scorers."""
    done = _finished_items(store, name)
    todo = [item for item in items if item.id not in done]
    report = on_progress or (lambda _: None)
    report(Progress("calibrating", len(items) - len(todo), len(items), note=f"{len(todo)} input(s) to run"))
    for number, item in enumerate(todo, start=len(items) - len(todo) + 1):
        chosen = graph_for(item) if graph_for is not None else graph
        result = run(
            chosen,
            item.input,
            policy=slm_first(chosen),
            name=name,
            task=TASK_PREFIX + item.id,
            context={"shadow_rate": 1.0, "scorers": StepScorers()},
        )
        if result.ok and item.gold:
            _gold_labels(store, result.run_id, item, judge)
        outcome = "labelled" if result.ok else "failed"
        report(Progress("calibrating", number, len(items), outcome, item.id, result.error or ""))
    return len(todo)


def slm_first(graph: Any) -> TierPolicy:
    """Every node SLM first, escalating only an invalid output (an override per node, so a
    step that prefers the LLM under ``tiered`` is labelled too)."""
    return TierPolicy(default="tiered", nodes=dict.fromkeys(node_names(graph), "tiered"))


def _finished_items(store: TraceStore, name: str) -> set[str]:
    tasks = store.run_tasks(graph=name, status="succeeded", prefix=TASK_PREFIX)
    return {task[len(TASK_PREFIX) :] for task in tasks}


def _gold_labels(store: TraceStore, run_id: str, item: CalibrationItem, judge: ChatModel) -> None:
    calls = [call for step in store.get_run(run_id).steps for call in step.model_calls]
    for index, call in enumerate(calls):
        if call.tier != "slm" or call.into not in item.gold or call.id is None or not call.step_kind:
            continue
        if call.error is not None or call.escalated:
            continue  # rejected by validation or a check: escalated whatever a scorer says
        gold = item.gold[call.into]
        shadow = next((c for c in calls[index + 1 :] if c.node == f"{call.node}:shadow"), None)
        slm_right = _matches(call, call.parsed, gold, judge)
        llm_right = _matches(call, shadow.parsed, gold, judge) if shadow is not None else True
        detail = json.dumps(gold, ensure_ascii=False)[:1000]
        store.add_label(run_id, call.id, OutputLabel(slm_right, llm_right, "gold", detail))


def _matches(call: StoredModelCall, value: Any, gold: Any, judge: ChatModel) -> bool:
    kind = call.step_kind
    if kind not in STEP_KINDS:
        return False
    same = same_output(kind, value, gold)
    if same is not None:
        return same
    text = _output_text(value)
    if isinstance(gold, list) and gold and all(isinstance(key, str) for key in gold):
        return holds_a_key(text, gold)
    source = "\n".join(m["content"] for m in call.messages if m["role"] == "user")
    reply = judge.complete(judge_text_messages(source, text, str(gold)), schema=JUDGE_SCHEMA, max_tokens=16)
    try:
        verdict: Mapping[str, Any] = json.loads(reply.text)
    except json.JSONDecodeError:
        return False
    return verdict.get("verdict") == "same"


def _output_text(value: Any) -> str:
    """A text step's output as its words: a structured reply (a cited answer) stored as a
    dict reads as its string fields."""
    if isinstance(value, Mapping):
        return "\n".join(str(v) for v in value.values() if isinstance(v, str))
    return str(value)


def holds_a_key(text: str, keys: Sequence[str]) -> bool:
    """Whether a text holds one of the keys a right answer holds, case and spacing ignored
    (a gold value given as a list of keys)."""
    flat = _flat(text)
    return any(_flat(key) in flat for key in keys)


def _flat(text: str) -> str:
    return " ".join(text.split()).casefold()
