"""The console's gate when it listens beyond this machine: every browser session must give
the token (``?token=...`` in the first URL, or typed into the form) before any page runs.

``tierflow ui --host ADDRESS --remote`` sets ``TIERFLOW_UI_TOKEN`` for the Streamlit process
(the one you set, or a random one it prints once). On loopback no token is asked for.
"""

from __future__ import annotations

import hmac
import os

import streamlit as st

__all__ = ["token_given", "TOKEN_VARIABLE"]

TOKEN_VARIABLE = "TIERFLOW_UI_TOKEN"
_SESSION_KEY = "tierflow_authenticated"


def _matches(given: str | None, expected: str) -> bool:
    return bool(given) and hmac.compare_digest(str(given).encode(), expected.encode())


def token_given() -> bool:
    """May this session see the console? When not, the token form is shown instead (the
    caller then runs no page)."""
    expected = os.environ.get(TOKEN_VARIABLE, "")
    if not expected or st.session_state.get(_SESSION_KEY):
        return True
    if _matches(st.query_params.get("token"), expected):
        st.session_state[_SESSION_KEY] = True
        del st.query_params["token"]  # not left in the address bar or the history
        return True
    st.title("tierflow")
    st.write("This console is shared on the network: enter its access token.")
    with st.form("token"):
        given = st.text_input("Access token", type="password")
        if st.form_submit_button("Open the console"):
            if _matches(given, expected):
                st.session_state[_SESSION_KEY] = True
                st.rerun()
            st.error("That token is not right.")
    return False
