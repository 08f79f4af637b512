"""Why a model's reply is rejected: ``Rejected`` and the parsers that raise it.

A rejection on the SLM of a ``tiered`` step is what sends the step to the LLM
(``tierflow.graphs.context.ask``), and its reason is what the trace records.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Literal, TypeVar

from pydantic import BaseModel, ValidationError
from tierflow.agents.protocol import Completion
from tierflow.errors import describe_validation_error

__all__ = [
    "RejectionCode",
    "Rejected",
    "parse_json",
    "parse_model",
    "parse_text",
]

RejectionCode = Literal[
    "invalid_json",
    "schema_validation",
    "unknown_tool",
    "tool_rejected_arguments",
    "empty_output",
    "truncated",
    "low_confidence",
    "escalation_score",
    "none_unconfirmed",
    "context_overflow",
    "ungrounded_numbers",
    "too_long",
    # a summary unfaithful to its source (tierflow.agents.faithfulness)
    "ungrounded_names",
    "misattributed",
    "misses_part",
    # a free text stopped while it was written (tierflow.agents.watch)
    "copies_source",
    "loops",
    "over_budget",
    # cited answers (tierflow.graphs.citing)
    "weak_evidence",
    "not_found_relevant",
    "uncited",
    "empty_answer",
    "ungrounded_code",
    "ungrounded_answer",
    "off_question",
    # the task graph's answer (tierflow.graphs.grounding.answer_problem)
    "no_tool_result",
    "plan_as_answer",
    "ungrounded_units",
]

M = TypeVar("M", bound=BaseModel)


class Rejected(Exception):  # noqa: N818 - it is an outcome, not a failure of ours
    """A model's output was not usable; ``reason`` goes into the trace."""

    def __init__(self, code: RejectionCode, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail

    @property
    def reason(self) -> str:
        return f"{self.code}: {self.detail}"


def _strip_fences(text: str) -> str:
    stripped = text.strip()
    if stripped.startswith("```"):
        stripped = stripped.split("\n", 1)[1] if "\n" in stripped else ""
        stripped = stripped.rsplit("```", 1)[0]
    return stripped.strip()


def parse_json(completion: Completion) -> object:
    """The JSON value of a reply (code fences tolerated); ``Rejected`` if there is none."""
    text = _strip_fences(completion.text)
    try:
        return json.loads(text, strict=False)  # a raw newline inside a string is harmless
    except json.JSONDecodeError as exc:
        cut = " (the reply was cut off at max_tokens)" if completion.truncated else ""
        raise Rejected("invalid_json", f"{exc.msg} (character {exc.pos}){cut}") from None
    except RecursionError:  # e.g. a small model repeating "[" a thousand times
        raise Rejected("invalid_json", "the JSON is nested too deeply") from None


def parse_model(model: type[M]) -> Callable[[Completion], M]:
    """A parser that validates the reply's JSON against ``model``."""

    def parse(completion: Completion) -> M:
        data = parse_json(completion)
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise Rejected("schema_validation", describe_validation_error(exc)) from None

    return parse


def parse_text(completion: Completion) -> str:
    """A plain-text reply: not empty and not cut off."""
    text = completion.text.strip()
    if not text:
        raise Rejected("empty_output", "the model returned no text")
    if completion.truncated:
        raise Rejected("truncated", "the reply was cut off at max_tokens")
    return text
