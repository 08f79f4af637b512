"""Run a task: it runs in the background while its steps appear as they finish; Cancel
stops it before its next step (the finished steps stay stored); the run ends with a clear
status."""

from __future__ import annotations

import threading
from typing import Any

import streamlit as st
from tierflow.errors import TaskInputError, TierflowError
from tierflow.graphs.runner import check_task
from tierflow.records import StepFailed, StepFinished
from tierflow.settings import POLICY_PRESETS, TierPolicy
from tierflow.ui.resources import current_app
from tierflow.ui.views import STATUS_BADGE, tier_badges

JOB = "task_job"
REFRESH_SECONDS = 1.0

app = current_app()
st.title("Run a task")


def start(task: str, policy: TierPolicy, max_steps: int) -> dict[str, Any]:
    """The run in a thread of its own. A plain dict, not a class of this script: the
    script's classes are new on every rerun, the session's job outlives them."""
    job: dict[str, Any] = {"events": [], "result": None, "error": None}
    job["cancel"], job["done"] = threading.Event(), threading.Event()

    def work() -> None:
        try:
            job["result"] = app.runner.run(
                task, policy=policy, on_event=job["events"].append, max_steps=max_steps, cancel=job["cancel"]
            )
        except TierflowError as exc:  # the tiers could not even be set up (a missing model, ...)
            job["error"] = exc
        finally:
            job["done"].set()

    threading.Thread(target=work, name="tierflow-console-run", daemon=True).start()
    return job


def show_steps(job: dict[str, Any]) -> None:
    for event in list(job["events"]):
        if isinstance(event, StepFinished):
            name, summary = st.columns([1, 4])
            name.markdown(f"**{event.node}** {tier_badges(list(event.tiers))}")
            summary.text(event.summary or "")
        elif isinstance(event, StepFailed):
            st.text(f"{event.node} failed: {event.error}")


@st.fragment(run_every=REFRESH_SECONDS)
def live(job: dict[str, Any]) -> None:
    """Redrawn every second while the run goes on; the page reruns once it has ended."""
    if job["done"].is_set():
        st.rerun(scope="app")
    cancelling = job["cancel"].is_set()
    label = "Cancelling: the run stops before its next step …" if cancelling else "Running …"
    with st.status(label, state="running", expanded=True):
        show_steps(job)
    st.button("Cancel", on_click=job["cancel"].set, disabled=cancelling, key="cancel_run")


def ended(job: dict[str, Any]) -> None:
    error: TierflowError | None = job["error"]
    if error is not None:
        with st.status("The run could not start", state="error", expanded=True):
            st.error(error.message)
            if error.hint:
                st.caption(error.hint)
        return
    result = job["result"]
    trace = app.store.get_run(result.run_id)
    escalations = trace.stats.escalations
    label = f"Run {result.run_id} {result.status}" + (f", {escalations} escalated" if escalations else "")
    with st.status(label, state="complete" if result.status == "succeeded" else "error", expanded=True):
        show_steps(job)
    if result.hint:
        st.caption(result.hint)
    st.session_state["last_run"] = result.run_id


with st.form("task"):
    task = st.text_area("Task", placeholder="e.g. Convert 5 miles to kilometers, then add 3.", height=100)
    left, right = st.columns(2)
    preset = left.selectbox(
        "Tier policy",
        POLICY_PRESETS,
        help="tiered: plan on the LLM, the rest on the SLM with escalation. slm / llm: one tier only.",
    )
    max_steps = right.number_input("Budget: at most this many steps", 1, 20, app.settings.max_steps)
    running = JOB in st.session_state and not st.session_state[JOB]["done"].is_set()
    submitted = st.form_submit_button("Run", type="primary", disabled=running)

if submitted:
    try:
        check_task(task)
    except TaskInputError as exc:
        st.error(exc.message)
        st.stop()
    policy = app.settings.policy.as_preset(preset)
    st.session_state[JOB] = start(task, policy, int(max_steps))

job = st.session_state.get(JOB)
if job is not None:
    if job["done"].is_set():
        ended(job)
    else:
        live(job)

last = st.session_state.get("last_run")
if last and (job is None or job["done"].is_set()):
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
