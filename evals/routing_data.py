"""Paired SLM/LLM runs on BFCL items: the data the escalation score is trained, calibrated
and tested on.

Each item is drawn once from a category (never a reserved id) and put in a split by a hash of
its id: ``train`` and ``calib`` (the scorer is fitted and its thresholds chosen on them) or
``test`` (results are reported on it). The SLM and the LLM run on every item, so a routing
result knows what the LLM would have said. Every run is
an ordinary traced run of the tool-call graph; one JSON line per (item, policy) keeps what
the score needs: each model call's output and signals, and BFCL's verdict.

Collection appends to the runs file and skips what it already holds, so an interrupted
collection continues where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tierflow.agents.policy import TierPolicy
from tierflow.agents.tiers import Tiers
from tierflow.evals.bfcl import Case, load_category, registry_for, request_text
from tierflow.evals.toolcalls import run_case
from tierflow.graphs.task import build_tool_call_graph
from tierflow.memory.traces import TraceStore
from tierflow.records import OnProgress, Progress

if TYPE_CHECKING:
    from tierflow.graphs.recall import Recall

__all__ = [
    "DEFAULT_SAMPLE",
    "RUNS_FILE",
    "Split",
    "source_group",
    "split_of",
    "routing_cases",
    "read_runs",
    "collect_runs",
    "seed_memory",
    "MEMORY_POLICY",
    "FRESH_FILE",
    "fresh_cases",
]

Split = Literal["train", "calib", "test"]

RUNS_FILE = Path(__file__).parent / "data" / "routing" / "runs.jsonl"

DEFAULT_SAMPLE: dict[str, int] = {
    "live_simple": 158,
    "live_multiple": 150,
    "live_irrelevance": 120,
    "simple_python": 50,
    "multiple": 50,
    "irrelevance": 50,
}
"""Items drawn per BFCL category (live_simple: all of its non-reserved items)."""

LIVE = ("live_simple", "live_multiple", "live_irrelevance")

FRESH_FILE = RUNS_FILE.with_name("fresh_runs.jsonl")
FRESH_SAMPLE: dict[str, int] = {"live_multiple": 100, "live_irrelevance": 60}
"""A second held-out draw of live items, none in the routing set (live_simple has no item
left): drawn after the score's design was fixed, so it checks the test split's result on
items no decision was ever made with."""


def source_group(case_id: str) -> str:
    """The group an item shares its source with. A live id's middle number
    (``live_multiple_12-4-0``: group 4) names the conversation it was taken from, and items of
    one group offer the same tools, so they must sit on one side of every split; live items
    of different categories share a group when they share that number. Other items are
    their own group."""
    prefix, _, number = case_id.rpartition("_")
    if prefix.startswith("live_") and number.count("-") == 2:
        return f"live:{number.split('-')[1]}"
    return case_id


def split_of(case_id: str) -> Split:
    """50% train, 20% calib, 30% test, fixed by the item's source group (independent of
    what else is drawn): no item has a sibling of its group in another split."""
    bucket = int(hashlib.sha256(source_group(case_id).encode()).hexdigest(), 16) % 10
    return "train" if bucket < 5 else "calib" if bucket < 7 else "test"


def routing_cases(sample: dict[str, int] | None = None, seed: int = 0) -> list[Case]:
    """The drawn items, in a seeded shuffle so that a partial collection is a fair sample."""
    cases: list[Case] = []
    for category, count in (sample or DEFAULT_SAMPLE).items():
        pool = load_category(category)
        cases += random.Random(f"{seed}:{category}").sample(pool, min(count, len(pool)))
    random.Random(seed).shuffle(cases)
    return cases


def fresh_cases(sample: dict[str, int] | None = None, seed: int = 0) -> list[Case]:
    """Live items outside the routing set, split ``fresh``."""
    taken = {case.id for case in routing_cases()}
    cases: list[Case] = []
    for category, count in (sample or FRESH_SAMPLE).items():
        pool = [case for case in load_category(category) if case.id not in taken]
        cases += random.Random(f"fresh:{seed}:{category}").sample(pool, min(count, len(pool)))
    random.Random(f"fresh:{seed}").shuffle(cases)
    return cases


def read_runs(path: Path = RUNS_FILE) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    runs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            runs.append(json.loads(line))
    return runs


MEMORY_POLICY = "slm_memory"
"""The SLM with a warm memory: examples from the LLM's decisions on the train and calib splits."""


