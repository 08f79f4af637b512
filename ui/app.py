"""The tierflow console: ``tierflow ui`` (or ``make run``) serves this with Streamlit."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

HERE = Path(__file__).parent

st.set_page_config(page_title="tierflow", page_icon=":material/account_tree:", layout="wide")

PAGES = {
    "Tasks": [
        st.Page(
            HERE / "pages" / "run_task.py", title="Run a task", icon=":material/play_arrow:", default=True
        ),
        st.Page(HERE / "pages" / "runs.py", title="Runs", icon=":material/list:"),
        st.Page(HERE / "pages" / "run_detail.py", title="Run detail", icon=":material/account_tree:"),
        st.Page(HERE / "pages" / "compare.py", title="Compare runs", icon=":material/compare_arrows:"),
    ],
    "Numbers": [
        st.Page(HERE / "pages" / "costs.py", title="Cost", icon=":material/savings:"),
        st.Page(HERE / "pages" / "evals.py", title="Evaluations", icon=":material/monitoring:"),
    ],
}

st.navigation(PAGES).run()
