"""Base SLM against SLM + adapter, on held-out lessons: the evidence a promotion rests on."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tierflow.agents.adapters import Comparison
from tierflow.agents.confidence import choice_field
from tierflow.agents.judging import same_output
from tierflow.agents.protocol import ChatModel
from tierflow.memory.lessons import Lesson
from tierflow.records import OnProgress, Progress

__all__ = ["agrees", "compare", "comparable", "MAX_TOKENS"]

MAX_TOKENS = 256
"""The reply budget of a held-out call: a choice or an extraction fits well within it."""


def comparable(lesson: Lesson) -> bool:
    """Whether an output can be checked against the lesson without a judge: a choice or an
    extraction (JSON against a schema); a free text would need the LLM to judge it."""
    return lesson.schema is not None


def agrees(lesson: Lesson, text: str) -> bool:
    """Whether an output says what the lesson's verified output says: the same option of a
    choice, the same fields of an extraction (as ``same_output`` compares them). Output that
    is not JSON is wrong."""
    try:
        got, want = json.loads(text), json.loads(lesson.target)
    except ValueError:
        return False
    field = choice_field(lesson.schema)
    if field is not None and isinstance(got, dict) and isinstance(want, dict):
        return bool(same_output("choose", got.get(field.name), want.get(field.name)))
    return bool(same_output("extract", got, want))


@dataclass(frozen=True)
class Scored:
    right: int
    items: int


def _score(model: ChatModel, held_out: Sequence[Lesson], stage: str, report: OnProgress) -> Scored:
    right = 0
    for number, lesson in enumerate(held_out, start=1):
        completion = model.complete(lesson.messages, schema=lesson.schema, max_tokens=MAX_TOKENS)
        ok = agrees(lesson, completion.text)
        right += ok
        report(Progress(stage, number, len(held_out), "right" if ok else "wrong", lesson.node))
    return Scored(right, len(held_out))


def compare(
    base: ChatModel,
    adapted: ChatModel,
    held_out: Sequence[Lesson],
    *,
    margin: float,
    min_items: int,
    on_progress: OnProgress | None = None,
) -> Comparison:
    """Both models on every comparable held-out lesson, one after the other (one model in
    use at a time), greedy, with each lesson's schema as its grammar."""
    report: OnProgress = on_progress or (lambda _: None)
    items = [lesson for lesson in held_out if comparable(lesson)]
    before = _score(base, items, "base SLM on held-out decisions", report)
    after = _score(adapted, items, "SLM + adapter on held-out decisions", report)
    return Comparison(
        items=len(items),
        base_right=before.right,
        adapter_right=after.right,
        margin=margin,
        min_items=min_items,
    )


def as_dict(comparison: Comparison) -> dict[str, Any]:
    """A comparison as the adapter's card keeps it."""
    return {
        "items": comparison.items,
        "base_right": comparison.base_right,
        "adapter_right": comparison.adapter_right,
        "base_accuracy": round(comparison.base_accuracy, 4),
        "adapter_accuracy": round(comparison.adapter_accuracy, 4),
        "margin": comparison.margin,
        "min_items": comparison.min_items,
    }
