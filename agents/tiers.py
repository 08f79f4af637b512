"""The two tiers a graph runs on, addressed by role rather than by vendor class."""

from __future__ import annotations

from dataclasses import dataclass

from tierflow.agents.protocol import ChatModel, Tier

__all__ = ["Tiers"]


@dataclass(frozen=True)
class Tiers:
    slm: ChatModel
    llm: ChatModel

    def model(self, tier: Tier) -> ChatModel:
        return self.slm if tier == "slm" else self.llm
