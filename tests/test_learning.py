"""``tierflow learn``'s evidence: base SLM and SLM + adapter compared on held-out lessons
(scripted models here; the real SLM with a real adapter is in the real tests)."""

from __future__ import annotations

import json
from typing import Any

from tierflow.agents.scripted import ScriptedModel
from tierflow.learning.compare import agrees, comparable, compare
from tierflow.memory.lessons import Lesson

CHOICE = {"type": "object", "properties": {"label": {"enum": ["bug", "refund", "question"]}}}
FIELDS = {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}}


def lesson(schema: dict[str, Any] | None, target: Any, text: str = "a request") -> Lesson:
    return Lesson(
        messages=[{"role": "user", "content": text}],
        target=target if isinstance(target, str) else json.dumps(target),
        schema=schema,
        kind="choose" if schema is CHOICE else "extract" if schema else "text",
        node="n",
        run_id="r",
        source="llm",
    )


def test_an_output_agrees_with_a_lesson_as_two_tiers_outputs_are_compared() -> None:
    choice = lesson(CHOICE, {"label": "refund"})
    assert agrees(choice, '{"label": " Refund"}') and not agrees(choice, '{"label": "bug"}')
    fields = lesson(FIELDS, {"city": "Paris", "days": 3})
    assert agrees(fields, '{"city": "paris ", "days": 3.0}')
    assert not agrees(fields, '{"city": "Paris", "days": 4}')
    assert not agrees(fields, "Paris, 3 days")  # not JSON: wrong
    assert not comparable(lesson(None, "Three days in Paris."))  # a text needs a judge


def test_both_models_run_every_comparable_held_out_lesson() -> None:
    held_out = [lesson(CHOICE, {"label": "refund"}, f"r{n}") for n in range(6)]
    held_out += [lesson(FIELDS, {"city": "Oslo", "days": 2}, "trip"), lesson(None, "A text.")]
    base = ScriptedModel(['{"label": "bug"}'] * 6 + ['{"city": "Oslo", "days": 2}'])
    adapted = ScriptedModel(['{"label": "refund"}'] * 5 + ['{"label": "bug"}', '{"city": "Oslo", "days": 2}'])
    seen: list[str] = []
    result = compare(
        base, adapted, held_out, margin=0.05, min_items=5, on_progress=lambda p: seen.append(p.stage)
    )
    assert (result.items, result.base_right, result.adapter_right) == (7, 1, 6)
    promoted, why = result.verdict()
    assert promoted and "6/7" in why and "1/7" in why
    assert seen.count("base SLM on held-out decisions") == 7
    assert len(base.calls) == len(adapted.calls) == 7  # the text lesson is not sent
