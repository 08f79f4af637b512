"""Pieces the console's pages share. Model output and task text are always shown as text
(``st.text``, ``st.code``, ``st.json``, data frames), never as Markdown or HTML, so a task
that contains HTML or Markdown shows up literally."""

from __future__ import annotations

import json
from typing import Any

import altair as alt
import pandas as pd
import streamlit as st
from tierflow.agents.budget import Prices
from tierflow.agents.policy import TierPolicy
from tierflow.agents.protocol import Message
from tierflow.memory.traces import RunSummary
from tierflow.records import RunTrace, StoredModelCall, ToolCallRecord
from tierflow.ui.graph import TIER_COLOURS

__all__ = [
    "policy_label",
    "runs_frame",
    "run_options",
    "tier_badges",
    "show_model_call",
    "show_tool_call",
    "timeline_chart",
    "cost_of",
]

_BADGE = {"slm": ":green-badge[SLM]", "llm": ":violet-badge[LLM]"}
STATUS_BADGE = {
    "succeeded": ":green-badge[succeeded]",
    "failed": ":red-badge[failed]",
    "interrupted": ":orange-badge[interrupted]",
    "budget_exceeded": ":orange-badge[budget exceeded]",
    "running": ":blue-badge[running]",
}


def policy_label(policy: dict[str, Any] | None) -> str:
    """``slm``, ``llm`` or ``tiered`` for the presets, ``custom`` otherwise."""
    if not policy:
        return "–"
    try:
        return TierPolicy.model_validate(policy).label()
    except ValueError:
        return "custom"


def runs_frame(runs: list[RunSummary]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "run": run.id,
                "started": run.created_at,
                "status": run.status,
                "policy": policy_label(run.policy),
                "graph": run.graph,
                "task": run.task,
                "SLM share": run.slm_share,
                "LLM tokens": run.llm_prompt_tokens + run.llm_completion_tokens,
                "escalations": run.escalations,
                "seconds": (run.duration_ms or 0) / 1000,
            }
            for run in runs
        ],
        columns=[
            "run",
            "started",
            "status",
            "policy",
            "graph",
            "task",
            "SLM share",
            "LLM tokens",
            "escalations",
            "seconds",
        ],
    )


def run_options(runs: list[RunSummary]) -> dict[str, str]:
    """run id -> a one-line label for select boxes (labels are plain text there)."""
    return {run.id: f"{run.id[:8]} · {run.status} · {' '.join(run.task.split())[:70]}" for run in runs}


def tier_badges(tiers: list[str]) -> str:
    """Markdown badges for tiers; only our own fixed labels ever go through Markdown."""
    return " ".join(_BADGE.get(tier, "") for tier in tiers)


def _messages_text(messages: list[Message]) -> str:
    return "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in messages)


