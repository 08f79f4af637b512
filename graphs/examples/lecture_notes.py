"""A student's lecture notes → key points and definitions per topic, exam questions per
topic, and a few questions that connect the topics.

    tierflow run --graph tierflow.graphs.examples.lecture_notes:graph --input @notes.json

The notes are split at their ``#`` headings; each topic goes to the SLM on its own (a
``Send`` fan-out), which extracts key points, definitions and questions on that topic. Only
the cross-topic questions, which need the whole course in view, go to the LLM.
"""

from __future__ import annotations

import operator
import re
from typing import Annotated

from langgraph.graph import END, START, StateGraph
from langgraph.types import Send
from pydantic import BaseModel, Field
from tierflow import TierContext, extract, reason
from typing_extensions import TypedDict


class Definition(BaseModel):
    term: str
    meaning: str = Field(description="what the term means, in one sentence")


class TopicNotes(BaseModel):
    topic: str = Field(description="the topic's title")
    key_points: list[str] = Field(description="the 2 to 5 most important points, one sentence each")
    definitions: list[Definition] = Field(description="terms the notes define")
    questions: list[str] = Field(description="2 exam questions on this topic alone")


class CrossTopicQuestions(BaseModel):
    questions: list[str] = Field(description="2 or 3 exam questions that each connect two or more topics")


class NotesInput(TypedDict):
    notes: str


class NotesState(NotesInput, total=False):
    topics: list[str]
    topic: str  # one topic's text, for the fan-out
    per_topic: Annotated[list[TopicNotes], operator.add]
    cross_topic: CrossTopicQuestions


def split_topics(state: NotesState) -> dict[str, list[str]]:
    """One text per ``#`` heading (the whole notes if there is none)."""
    parts = [p.strip() for p in re.split(r"(?m)^(?=#{1,3} )", state["notes"]) if p.strip()]
    return {"topics": parts or [state["notes"]]}


def each_topic(state: NotesState) -> list[Send]:
    return [Send("topic_notes", {"topic": text}) for text in state["topics"]]


builder = StateGraph(NotesState, context_schema=TierContext, input_schema=NotesInput)
builder.add_node("split_topics", split_topics)
builder.add_node(
    "topic_notes",
    extract(
        TopicNotes,
        inputs="topic",
        into="per_topic",
        append=True,
        instructions="You help a student revise from their lecture notes.",
        max_tokens=700,
    ),
)
builder.add_node(
    "cross_topic_questions",
    reason(
        "You write exam questions for a course. Given the key points of each topic, write "
        "questions whose answers need ideas from two or more topics.",
        inputs="per_topic",
        into="cross_topic",
        output=CrossTopicQuestions,
        max_tokens=300,
    ),
)
builder.add_edge(START, "split_topics")
builder.add_conditional_edges("split_topics", each_topic, ["topic_notes"])
builder.add_edge("topic_notes", "cross_topic_questions")
builder.add_edge("cross_topic_questions", END)
graph = builder.compile(name="lecture_notes")
