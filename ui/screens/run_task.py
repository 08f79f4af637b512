"""Run a task: the steps appear as they happen; the run ends with a clear status."""

from __future__ import annotations

import streamlit as st
from tierflow.errors import TaskInputError, TierflowError
from tierflow.graphs.runner import check_task
from tierflow.memory.records import Event, StepFailed, StepFinished
from tierflow.settings import POLICY_PRESETS, TierPolicy
from tierflow.ui.resources import current_app
from tierflow.ui.views import STATUS_BADGE, tier_badges

app = current_app()
st.title("Run a task")

with st.form("task"):
    task = st.text_area("Task", placeholder="e.g. Convert 5 miles to kilometers, then add 3.", height=100)
    left, right = st.columns(2)
    preset = left.selectbox(
        "Tier policy",
        POLICY_PRESETS,
        help="tiered: plan on the LLM, the rest on the SLM with escalation. slm / llm: one tier only.",
    )
    max_steps = right.number_input("Budget: at most this many steps", 1, 20, app.settings.max_steps)
    submitted = st.form_submit_button("Run", type="primary")

if submitted:
    try:
        check_task(task)
    except TaskInputError as exc:
        st.error(exc.message)
        st.stop()
    policy = TierPolicy.preset(preset, min_confidence=app.settings.policy.min_confidence)
    with st.status("Running …", expanded=True) as status:

        def on_event(event: Event) -> None:
            if isinstance(event, StepFinished):
                name, summary = st.columns([1, 4])
                name.markdown(f"**{event.node}** {tier_badges(list(event.tiers))}")
                summary.text(event.summary or "")
            elif isinstance(event, StepFailed):
                st.text(f"{event.node} failed: {event.error}")

        try:
            result = app.runner.run(task, policy=policy, on_event=on_event, max_steps=int(max_steps))
        except TierflowError as exc:  # the tiers could not even be set up (a missing model, ...)
            status.update(label="The run could not start", state="error")
            st.error(exc.message)
            if exc.hint:
                st.caption(exc.hint)
            st.stop()
        trace = app.store.get_run(result.run_id)
        escalations = trace.stats.escalations
        label = f"Run {result.run_id} {result.status}" + (f", {escalations} escalated" if escalations else "")
        status.update(
            label=label, state="complete" if result.status == "succeeded" else "error", expanded=True
        )
    if result.hint:
        st.caption(result.hint)
    st.session_state["last_run"] = result.run_id

last = st.session_state.get("last_run")
if last:
    trace = app.store.get_run(last)
    st.markdown(STATUS_BADGE.get(trace.status, "unknown"))
    if trace.status == "succeeded":
        st.subheader("Answer")
        st.text(trace.answer or "")
    else:
        st.error(trace.error or "the run failed")
    stats = trace.stats
    columns = st.columns(4)
    columns[0].metric("model calls", stats.model_calls)
    columns[1].metric("SLM share", f"{100 * (stats.slm_share or 0):.0f}%")
    columns[2].metric("LLM tokens", stats.llm_prompt_tokens + stats.llm_completion_tokens)
    columns[3].metric("time", f"{(trace.duration_ms or 0) / 1000:.1f} s")
    if st.button("Open the run's detail"):
        st.switch_page("screens/run_detail.py", query_params={"run": last})