def show_model_call(call: StoredModelCall, *, key: str, expanded: bool = False) -> None:
    tokens = f"{call.prompt_tokens} → {call.completion_tokens} tokens"
    seconds = f"{call.latency_ms / 1000:.2f} s"
    title = f"{call.node} · {call.tier.upper()} · {call.model} · {tokens} · {seconds}"
    if call.escalated:
        title += " · escalated"
    if call.escalation_refused:
        title += f" · escalation refused ({call.escalation_refused})"
    if call.redacted:
        title += " · redacted"
    with st.expander(title, expanded=expanded):
        if call.escalated or call.escalation_refused or call.error:
            label = (
                "Escalation reason"
                if call.escalated
                else "Escalation refused"
                if call.escalation_refused
                else "Error"
            )
            st.caption(label)
            st.code(call.escalation_reason or call.error or "", language=None, wrap_lines=True)
        if call.redacted:
            st.caption("Redacted before sending: " + ", ".join(call.redacted))
        columns = st.columns(5)
        columns[0].metric("prompt tokens", call.prompt_tokens)
        columns[1].metric("completion tokens", call.completion_tokens)
        columns[2].metric("latency", f"{call.latency_ms / 1000:.2f} s")
        columns[3].metric("confidence", f"{call.confidence:.2f}" if call.confidence is not None else "–")
        columns[4].metric("P(wrong)", f"{call.p_wrong:.2f}" if call.p_wrong is not None else "–")
        if call.choice_probabilities:
            ranked = ", ".join(f"{option} {p:.2f}" for option, p in call.choice_probabilities.items())
            st.caption(f"Choice probabilities: {ranked}")
        if call.missing_signals:
            st.caption(
                "Signals the model's server did not give (judged without them): "
                + ", ".join(call.missing_signals)
            )
        if call.recall:
            st.caption("Memory: " + ", ".join(f"{key} {value}" for key, value in call.recall.items()))
        st.caption("Prompt (exact messages)")
        st.code(_messages_text(call.messages), language=None, wrap_lines=True)
        if call.output_schema:
            st.caption("Output schema (grammar)")
            st.json(call.output_schema, expanded=False)
        st.caption(f"Raw output (finish: {call.finish_reason or '–'})")
        st.code(call.raw_output or "", language=None, wrap_lines=True)
        st.caption("Parsed output")
        if isinstance(call.parsed, dict | list):
            st.json(call.parsed)
        else:
            st.code("" if call.parsed is None else str(call.parsed), language=None, wrap_lines=True)


def show_tool_call(call: ToolCallRecord) -> None:
    st.caption(f"tool {call.tool} · {call.latency_ms:.0f} ms")
    st.code(json.dumps(call.arguments, ensure_ascii=False, indent=1), language="json")
    st.code(call.error if call.error else (call.result or ""), language=None, wrap_lines=True)


def evidence_frame(trace: RunTrace, evidence: dict[str, Any]) -> pd.DataFrame:
    """The document chunks a step retrieved, or was shown, and whether its answer cited
    each: a ``retrieve`` or task ``answer`` step lists its chunks, a cited answer names
    them by id (found in the run's retrieval step)."""
    known = {
        chunk["id"]: chunk
        for step in trace.steps
        for chunk in (step.evidence or {}).get("retrieved") or []
        if isinstance(chunk, dict) and "id" in chunk
    }
    cited = set(evidence.get("cited") or [])
    shown: dict[str, list[str]] = {}
    for tier, ids in (evidence.get("shown") or {}).items():
        for chunk_id in ids:
            shown.setdefault(chunk_id, []).append(tier.upper())
    chunks = evidence.get("retrieved") or [known.get(chunk_id, {"id": chunk_id}) for chunk_id in shown]
    rows = []
    for chunk in chunks:
        name = chunk.get("ref") or chunk.get("source") or chunk.get("id", "")
        rows.append(
            {
                "chunk": name,
                "ranking": chunk.get("ranking", chunk.get("score")),
                "similarity": chunk.get("similarity"),
                "collection": chunk.get("collection", ""),
                "local only": bool(chunk.get("local_only")),
                "shown to": ", ".join(shown.get(chunk.get("id", ""), [])),
                "cited": chunk.get("id") in cited or name in cited,
                "text": chunk.get("text", ""),
            }
        )
    return pd.DataFrame(
        rows,
        columns=["chunk", "ranking", "similarity", "collection", "local only", "shown to", "cited", "text"],
    )


EVIDENCE_NOTES = {
    "check": "The SLM's answer was checked because",
    "withheld": "The answer was not given because",
    "citations_repaired": "Cited chunks that did not hold the answer, replaced",
}


def show_evidence(trace: RunTrace, evidence: dict[str, Any]) -> None:
    """A step's retrieved and cited chunks, as text (they are the user's documents)."""
    frame = evidence_frame(trace, evidence)
    if frame.empty:
        return
    query = evidence.get("query") or evidence.get("question")
    st.caption(
        f"Document chunks · {int(frame['cited'].sum())} cited"
        + (" · reranked by the SLM" if evidence.get("reranked") else "")
    )
    if query:
        st.text(f"query: {query}")
    st.dataframe(frame, hide_index=True, width="stretch")
    for key, label in EVIDENCE_NOTES.items():
        if evidence.get(key):
            st.text(f"{label}: {evidence[key]}")


