"""``tierflow eval tools``: a BFCL category (or a user's case file) under one or more tier
policies, written to ``evals/results/<suite>.json`` with one entry per policy."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tierflow.agents.tiers import Tiers
from tierflow.errors import ConfigError
from tierflow.evals.bfcl import Case, load_case_file, load_category
from tierflow.evals.report import evaluate_policies, markdown_table, write_results
from tierflow.evals.toolcalls import CallRecord, ItemResult, run_cases, summarize_items
from tierflow.memory.traces import TraceStore
from tierflow.records import OnProgress
from tierflow.results import TOOLS_HEADERS, ordered_policies, tools_rows
from tierflow.settings import TierPolicy

if TYPE_CHECKING:
    from tierflow.graphs.recall import Recall

__all__ = ["load_suite", "sample", "suite_file_name", "evaluate_tools", "tools_markdown", "refresh_metrics"]


def load_suite(suite: str | None, cases: Path | None, answers: Path | None) -> tuple[str, list[Case]]:
    """``bfcl:CATEGORY`` or a case file (with an optional answers file): a name and its cases."""
    if (suite is None) == (cases is None):
        raise ConfigError(
            "give either --suite bfcl:CATEGORY or --cases FILE", hint="e.g. --suite bfcl:simple_python"
        )
    if cases is not None:
        return cases.stem, load_case_file(cases, answers)
    assert suite is not None
    source, _, category = suite.partition(":")
    if source != "bfcl" or not category:
        raise ConfigError(f"unknown suite {suite!r}", hint="Suites are bfcl:CATEGORY, e.g. bfcl:multiple.")
    return f"bfcl_{category}", load_category(category)


def sample(cases: Sequence[Case], limit: int | None, seed: int) -> list[Case]:
    """``limit`` cases drawn with ``seed`` (the same for every policy), in file order."""
    if limit is None or limit >= len(cases):
        return list(cases)
    chosen = set(random.Random(seed).sample(range(len(cases)), limit))
    return [case for index, case in enumerate(cases) if index in chosen]


def suite_file_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) + ".json"


def evaluate_tools(
    name: str,
    cases: Sequence[Case],
    tiers: Tiers,
    policies: dict[str, TierPolicy],
    store: TraceStore,
    *,
    seed: int,
    out_dir: Path,
    settings: dict[str, Any],
    on_progress: OnProgress | None = None,
    memory_for: Callable[[str], Recall] | None = None,
    relevance: Callable[[str, Sequence[str]], list[float]] | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Run every policy on the same cases; merge into the suite's result file after each.

    ``memory_for(label)``: online learning, each policy from its own empty memory."""
    path = out_dir / suite_file_name(name)

    def run(label: str, policy: TierPolicy) -> list[ItemResult]:
        recall = memory_for(label) if memory_for else None
        return run_cases(
            cases,
            tiers,
            policy,
            store,
            stage=label,
            on_progress=on_progress,
            recall=recall,
            relevance=relevance,
        )

    data = evaluate_policies(
        path,
        name,
        "tool_calls",
        tiers,
        policies,
        run=run,
        summarize=summarize_items,
        fields={
            "seed": seed,
            "case_ids": [case.id for case in cases],
            "memory": "online learning from an empty memory" if memory_for else "none",
        },
        settings=settings,
        markdown=tools_markdown,
    )
    return path, data


def tools_markdown(data: dict[str, Any]) -> str:
    lines = [f"# {data.get('suite')}: tool calls by tier policy\n"]
    lines.append(markdown_table(TOOLS_HEADERS, tools_rows(data)))
    for label in ordered_policies(data.get("policies", {})):
        entry = data["policies"][label]
        env = entry["environment"]
        errors = ", ".join(f"{k} {v}" for k, v in entry["metrics"]["error_types"].items()) or "none"
        reasons = ", ".join(f"{k} {v}" for k, v in entry["metrics"]["escalation_reasons"].items()) or "none"
        lines.append(
            f"- **{label}**: checker errors: {errors}; escalation reasons: {reasons}. "
            f"Models {env['models'].get('slm')} / {env['models'].get('llm')}, commit "
            f"{(env['git_commit'] or '?')[:10]}{' (dirty)' if env['git_dirty'] else ''}, "
            f"{env['machine']['cores']} cores, {env['created_at']}."
        )
    return "\n".join(lines) + "\n"


def refresh_metrics(path: Path) -> dict[str, Any]:
    """Recompute a tool suite's results file's metrics from the items its runs recorded, and
    rewrite it and its Markdown: for when what a metric means changes (as SLM share did), so
    that figures of runs made before read as the ones made after. Nothing is run again."""
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    for entry in data["policies"].values():
        items = [
            ItemResult(**{**item, "calls": [CallRecord(**call) for call in item["calls"]]})
            for item in entry["items"]
        ]
        entry["metrics"] = summarize_items(items)
    write_results(path, data, tools_markdown(data))
    return data
