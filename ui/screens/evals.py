"""Evaluation results from evals/results/, as tables and charts (if present)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import altair as alt
import pandas as pd
import streamlit as st
from tierflow.results import (
    TOOLS_HEADERS,
    bench_rows,
    curve_design,
    curve_files,
    curve_points,
    ordered_policies,
    tools_rows,
)
from tierflow.ui.resources import current_app
from tierflow.ui.views import POLICY_COLOURS, accuracy_vs_tokens

st.title("Evaluations")
directory = Path(st.query_params.get("results") or current_app().settings.resolved_results_dir())
st.caption(f"From {directory}. Produce them with `make eval`, `make eval-full` and `make bench`.")


def load(name: str) -> dict[str, Any]:
    try:
        data = json.loads((directory / name).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


suites = sorted(p.name for p in directory.glob("bfcl_*.json")) if directory.is_dir() else []
OTHERS = (
    "confidence.json",
    "routing.json",
    "tasks.json",
    "summaries.json",
    "bench.json",
)
if not suites and not curve_files(directory) and not any((directory / name).exists() for name in OTHERS):
    st.info("No evaluation results yet.")
    st.stop()

if suites:
    st.subheader("Tool calls (BFCL)")
    rows = []
    for name in suites:
        data = load(name)
        rows += [[data.get("suite", name), *row] for row in tools_rows(data)]
    frame = pd.DataFrame(rows, columns=["suite", *TOOLS_HEADERS])
    st.dataframe(frame, hide_index=True, width="stretch")
    accuracy = frame.assign(accuracy_pct=frame["accuracy"].str.rstrip("%").astype(float))
    st.markdown("**Accuracy against the LLM tokens it took** (per 100 items; upper left is better)")
    st.altair_chart(accuracy_vs_tokens([load(name) for name in suites]), width="stretch")
    st.altair_chart(
        alt.Chart(accuracy)
        .mark_bar()
        .encode(
            x=alt.X("policy:N", sort=["slm", "tiered", "llm"], title=None),
            y=alt.Y("accuracy_pct:Q", title="accuracy %"),
            color=POLICY_COLOURS,
            column=alt.Column("suite:N", title=None),
        ),
    )


def share_curve(points: pd.DataFrame, lines: dict[str, str]) -> None:
    """Accuracy against the share of decisions kept on the SLM, one line per routing."""
    long = pd.concat([points.assign(routing=name, acc=points[column]) for name, column in lines.items()])
    st.altair_chart(
        alt.Chart(long)
        .mark_line(point=True)
        .encode(
            x=alt.X("slm_share:Q", title="share of decisions kept on the SLM", axis=alt.Axis(format="%")),
            y=alt.Y("acc:Q", title="accuracy", axis=alt.Axis(format="%"), scale=alt.Scale(zero=False)),
            color="routing:N",
            tooltip=["threshold", "slm_share", "acc"],
        ),
        width="stretch",
    )


confidence = load("confidence.json")
if confidence:
    st.subheader("Confidence routing")
    test = confidence["test"]
    chosen, items = test["at_threshold"], confidence["items"]
    pct = {key: f"{100 * value['accuracy']:.1f}%" for key, value in test.items() if key != "per_suite"}
    st.caption(
        f"Threshold {confidence['threshold']:.2f}, chosen on {items['calibration']} items, measured on "
        f"{items['test']}: SLM share {100 * chosen['slm_share']:.0f}%, accuracy {pct['at_threshold']} "
        f"(all-LLM {pct['all_llm']}, all-SLM {pct['all_slm']})."
    )
    share_curve(
        pd.DataFrame(confidence["curve_test"]),
        {"by confidence": "accuracy", "random, same share": "random_routing_accuracy"},
    )

routing = load("routing.json")
if routing:
    st.subheader("The escalation score")
    auc = routing["auroc"]
    st.caption(
        f'Held-out test split, max_loss {routing["max_loss"]}. AUROC for "the SLM\'s decision is wrong": '
        f"select_tool {auc['select_tool']:.2f}, extract_args {auc['extract_args']:.2f}."
    )
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "items": name,
                    "n": row["items"],
                    "slm": f"{100 * row['slm']:.1f}%",
                    "tiered": f"{100 * row['tiered']:.1f}%",
                    "tiered's SLM share": f"{100 * row['tiered_slm_share']:.1f}%",
                    "llm": f"{100 * row['llm']:.1f}%",
                }
                for name, row in routing["groups"].items()
            ]
        ),
        hide_index=True,
        width="stretch",
    )
    live: list[dict[str, float]] = next(iter(routing["curves"].values()), [])
    if live:
        share_curve(
            pd.DataFrame(live),
            {"escalation score": "accuracy", "random, same share": "random", "perfect router": "perfect"},
        )

curves = [data for data in (load(path.name) for path in curve_files(directory)) if curve_points(data)]
if curves:
    st.subheader("The SLM learning from the LLM")
for data in curves:
    split = data.get("split", {})
    learned, rate = curve_design(data)
    st.caption(
        f"An adapter trained on the first N of {split.get('lessons', '?')} {learned} (train source "
        f"groups; learning rate {rate:g}), measured on {split.get('test', '?')} requests of other groups "
        "(`tierflow eval learn`)."
    )
    frame = pd.DataFrame(curve_points(data))
    lines = ["slm", "slm, live_multiple", "tiered", "tiered: SLM share"]
    long = frame.melt(id_vars="decisions learned", value_vars=lines, var_name="measure", value_name="value")
    st.altair_chart(
        alt.Chart(long.dropna())
        .mark_line(point=True)
        .encode(
            x=alt.X("decisions learned:Q", title="LLM decisions learned"),
            y=alt.Y("value:Q", title="accuracy (or share)", axis=alt.Axis(format="%")),
            color=alt.Color("measure:N", title=None),
            tooltip=["decisions learned", "measure", alt.Tooltip("value:Q", format=".1%")],
        ),
        width="stretch",
    )
    st.dataframe(
        frame,
        hide_index=True,
        width="stretch",
        column_config={
            **{name: st.column_config.NumberColumn(name, format="percent") for name in lines},
            "tiered: LLM tokens per item": st.column_config.NumberColumn(format="%.0f"),
            "training minutes": st.column_config.NumberColumn(format="%.0f"),
            "peak memory MiB": st.column_config.NumberColumn(format="%.0f"),
        },
    )

tasks = load("tasks.json")
if tasks.get("policies"):
    st.subheader("End-to-end tasks")
    task_rows: list[dict[str, Any]] = []
    for label in ordered_policies(tasks["policies"]):
        metrics = tasks["policies"][label]["metrics"]
        task_rows.append(
            {
                "policy": label,
                "tasks": metrics["tasks"],
                "success": metrics["success_rate"],
                "SLM share": metrics["slm_share"],
                "LLM tokens / task": metrics["llm_tokens_per_task"],
                "seconds / task": (metrics["wall_ms_mean"] or 0) / 1000,
                **{f"{k}": v for k, v in metrics["success_by_category"].items()},
            }
        )
    categories = sorted(tasks["policies"][task_rows[0]["policy"]]["metrics"]["success_by_category"])
    percent = {
        name: st.column_config.NumberColumn(name, format="percent")
        for name in ("success", "SLM share", *categories)
    }
    st.dataframe(
        pd.DataFrame(task_rows),
        hide_index=True,
        width="stretch",
        column_config={
            **percent,
            "LLM tokens / task": st.column_config.NumberColumn("LLM tokens / task", format="%.0f"),
            "seconds / task": st.column_config.NumberColumn("seconds / task", format="%.1f"),
        },
    )

summaries = load("summaries.json")
if summaries.get("metrics"):
    st.subheader("Summaries")
    frame = pd.DataFrame(summaries["metrics"]).T
    if "latency_ms_mean" in frame:
        frame["seconds"] = frame.pop("latency_ms_mean").astype(float) / 1000
    st.dataframe(
        frame,
        width="stretch",
        column_config={
            **{
                name: st.column_config.NumberColumn(name, format="percent")
                for name in ("coverage", "faithfulness", "length_ratio")
            },
            "rouge_l": st.column_config.NumberColumn("ROUGE-L", format="%.3f"),
            "seconds": st.column_config.NumberColumn("seconds", format="%.1f"),
        },
    )

bench = load("bench.json")
if bench:
    st.subheader("Benchmarks")
    try:
        rows = bench_rows(bench)
    except (KeyError, TypeError, ValueError) as exc:
        st.warning(f"bench.json is not in the expected shape ({exc!r}); run `make bench` again.")
    else:
        st.dataframe(pd.DataFrame(rows, columns=["measure", "value"]), hide_index=True, width="stretch")
