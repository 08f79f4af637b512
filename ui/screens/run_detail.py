"""One run: its graph coloured by tier, a timeline, every model and tool call, and replays
of a model call on the other tier."""

from __future__ import annotations

import streamlit as st
from tierflow.errors import RunNotFoundError, TierflowError
from tierflow.graphs.replay import other_tier, replay_call
from tierflow.ui.graph import run_graph_dot
from tierflow.ui.resources import current_app
from tierflow.ui.views import (
    STATUS_BADGE,
    policy_label,
    run_options,
    show_evidence,
    show_model_call,
    show_tool_call,
    timeline_chart,
)

app = current_app()
st.title("Run detail")

recent = app.store.list_runs(limit=200, graph="task")
options = run_options(recent)
wanted = st.query_params.get("run") or st.session_state.get("last_run")
if wanted and wanted not in options:
    try:
        found = app.store.get_run(wanted)
        options = {found.run_id: f"{found.run_id[:8]} · {found.status}", **options}
    except RunNotFoundError:
        st.warning(f"There is no run {wanted!r}; pick one below.")
        wanted = None
if not options:
    st.info("No runs yet. Run a task first.")
    st.stop()
keys = list(options)
run_id = st.selectbox(
    "Run", keys, index=keys.index(wanted) if wanted in keys else 0, format_func=options.__getitem__
)
if run_id is None:
    st.stop()
st.query_params["run"] = run_id
trace = app.store.get_run(run_id)

st.markdown(f"{STATUS_BADGE.get(trace.status, 'unknown')} · policy {policy_label(trace.policy)}")
st.caption("Task")
st.text(trace.task)
if trace.answer:
    st.caption("Answer")
    st.text(trace.answer)
if trace.error:
    st.error(trace.error)
stats = trace.stats
columns = st.columns(5)
columns[0].metric("model calls", stats.model_calls)
columns[1].metric("SLM share", f"{100 * (stats.slm_share or 0):.0f}%")
columns[2].metric("LLM tokens", stats.llm_prompt_tokens + stats.llm_completion_tokens)
columns[3].metric("escalations", stats.escalations)
columns[4].metric("time", f"{(trace.duration_ms or 0) / 1000:.1f} s")

graph_column, timeline_column = st.columns([2, 3])
with graph_column:
    st.subheader("Graph")
    st.caption("green: SLM · violet: LLM · orange: escalated · grey: tool · pale: not visited")
    st.graphviz_chart(run_graph_dot(trace))
with timeline_column:
    st.subheader("Timeline")
    chart = timeline_chart(trace)
    if chart is not None:
        st.altair_chart(chart, width="stretch")

st.subheader("Steps")
for step in trace.steps:
    st.markdown(f"**{step.seq}. {step.node}** · {step.duration_ms or 0:.0f} ms · {step.status}")
    if step.summary:
        st.text(step.summary)
    if step.evidence:
        show_evidence(trace, step.evidence)
    for call in step.model_calls:
        show_model_call(call, key=f"call-{call.id}")
        target = other_tier(call.tier)
        if st.button(f"Replay this call on the {target.upper()}", key=f"replay-{call.id}"):
            try:
                with st.spinner(f"Replaying on the {target} …"):
                    replay = replay_call(app.store, app.tiers, call.id, target)
                st.session_state[f"replayed-{call.id}"] = replay.run_id
            except TierflowError as exc:
                st.error(exc.message)
        replay_run = st.session_state.get(f"replayed-{call.id}")
        if replay_run:
            replayed = app.store.get_run(replay_run).steps[0].model_calls[0]
            left, right = st.columns(2)
            left.caption(f"original · {call.tier.upper()} · {call.model}")
            left.code(call.raw_output or "", language=None, wrap_lines=True)
            right.caption(f"replay · {replayed.tier.upper()} · {replayed.model} · run {replay_run}")
            right.code(replayed.raw_output or replayed.error or "", language=None, wrap_lines=True)
    for tool in step.tool_calls:
        show_tool_call(tool)

replays = [r for r in app.store.list_runs(limit=500, graph="replay") if r.parent_run_id == run_id]
if replays:
    st.subheader("Stored replays of this run")
    for replay_summary in replays:
        replayed_trace = app.store.get_run(replay_summary.id)
        for step in replayed_trace.steps:
            for call in step.model_calls:
                show_model_call(call, key=f"stored-{call.id}")
