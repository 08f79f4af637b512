"""Triage an incoming report: classify it, extract typed fields, route it to a team, and
draft a reply on the LLM.

    tierflow run --graph tierflow.graphs.examples.triage:graph \\
        --input '{"report": "The export button crashes the app since 2.3 ..."}'

Classification and extraction run on the SLM (escalated when their output is rejected);
routing is plain Python; only the reply, which has to weigh the whole case, goes to the
LLM, and spam gets no reply at all.
"""

from __future__ import annotations

from typing import Literal

from langgraph.graph import END, START, StateGraph
from pydantic import BaseModel, Field
from tierflow import TierContext, choose, extract, reason
from typing_extensions import TypedDict

CATEGORIES = {
    "bug": "something in the product does not work as it should",
    "outage": "the service is down or unreachable for the customer",
    "billing": "charges, invoices, refunds or payment problems",
    "feature_request": "a wish for something the product does not do yet",
    "spam": "advertising or anything that is not a real report",
}
TEAMS = {"bug": "engineering", "outage": "on-call", "billing": "finance", "feature_request": "product"}


class ReportFields(BaseModel):
    product: str = Field(description="the product or feature the report is about")
    severity: Literal["low", "medium", "high", "critical"] = Field(
        description="critical: many users blocked; high: one user blocked; "
        "medium: a workaround exists; low: cosmetic"
    )
    summary: str = Field(description="one sentence: what happened")
    customer_email: str | None = Field(default=None, description="the sender's e-mail address, if given")


class TriageInput(TypedDict):
    report: str


class TriageState(TriageInput, total=False):
    category: str
    fields: ReportFields
    team: str
    reply: str


def assign(state: TriageState) -> dict[str, str]:
    """Route by category; critical bugs go to on-call."""
    team = TEAMS.get(state["category"], "none")
    if state["category"] == "bug" and state["fields"].severity == "critical":
        team = "on-call"
    return {"team": team}


def needs_reply(state: TriageState) -> Literal["draft_reply", "__end__"]:
    return "__end__" if state["category"] == "spam" else "draft_reply"


builder = StateGraph(TriageState, context_schema=TierContext, input_schema=TriageInput)
builder.add_node("classify", choose(CATEGORIES, inputs="report", into="category"))
builder.add_node("extract_fields", extract(ReportFields, inputs="report", into="fields"))
builder.add_node("assign", assign)
builder.add_node(
    "draft_reply",
    reason(
        "You write replies for a support desk. Thank the customer, restate the problem in "
        "one sentence, say which team now handles it and what happens next. At most 80 words.",
        inputs=["report", "category", "team"],
        into="reply",
        max_tokens=200,
    ),
)
builder.add_edge(START, "classify")
builder.add_edge("classify", "extract_fields")
builder.add_edge("extract_fields", "assign")
builder.add_conditional_edges("assign", needs_reply)
builder.add_edge("draft_reply", END)
graph = builder.compile(name="triage")
