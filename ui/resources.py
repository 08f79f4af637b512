"""What the console shares between browser sessions: one ``App`` per process (the SLM
loaded once, behind its lock; one embedded LLM server; one trace store).

A session may carry its own ``App`` in ``st.session_state["tierflow_app"]`` (the tests
put one on scripted tiers there); otherwise the process-wide one is used.
"""

from __future__ import annotations

import streamlit as st
from tierflow.app import App
from tierflow.settings import load_settings

__all__ = ["current_app", "shared_app", "SESSION_KEY"]

SESSION_KEY = "tierflow_app"


@st.cache_resource(show_spinner="Starting tierflow …")
def shared_app() -> App:
    """The process-wide App; settings come from TIERFLOW_* and the config file, read once."""
    return App(load_settings())


def current_app() -> App:
    injected = st.session_state.get(SESSION_KEY)
    return injected if isinstance(injected, App) else shared_app()
