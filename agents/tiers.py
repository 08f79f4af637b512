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

    def load(self, *tiers: Tier) -> None:
        """Load local models and start embedded servers now (where a tier can), so that the
        first call's latency is the call's alone."""
        for tier in tiers or ("slm", "llm"):
            load = getattr(self.model(tier), "load", None)
            if callable(load):
                load()
