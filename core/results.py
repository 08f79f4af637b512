"""The tables of the evaluation result files (``evals/results/*.json``): the rows that the
Markdown summaries (``tierflow.evals``) and the console's Evaluations page both show.

Reading a results file is product code (the console shows them); producing one is the
evaluations' (``tierflow eval ...``), which import this and nothing the other way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = [
    "POLICY_ORDER",
    "TOOLS_HEADERS",
    "fmt",
    "ordered_policies",
    "shown_policy",
    "tools_rows",
    "bench_rows",
    "curve_points",
    "curve_files",
    "curve_design",
]


def fmt(value: Any, kind: str = "") -> str:
    """A cell: rates as percentages, milliseconds as seconds, ``–`` for nothing."""
    if value is None:
        return "–"
    if kind == "%":
        return f"{100 * value:.1f}%"
    if kind == "s":
        return f"{value / 1000:.2f} s"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


POLICY_ORDER = ("slm", "tiered", "llm")


def ordered_policies(policies: dict[str, Any]) -> list[str]:
    """Policy labels cheapest first: slm, tiered, llm, then any others."""
    return sorted(policies, key=lambda p: (POLICY_ORDER.index(p) if p in POLICY_ORDER else 9, p))


def shown_policy(label: str, entry: dict[str, Any]) -> str:
    """A policy's label for tables, with its confidence threshold when it has one."""
    threshold = (entry.get("policy") or {}).get("min_confidence") or 0
    return f"{label} (confidence ≥ {threshold:.2f})" if threshold else label


def tools_rows(data: dict[str, Any]) -> list[list[str]]:
    rows = []
    for label in ordered_policies(data.get("policies", {})):
        entry = data["policies"][label]
        m = entry["metrics"]
        rows.append(
            [
                shown_policy(label, entry),
                str(m["items"]),
                fmt(m["accuracy"], "%"),
                fmt(m["valid_call_rate"], "%"),
                fmt(m["escalation_rate"], "%"),
                fmt(m["slm_share"], "%"),
                f"{m['llm_prompt_tokens']} + {m['llm_completion_tokens']}",
                fmt(m["latency_ms_p50"], "s"),
                fmt(m["latency_ms_p95"], "s"),
            ]
        )
    return rows


TOOLS_HEADERS = (
    "policy",
    "items",
    "accuracy",
    "valid calls",
    "escalated",
    "SLM share",
    "LLM tokens (prompt + completion)",
    "p50",
    "p95",
)


def bench_rows(data: dict[str, Any]) -> list[list[str]]:
    """(measure, value) rows, shared by the Markdown summary and the console."""
    o, s, sel, mem = data["orchestration"], data["slm_throughput"], data["selection"], data["memory"]
    rows = [
        ["task graph on scripted models (per run)", f"{o['tierflow_ms_per_run']:.2f} ms"],
        ["bare LangGraph, same shape (per run)", f"{o['bare_langgraph_ms_per_run']:.2f} ms"],
        ["overhead per node (graph + tracing)", f"{o['overhead_ms_per_node']:.2f} ms"],
        ["ratio tierflow / bare", f"{o['ratio']:.1f}×"],
        ["SLM tokens/s, raw llama-cpp-python", f"{s['raw_tokens_per_s']:.1f}"],
        ["SLM tokens/s, through tierflow", f"{s['tierflow_tokens_per_s']:.1f}"],
        ["SLM throughput ratio tierflow / raw", f"{s['ratio']:.3f}"],
    ]
    for key, value in sel.items():
        count, _, cache = key.split("_")
        rows.append(
            [
                f"select_tool with {count} tools, cache {cache}: p50 / p95",
                f"{fmt(value['p50_ms'], 's')} / {fmt(value['p95_ms'], 's')}",
            ]
        )
    if costs := data.get("decision_costs"):
        rows += [
            [
                f"recall for select_tool and extract_args ({costs['decisions_in_memory']} decisions)",
                f"{costs['recall_ms_p50']:.1f} ms p50, {costs['recall_ms_p95']:.1f} ms p95",
            ],
            [
                "escalation score of a choice and a call (features, tool similarity, P(wrong))",
                f"{costs['score_ms_p50']:.3f} ms",
            ],
            ["memory of the embedding model (MiniLM int8)", f"{costs['embedding_model_mib']:.0f} MiB"],
        ]
    if signal := data.get("signal_costs"):
        rows.append(
            [
                "signals and P(wrong) of a kit step's SLM output: choose / extract / text (p50)",
                " / ".join(f"{signal[f'{kind}_ms_p50']:.3f} ms" for kind in ("choose", "extract", "text")),
            ]
        )
    if past := data.get("past_output_costs"):
        rows.append(
            [
                f"nearest verified output of a step ({past['stored']} stored): lookup / keep (p50)",
                f"{past['lookup_ms_p50']:.1f} ms / {past['add_ms_p50']:.1f} ms",
            ]
        )
    if "error" in mem:
        rows.append(["peak RSS", f"failed: {mem['error']}"])
    else:
        rows.append(["peak RSS, tierflow process (SLM in process)", f"{mem['tierflow_mib']:.0f} MiB"])
        if mem.get("llm_server_mib"):
            rows.append(["peak RSS, embedded LLM server", f"{mem['llm_server_mib']:.0f} MiB"])
    return rows


def curve_points(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The learning curve (``learning_curve.json``), one row per point: the decisions learned,
    the SLM's accuracy (all and live_multiple), ``tiered``'s accuracy, SLM share and LLM tokens
    per item, and the training's minutes, steps and peak memory (None at the base point)."""
    rows = []
    for point, entry in (data.get("points") or {}).items():
        slm = entry["modes"].get("slm", {})
        tiered = entry["modes"].get("tiered", {})
        training = entry.get("training") or {}
        rows.append(
            {
                "decisions learned": int(point),
                "slm": slm.get("accuracy"),
                "slm, live_multiple": slm.get("by_kind", {}).get("live_multiple", {}).get("accuracy"),
                "tiered": tiered.get("accuracy"),
                "tiered: SLM share": tiered.get("slm_share"),
                "tiered: LLM tokens per item": tiered.get("llm_tokens_per_item"),
                "training minutes": training["seconds"] / 60 if training else None,
                "training steps": training.get("steps"),
                "peak memory MiB": training.get("peak_memory_mb"),
            }
        )
    return sorted(rows, key=lambda row: row["decisions learned"])


def curve_files(directory: Path) -> list[Path]:
    """The learning curves' result files in ``directory``, one a design: the first design's
    (``learning_curve.json``) first, then the others by name."""
    found = directory.glob("learning_curve*.json") if directory.is_dir() else []
    return sorted(found, key=lambda path: (path.name != "learning_curve.json", path.name))


def curve_design(data: dict[str, Any]) -> tuple[str, float]:
    """What a curve's adapters learned from, in words, and their learning rate (the first
    design's file predates the ``design`` key)."""
    design = data.get("design") or {"lessons": "all", "learning_rate": 5e-4}
    learned = (
        "verified LLM decisions (BFCL's checker marks them right)"
        if design["lessons"] == "verified"
        else "LLM decisions"
    )
    return learned, float(design["learning_rate"])