POLICY_COLOURS = alt.Color(
    "policy:N",
    sort=["slm", "tiered", "llm"],
    scale=alt.Scale(
        domain=["slm", "tiered", "llm"],
        range=[TIER_COLOURS["slm"], TIER_COLOURS["both"], TIER_COLOURS["llm"]],
    ),
)
"""Policies in the tier colours of the run graph (tiered: the escalation orange)."""


def accuracy_vs_tokens(results: list[dict[str, Any]]) -> alt.LayerChart:
    """One point per suite and policy: accuracy against LLM tokens per 100 items, so that
    tiered's case (near the LLM's accuracy at a fraction of its tokens) shows at a glance."""
    points = [
        {
            "suite": data.get("suite", ""),
            "policy": label,
            "accuracy %": 100 * m["accuracy"],
            "LLM tokens per 100 items": 100
            * (m["llm_prompt_tokens"] + m["llm_completion_tokens"])
            / m["items"],
        }
        for data in results
        for label, entry in data.get("policies", {}).items()
        if (m := entry["metrics"])["items"]
    ]
    base = alt.Chart(pd.DataFrame(points)).encode(
        x=alt.X("LLM tokens per 100 items:Q"),
        y=alt.Y("accuracy %:Q", scale=alt.Scale(zero=False)),
        color=POLICY_COLOURS,
        tooltip=["suite", "policy", "accuracy %", "LLM tokens per 100 items"],
    )
    lines = base.mark_line(color="#b0bec5").encode(detail="suite:N", color=alt.value("#b0bec5"))
    chart: alt.LayerChart = lines + base.mark_point(size=90, filled=True).encode(shape="suite:N")
    return chart


def timeline_chart(trace: RunTrace) -> alt.Chart | None:
    """One bar per step from its start to its end, coloured by the tier that served it."""
    rows = []
    for step in trace.steps:
        if step.duration_ms is None:
            continue
        offset = (step.started_at - trace.created_at).total_seconds()
        tiers = {call.tier for call in step.model_calls}
        rows.append(
            {
                "step": f"{step.seq:>2} {step.node}",
                "start_s": offset,
                "end_s": offset + step.duration_ms / 1000,
                "tier": ("both" if len(tiers) > 1 else next(iter(tiers))) if tiers else "tool",
            }
        )
    if not rows:
        return None
    domain = list(TIER_COLOURS)
    chart: alt.Chart = (
        alt.Chart(pd.DataFrame(rows))
        .mark_bar()
        .encode(
            y=alt.Y("step:N", sort=None, title=None),
            x=alt.X("start_s:Q", title="seconds since the run started"),
            x2="end_s:Q",
            color=alt.Color(
                "tier:N", scale=alt.Scale(domain=domain, range=[TIER_COLOURS[d] for d in domain])
            ),
            tooltip=[
                "step",
                "tier",
                alt.Tooltip("start_s:Q", format=".2f"),
                alt.Tooltip("end_s:Q", format=".2f"),
            ],
        )
    )
    return chart


def cost_of(summary: RunSummary, prices: Prices) -> dict[str, float]:
    """LLM tokens used and those the SLM served instead, in tokens and dollars at ``prices``.
    The avoided figure assumes the LLM would have read and written about as many tokens as
    the SLM did for the same calls."""
    return {
        "llm_tokens": summary.llm_prompt_tokens + summary.llm_completion_tokens,
        "avoided_tokens": summary.slm_prompt_tokens + summary.slm_completion_tokens,
        "cost": prices.cost(summary.llm_prompt_tokens, summary.llm_completion_tokens),
        "avoided_cost": prices.cost(summary.slm_prompt_tokens, summary.slm_completion_tokens),
    }
