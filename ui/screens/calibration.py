"""Calibration: per graph and node, the labels its SLM outputs have gathered (from
``tierflow calibrate`` and from shadow calls), and what a scorer fitted on them gives: the
share of outputs kept on the SLM against the accuracy lost to sending all to the LLM."""

from __future__ import annotations

from collections import Counter

import pandas as pd
import streamlit as st
from tierflow.agents.calibration import (
    METHODS,
    StepScorers,
    fit_scorers,
    fitted_share,
    scorer_file,
    shipped_priors,
)
from tierflow.ui.resources import current_app

app = current_app()
st.title("Calibration")
st.caption(
    "Each label says whether an SLM output was right: by its gold value (tierflow calibrate "
    "--gold), or by agreement with the LLM on the same input (calibrate, and the share of "
    "everyday outputs TIERFLOW_SHADOW_RATE sends to the LLM too). The estimates are out of "
    "fold: each output is scored by a fit that did not see its run."
)

labels = app.store.labels()
if not labels:
    st.info(
        "No labels yet. Calibrate a graph on sample inputs (tierflow calibrate --graph MODULE:ATTR "
        "--inputs FILE.jsonl), or let shadow calls gather labels from everyday runs."
    )
    st.stop()

pairs = sorted({(label.graph, label.slm_model, label.llm_model) for label in labels})
graph, slm, llm = st.selectbox(
    "Graph and models", pairs, format_func=lambda pair: f"{pair[0]} · {pair[1]} / {pair[2]}"
)
chosen = [label for label in labels if (label.graph, label.slm_model, label.llm_model) == (graph, slm, llm)]
max_loss = st.slider(
    "Accuracy the SLM may lose against all-LLM",
    0.0,
    0.2,
    float(app.settings.policy.loss_or_default),
    step=0.01,
)
scorers, fits = fit_scorers(chosen, graph=graph, slm=slm, llm=llm, max_loss=max_loss, priors=shipped_priors())
saved = StepScorers.load(scorer_file(app.settings.scorers_dir(), graph))

sources = Counter((label.node, label.source) for label in chosen)
rows = []
for fit in fits:
    fitted = saved.nodes.get(fit.node)
    rows.append(
        {
            "node": fit.node,
            "kind": fit.kind,
            "labels": fit.labels,
            "from gold": sources[(fit.node, "gold")],
            "from shadow": sources[(fit.node, "shadow")],
            "SLM wrong": fit.slm_wrong / fit.labels if fit.labels else None,
            "score": METHODS[fit.method],
            "kept on SLM": fit.point.slm_share,
            "est. loss": fit.point.loss,
            "loss, 90% low": fit.point.loss_low,
            "loss, 90% high": fit.point.loss_high,
            "calibrated": str(fitted.trained_on.get("created_at", "yes")) if fitted else "no",
            "threshold in use": fitted.run_threshold(app.settings.policy.max_loss) if fitted else None,
        }
    )
percent = st.column_config.NumberColumn(format="percent")
st.dataframe(
    pd.DataFrame(rows),
    hide_index=True,
    width="stretch",
    column_config={
        name: percent for name in ("SLM wrong", "kept on SLM", "est. loss", "loss, 90% low", "loss, 90% high")
    },
)

node = st.selectbox("Share against accuracy for node", [fit.node for fit in fits])
curve = pd.DataFrame(
    [
        {"accuracy lost": point.loss, "kept on the SLM": point.slm_share}
        for point in scorers.nodes[node].thresholds
    ]
).drop_duplicates()
st.line_chart(curve, x="accuracy lost", y="kept on the SLM")
st.metric("SLM share of the graph's model calls at this loss (estimated)", f"{fitted_share(fits):.0%}")
st.caption(
    f"Refit and save these scorers with: tierflow calibrate --graph {graph} --from-runs "
    f"--max-loss {max_loss:.2f} (a graph named by compile(name=...) takes its MODULE:ATTR here)."
)
