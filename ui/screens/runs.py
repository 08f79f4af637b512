"""Runs: a searchable, filterable list; pick one to open its detail."""

from __future__ import annotations

from datetime import UTC, datetime, time

import streamlit as st
from tierflow.records import RUN_STATUSES
from tierflow.ui.resources import current_app
from tierflow.ui.views import runs_frame

app = current_app()
st.title("Runs")

search, status, policy, since = st.columns([3, 2, 2, 2])
text = search.text_input("Search the task text")
statuses = status.multiselect("Status", list(RUN_STATUSES))
policies = policy.multiselect("Policy", ["tiered", "slm", "llm", "custom"])
day = since.date_input("Since", value=None)
share_column, tokens_column, seconds_column, limit_column = st.columns([3, 2, 2, 2])
share = share_column.slider("SLM share of calls", 0.0, 1.0, (0.0, 1.0), step=0.05)
max_tokens = tokens_column.number_input("LLM tokens at most", min_value=0, value=None, step=100)
max_seconds = seconds_column.number_input("Seconds at most", min_value=0.0, value=None, step=1.0)
limit = limit_column.slider("How many, newest first", 10, 1000, 200, step=10)

runs = app.store.list_runs(
    limit=limit,
    search=text or None,
    exclude_graphs=("replay",),  # a replay is shown with the run it replays
    since=datetime.combine(day, time.min, tzinfo=UTC) if day else None,
)
frame = runs_frame(runs)
if statuses:
    frame = frame[frame["status"].isin(statuses)]
if policies:
    frame = frame[frame["policy"].isin(policies)]
if share != (0.0, 1.0):
    frame = frame[frame["SLM share"].between(share[0], share[1])]
if max_tokens is not None:
    frame = frame[frame["LLM tokens"] <= max_tokens]
if max_seconds is not None:
    frame = frame[frame["seconds"] <= max_seconds]

if frame.empty:
    st.info("No runs match. Run a task first, or loosen the filters.")
    st.stop()

st.caption(f"{len(frame)} run(s). Select a row to open it.")
selection = st.dataframe(
    frame,
    hide_index=True,
    width="stretch",
    on_select="rerun",
    selection_mode="single-row",
    column_config={
        "SLM share": st.column_config.ProgressColumn(
            "SLM share", min_value=0.0, max_value=1.0, format="percent"
        ),
        "seconds": st.column_config.NumberColumn("seconds", format="%.1f"),
        "started": st.column_config.DatetimeColumn("started", format="YYYY-MM-DD HH:mm:ss"),
    },
    key="runs_table",
)
rows = selection.selection.rows if selection else []
if rows:
    st.switch_page("screens/run_detail.py", query_params={"run": frame.iloc[rows[0]]["run"]})
