"""What the task graph's tool-call steps take from the memory of verified decisions, and
what they give back to it.

* **Examples**: select_tool's prompt gets the choices made for the most similar past
  requests (whose tool is offered now); extract_args' prompt, past calls of the same tool.
* **Shortlist**: with many tools, only those nearest to the request by embedding are
  offered to the SLM.
* **Plan reuse**: a task very close to a past successful one, naming the same numbers,
  quoted values and file names, reuses its plan without calling the LLM.
* **Learning** (``learn``): every call the LLM decided (or corrected), and every SLM call
  whose tool then ran without error, is stored with its provenance. A store that cannot be
  written never fails the run: the step goes on and the trace says learning was skipped.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tierflow.memory.decisions import (
    DecisionMemory,
    Match,
    MemoryWriteError,
    PastPlan,
    PlanMemory,
    Provenance,
    VerifiedDecision,
)
from tierflow.secrets import scrub, scrub_value
from tierflow.tools.base import Tool

__all__ = ["Recall", "Example", "specifics"]

_REQUEST_CHARS = 300
_SPECIFICS = re.compile(r"\d+(?:[.,]\d+)?|\"[^\"]*\"|'[^']*'|\S+[./]\S+")


def specifics(text: str) -> set[str]:
    """The values a plan's steps may repeat: numbers, quoted strings, file names and paths."""
    return {match.lower() for match in _SPECIFICS.findall(text)}


@dataclass(frozen=True)
class Example:
    """A past decision as a prompt shows it."""

    request: str
    tool: str | None
    arguments: dict[str, Any] | None
    similarity: float


def _example(match: Match) -> Example:
    request = " ".join(match.decision.request.split())
    if len(request) > _REQUEST_CHARS:
        request = request[: _REQUEST_CHARS - 1] + "…"
    return Example(request, match.decision.tool, match.decision.arguments, round(match.similarity, 3))


@dataclass
class Recall:
    """The memory of verified decisions as the task graph uses it."""

    memory: DecisionMemory
    learn: bool = True
    examples: int = 3
    min_similarity: float = 0.35
    shortlist_over: int = 8  # more tools than this: offer the SLM a shortlist
    shortlist_keep: int = 6
    plan_reuse_similarity: float = 0.93  # 1.0: never reuse a plan
    _plans: PlanMemory | None = field(default=None, repr=False)

    def _near(self, request: str, tools: Sequence[str]) -> list[Match]:
        found = self.memory.similar(request, k=self.examples * 3, tools=tools)
        # A past "none" teaches only where some of the same tools were offered.
        return [
            m
            for m in found
            if m.similarity >= self.min_similarity
            and m.tool_offered
            and (m.decision.tool is not None or m.shared_tools)
        ]

    def for_choice(self, request: str, tools: Sequence[Tool]) -> list[Example]:
        """Past choices for requests like this one, among the tools offered now."""
        near = self._near(request, [tool.name for tool in tools])
        return [_example(m) for m in near[: self.examples]]

    def for_call(self, request: str, tool: Tool) -> list[Example]:
        """Past calls of ``tool`` for requests like this one."""
        near = [m for m in self._near(request, [tool.name]) if m.decision.tool == tool.name]
        return [_example(m) for m in near[: self.examples] if m.decision.arguments is not None]

    def shortlist(self, request: str, tools: Sequence[Tool]) -> list[Tool]:
        """All of ``tools`` when they are few; else the nearest to the request, in their order."""
        if len(tools) <= self.shortlist_over:
            return list(tools)
        keep = set(
            self.memory.shortlist(request, [(t.name, t.description) for t in tools], self.shortlist_keep)
        )
        return [tool for tool in tools if tool.name in keep]

    @property
    def plans(self) -> PlanMemory:
        if self._plans is None:
            self._plans = PlanMemory(self.memory)
        return self._plans

    def reusable_plan(self, task: str) -> PastPlan | None:
        """A successful past plan for a task this close, with the same specific values."""
        if self.plan_reuse_similarity >= 1.0:
            return None
        past = self.plans.nearest(task)
        if past is None or past.similarity < self.plan_reuse_similarity:
            return None
        return past if specifics(past.task) == specifics(task) else None

    def remember_plan(self, task: str, steps: Sequence[str], run_id: str | None) -> str | None:
        """Store a successful plan; returns why it could not be stored, if it could not."""
        if not self.learn or not steps:
            return None
        try:
            self.plans.add(scrub(task), [scrub(step) for step in steps], run_id)
        except MemoryWriteError as exc:
            return str(exc)
        return None

    def remember(
        self,
        request: str,
        tools: Sequence[str],
        tool: str | None,
        arguments: dict[str, Any] | None,
        provenance: Provenance,
        run_id: str | None,
    ) -> str | None:
        """Store a verified decision; returns why it could not be stored, if it could not."""
        if not self.learn:
            return None
        decision = VerifiedDecision(
            scrub(request), tuple(tools), tool, scrub_value(arguments), provenance, run_id
        )
        try:
            self.memory.add(decision)
        except MemoryWriteError as exc:
            return str(exc)
        return None