def _run_line(
    case: Case,
    policy: str,
    tiers: Tiers,
    store: TraceStore,
    graph: Any,
    recall: Recall | None,
    split: str | None = None,
) -> dict[str, Any]:
    preset = "slm" if policy == MEMORY_POLICY else policy
    result = run_case(case, tiers, TierPolicy.preset(preset), store, graph, recall)
    calls = []
    for step in store.get_run(result.run_id).steps:
        for call in step.model_calls:
            calls.append(
                {
                    "node": call.node,
                    "tier": call.tier,
                    "model": call.model,
                    "parsed": call.parsed,
                    "error": call.error,
                    "confidence": call.confidence,
                    "choice": call.choice_probabilities,
                    "signals": call.signals.to_json() if call.signals else None,
                    "prompt_tokens": call.prompt_tokens,
                    "completion_tokens": call.completion_tokens,
                    "latency_ms": call.latency_ms,
                }
            )
    return {
        "id": case.id,
        "category": case.category,
        "split": split or split_of(case.id),
        "policy": policy,
        "correct": result.correct,
        "error_type": result.error_type,
        "output": result.output,
        "latency_ms": round(result.latency_ms, 1),
        "calls": calls,
    }


def _jobs(cases: Sequence[Case], policies: Iterable[str]) -> list[tuple[Case, str]]:
    """The SLM and the LLM run every item; with a warm memory, the SLM runs the live test
    items again. Paired live items come first (what the routing result needs most), then
    the other paired items, then the train split (the LLM's runs there let thresholds be
    chosen on out-of-fold scores over train and calib together)."""
    jobs = []
    for policy in policies:
        for case in cases:
            split, live = split_of(case.id), case.category in LIVE
            if policy == MEMORY_POLICY and (split != "test" or not live):
                continue
            jobs.append((case, policy))

    def phase(job: tuple[Case, str]) -> int:
        case, policy = job
        if split_of(case.id) == "train":
            return 4 + (policy != "slm")
        return (0 if case.category in LIVE else 2) + (policy != "slm")

    return sorted(jobs, key=phase)


def collect_runs(
    cases: Sequence[Case],
    tiers: Tiers,
    store: TraceStore,
    *,
    path: Path = RUNS_FILE,
    policies: Sequence[str] = ("slm", "llm"),
    stage: str = "runs",
    on_progress: OnProgress | None = None,
    recall: Recall | None = None,
    split: str | None = None,
) -> int:
    """Run what ``path`` does not hold yet, appending a line per run; returns how many ran.
    ``on_progress`` hears of each run as ``stage``, ``correct`` or ``wrong``."""
    done = {(run["id"], run["policy"]) for run in read_runs(path)}
    todo = [(case, policy) for case, policy in _jobs(cases, policies) if (case.id, policy) not in done]
    path.parent.mkdir(parents=True, exist_ok=True)
    graph = build_tool_call_graph()
    for number, (case, policy) in enumerate(todo, start=1):
        line = _run_line(case, policy, tiers, store, graph, recall, split)
        with path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(line, ensure_ascii=False) + "\n")
        if on_progress is not None:
            outcome = "correct" if line["correct"] else "wrong"
            on_progress(Progress(stage, number, len(todo), outcome, f"{case.id} {policy}"))
    return len(todo)


def seed_memory(recall: Recall, cases: Mapping[str, Case], path: Path = RUNS_FILE) -> int:
    """Fill ``recall``'s memory with the LLM's decisions on the train and calib splits (provenance
    ``llm``: right or wrong, as a deployment would have them); returns how many."""
    added = 0
    for run in read_runs(path):
        if run["policy"] != "llm" or run["split"] == "test" or run["id"] not in cases:
            continue
        case = cases[run["id"]]
        names = registry_for(case).names()
        ((tool, arguments),) = run["output"][0].items() if run["output"] else ((None, None),)
        if recall.remember(request_text(case), names, tool, arguments, "llm", None) is None:
            added += 1
    return added
