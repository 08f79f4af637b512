"""How much one run may spend on the LLM, and the meter that enforces it."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field
from tierflow.agents.protocol import Completion, Message
from tierflow.errors import BudgetExceededError

__all__ = ["Budget", "Prices", "BudgetMeter", "estimate_tokens"]

CHARS_PER_TOKEN_LOW = 3
"""Prompts are estimated at three characters a token: few tokenizers do better on English
or JSON, so the estimate errs towards stopping early rather than overspending."""


class Budget(BaseModel):
    """A cap on one run's LLM use: tokens (prompt + completion) and/or cost in US$.

    Checked before each LLM call against what the run has used so far plus an upper
    estimate of the next call (its prompt at three characters a token, plus its
    ``max_tokens``). When the next call would pass a cap, the run stops with status
    ``budget_exceeded``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_llm_tokens: int | None = Field(default=None, ge=0)
    max_cost_usd: float | None = Field(default=None, ge=0)


@dataclass(frozen=True)
class Prices:
    """US$ per million LLM tokens (settings ``llm_price_*_per_mtok``)."""

    prompt_per_mtok: float = 2.5
    completion_per_mtok: float = 10.0

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.prompt_per_mtok + completion_tokens * self.completion_per_mtok) / 1e6


def estimate_tokens(messages: Sequence[Message]) -> int:
    chars = sum(len(message["content"]) for message in messages)
    return -(-chars // CHARS_PER_TOKEN_LOW) + 8 * len(messages)


class BudgetMeter:
    """A run's LLM spending so far; thread-safe (steps may run in parallel)."""

    def __init__(self, budget: Budget | None = None, prices: Prices | None = None) -> None:
        self.budget = budget or Budget()
        self.prices = prices or Prices()
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self._lock = threading.Lock()

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def cost(self) -> float:
        return self.prices.cost(self.prompt_tokens, self.completion_tokens)

    def check(self, node: str, messages: Sequence[Message], max_tokens: int) -> None:
        """Raise ``BudgetExceededError`` if this LLM call could take the run past a cap."""
        prompt = estimate_tokens(messages)
        with self._lock:
            cap_tokens, cap_cost = self.budget.max_llm_tokens, self.budget.max_cost_usd
            if cap_tokens is not None and self.tokens + prompt + max_tokens > cap_tokens:
                raise BudgetExceededError(
                    f"the LLM call of step {node!r} could use up to {prompt + max_tokens:,} tokens "
                    f"(about {prompt:,} in, at most {max_tokens:,} out); the run has used "
                    f"{self.tokens:,} of its {cap_tokens:,}-token budget",
                    hint="Raise the cap (--max-llm-tokens / Budget.max_llm_tokens), or send this "
                    "step to the SLM (--tier NODE=slm).",
                )
            next_cost = self.prices.cost(prompt, max_tokens)
            if cap_cost is not None and self.cost + next_cost > cap_cost:
                raise BudgetExceededError(
                    f"the LLM call of step {node!r} could cost up to ${next_cost:.4f}; the run has "
                    f"spent ${self.cost:.4f} of its ${cap_cost:.4f} budget",
                    hint="Raise the cap (--max-cost / Budget.max_cost_usd), or send this step "
                    "to the SLM (--tier NODE=slm).",
                )

    def add(self, completion: Completion) -> None:
        with self._lock:
            self.prompt_tokens += completion.prompt_tokens
            self.completion_tokens += completion.completion_tokens
