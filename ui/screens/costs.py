"""Cost: the share of calls the SLM served, LLM tokens used, and the LLM tokens and money
avoided compared with sending every call to the LLM, per run and across runs."""

from __future__ import annotations

import pandas as pd
import streamlit as st
from tierflow.agents.budget import Prices
from tierflow.records import slm_share
from tierflow.ui.resources import current_app
from tierflow.ui.views import cost_of, run_options

app = current_app()
st.title("Cost")

left, right, count = st.columns(3)
prompt_price = left.number_input(
    "LLM price from your settings, US$ per million prompt tokens",
    0.0,
    1000.0,
    app.settings.llm_price_prompt_per_mtok,
    step=0.5,
)
completion_price = right.number_input(
    "LLM price from your settings, US$ per million completion tokens",
    0.0,
    1000.0,
    app.settings.llm_price_completion_per_mtok,
    step=0.5,
)
prices = Prices(prompt_price, completion_price)
limit = count.slider("Runs, newest first", 5, 1000, 100, step=5)
st.caption(
    "Avoided: the tokens the SLM read and wrote, priced as if the LLM had served those calls "
    "(tokenizers differ, so it is an estimate). Defaults: TIERFLOW_LLM_PRICE_PROMPT_PER_MTOK and "
    "TIERFLOW_LLM_PRICE_COMPLETION_PER_MTOK."
)

if app.settings.llm_base_url is None:
    st.info(
        "Your LLM tier is the embedded local server, which has no per-token fee. The prices "
        "above are your settings (their defaults are GPT-4o's list prices): the figures below "
        "are what the same tokens would cost at a hosted LLM at those prices.",
        icon=":material/info:",
    )

runs = app.store.list_runs(limit=limit, graph="task")
if not runs:
    st.info("No runs yet. Run a task first.")
    st.stop()

rows = []
for run in runs:
    cost = cost_of(run, prices)
    rows.append(
        {
            "run": run.id,
            "started": run.created_at,
            "task": run.task,
            "model calls": run.model_calls,
            "SLM calls": run.slm_calls,
            "LLM tokens": cost["llm_tokens"],
            "LLM tokens avoided": cost["avoided_tokens"],
            "cost $": cost["cost"],
            "avoided $": cost["avoided_cost"],
        }
    )
frame = pd.DataFrame(rows)

calls, slm = int(frame["model calls"].sum()), int(frame["SLM calls"].sum())
columns = st.columns(4)
share = slm_share(slm, calls)
columns[0].metric("SLM share of calls", f"{100 * share:.0f}%" if share is not None else "–")
columns[1].metric("LLM tokens used", f"{int(frame['LLM tokens'].sum()):,}")
columns[2].metric("LLM tokens avoided", f"{int(frame['LLM tokens avoided'].sum()):,}")
avoided, total = frame["avoided $"].sum(), (frame["cost $"] + frame["avoided $"]).sum()
share_avoided = f" ({100 * avoided / total:.0f}%)" if total else ""
columns[3].metric(
    "LLM cost avoided",
    f"${avoided:.4f}",
    help=f"of US\\${total:.4f} had every call gone to the LLM{share_avoided}",  # \$: not LaTeX
)

st.subheader("Tokens per run")
chart = frame.set_index(frame["run"].str[:8])[["LLM tokens", "LLM tokens avoided"]]
st.bar_chart(chart, stack=True, color=["#8e24aa", "#2e7d32"])

st.subheader("Per run")
st.dataframe(frame, hide_index=True, width="stretch")

st.subheader("One run")
options = run_options(runs)
chosen = st.selectbox("Run", list(options), format_func=options.__getitem__)
one = frame[frame["run"] == chosen].iloc[0]
columns = st.columns(4)
one_share = slm_share(int(one["SLM calls"]), int(one["model calls"]))
columns[0].metric("SLM share", f"{100 * one_share:.0f}%" if one_share is not None else "–")
columns[1].metric("LLM tokens", int(one["LLM tokens"]))
columns[2].metric("LLM tokens avoided", int(one["LLM tokens avoided"]))
columns[3].metric("LLM cost / avoided", f"${one['cost $']:.4f} / ${one['avoided $']:.4f}")
