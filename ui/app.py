"""The tierflow console: ``tierflow ui`` (or ``make run``) serves this with Streamlit."""

from __future__ import annotations

from pathlib import Path

import streamlit as st
from tierflow.ui.auth import token_given

HERE = Path(__file__).parent

st.set_page_config(page_title="tierflow", page_icon=":material/account_tree:", layout="wide")

PAGES = {
    "Tasks": [
        st.Page(
            HERE / "screens" / "run_task.py", title="Run a task", icon=":material/play_arrow:", default=True
        ),
        st.Page(HERE / "screens" / "runs.py", title="Runs", icon=":material/list:"),
        st.Page(HERE / "screens" / "run_detail.py", title="Run detail", icon=":material/account_tree:"),
        st.Page(HERE / "screens" / "compare.py", title="Compare runs", icon=":material/compare_arrows:"),
        st.Page(HERE / "screens" / "jobs.py", title="Jobs", icon=":material/work_history:"),
        st.Page(HERE / "screens" / "memory.py", title="Memory", icon=":material/library_books:"),
    ],
    "Numbers": [
        st.Page(HERE / "screens" / "costs.py", title="Cost", icon=":material/savings:"),
        st.Page(HERE / "screens" / "evals.py", title="Evaluations", icon=":material/monitoring:"),
        st.Page(HERE / "screens" / "calibration.py", title="Calibration", icon=":material/tune:"),
    ],
}

# A console shared on the network asks every session for its token before any page runs
# (navigation is still declared, so that a page's own address cannot skip the gate).
allowed = token_given()
page = st.navigation(PAGES, position="sidebar" if allowed else "hidden")
if allowed:
    page.run()
