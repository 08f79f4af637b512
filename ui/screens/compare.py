"""Compare two runs side by side: steps, tiers, outputs, tokens and time."""

from __future__ import annotations

import pandas as pd
import streamlit as st
from tierflow.records import RunTrace
from tierflow.ui.resources import current_app
from tierflow.ui.views import policy_label, run_options

app = current_app()
st.title("Compare runs")

runs = app.store.list_runs(limit=200, graph="task")
if len(runs) < 2:
    st.info("Two runs are needed to compare. Run a task (for instance under two policies) first.")
    st.stop()
options = run_options(runs)
keys = list(options)
left_pick, right_pick = st.columns(2)
first = left_pick.selectbox("First run", keys, index=1, format_func=options.__getitem__)
second = right_pick.selectbox("Second run", keys, index=0, format_func=options.__getitem__)
if first is None or second is None:
    st.stop()


def steps_frame(trace: RunTrace) -> pd.DataFrame:
    rows = []
    for step in trace.steps:
        calls = step.model_calls
        rows.append(
            {
                "step": f"{step.seq}. {step.node}",
                "tiers": " → ".join(call.tier for call in calls) or "tool",
                "output": step.summary or "",
                "tokens": sum(call.prompt_tokens + call.completion_tokens for call in calls),
                "ms": step.duration_ms,
            }
        )
    return pd.DataFrame(rows, columns=["step", "tiers", "output", "tokens", "ms"])


for column, run_id in zip(st.columns(2), (first, second), strict=True):
    trace = app.store.get_run(run_id)
    stats = trace.stats
    with column:
        st.caption(f"run {run_id} · {trace.status} · policy {policy_label(trace.policy)}")
        st.text(trace.task)
        st.caption("Answer")
        st.text(trace.answer or trace.error or "")
        metrics = st.columns(3)
        metrics[0].metric("SLM share", f"{100 * (stats.slm_share or 0):.0f}%")
        metrics[1].metric("LLM tokens", stats.llm_prompt_tokens + stats.llm_completion_tokens)
        metrics[2].metric("time", f"{(trace.duration_ms or 0) / 1000:.1f} s")
        st.dataframe(steps_frame(trace), hide_index=True, width="stretch")
