"""Which tier serves each node of any graph.

``TierPolicy`` holds a default tier and per-node overrides by node name; it knows nothing of
any particular graph. The three presets:

* ``slm``: every step on the local model;
* ``llm``: every step on the large model;
* ``tiered``: each step where its builder says it belongs: extraction, choices and
  summaries on the SLM first, escalated to the LLM when their output is rejected;
  reasoning and planning steps on the LLM.

An override names a node and one of ``slm``, ``llm`` or ``tiered`` (SLM first, escalated
on rejection).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["TierChoice", "TierPolicy", "POLICY_PRESETS", "DEFAULT_MIN_CONFIDENCE", "DEFAULT_MAX_LOSS"]

TierChoice = Literal["slm", "llm", "tiered"]
"""``slm``: the local model only. ``llm``: the large model only. ``tiered``: the SLM first,
run again on the LLM when its output is rejected."""

POLICY_PRESETS: tuple[TierChoice, ...] = ("tiered", "slm", "llm")

DEFAULT_MIN_CONFIDENCE = 0.0
"""Off by default: calibrated on BFCL with the default models (evals/results/confidence.md),
the threshold came out at 0.90 and did no better than random routing at the same SLM share
on held-out items. Calibrate for your own models with ``tierflow eval confidence``."""

DEFAULT_MAX_LOSS = 0.01
"""The accuracy a ``tiered`` decision may lose against the LLM's, at most, to stay on the SLM,
where the policy names no ``max_loss``: for the task graph's shipped escalation score and
the shipped priors of kit steps (a node calibrated by ``tierflow calibrate`` uses the
operating point it was calibrated for). Chosen on the calibration split before the test
split was scored (evals/results/routing.md), where 0.01 kept about three quarters of the
decisions on the SLM at the LLM's accuracy; on held-out items the loss is larger, as that
split is small (95 items)."""

_FIELDS = frozenset({"default", "nodes", "min_confidence", "max_loss"})


class TierPolicy(BaseModel):
    """A default tier and per-node overrides, for any graph's node names.

    >>> policy = TierPolicy(nodes={"draft_reply": "slm"})
    >>> policy.for_node("draft_reply"), policy.for_node("classify"), policy.for_node("plan", "llm")
    ('slm', 'tiered', 'llm')
    >>> TierPolicy.model_validate({"answer": "llm"}).nodes  # flat keys are node overrides
    {'answer': 'llm'}
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    default: TierChoice = "tiered"
    nodes: dict[str, TierChoice] = Field(default_factory=dict)
    min_confidence: float = Field(
        default=DEFAULT_MIN_CONFIDENCE,
        ge=0.0,
        le=1.0,
        description="a tiered step escalates an SLM choice less sure than this",
    )
    max_loss: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="the accuracy a tiered decision may lose against the LLM's to stay local; unset, "
        "a calibrated node uses the operating point it was calibrated for, and the rest 0.01",
    )

    @model_validator(mode="before")
    @classmethod
    def _flat_overrides(cls, data: Any) -> Any:
        """``{"answer": "llm"}`` (TIERFLOW_POLICY__ANSWER=llm, or a TOML ``[policy]`` table)
        means ``nodes={"answer": "llm"}``."""
        if not isinstance(data, dict) or not (set(data) - _FIELDS):
            return data
        nodes = dict(data.get("nodes") or {})
        nodes.update({key: value for key, value in data.items() if key not in _FIELDS})
        return {**{key: value for key, value in data.items() if key in _FIELDS}, "nodes": nodes}

    @property
    def loss_or_default(self) -> float:
        """``max_loss``, or ``DEFAULT_MAX_LOSS`` when the policy names none."""
        return DEFAULT_MAX_LOSS if self.max_loss is None else self.max_loss

    def for_node(self, node: str, prefer: TierChoice | None = None) -> TierChoice:
        """The tier choice for ``node``. ``prefer`` is where the step belongs under the
        ``tiered`` default (a reasoning step prefers ``llm``); an override always wins."""
        if node in self.nodes:
            return self.nodes[node]
        if self.default != "tiered":
            return self.default
        return prefer or "tiered"

    def tiers_used(self) -> set[Literal["slm", "llm"]]:
        """The tiers some node may call under this policy."""
        used: set[Literal["slm", "llm"]] = set()
        for choice in (self.default, *self.nodes.values()):
            used |= {"slm", "llm"} if choice == "tiered" else {choice}
        return used

    def label(self) -> str:
        """``slm``, ``llm`` or ``tiered`` for a preset, ``custom`` with overrides."""
        return self.default if not self.nodes else "custom"

    def with_overrides(self, overrides: dict[str, TierChoice]) -> TierPolicy:
        return self.model_copy(update={"nodes": {**self.nodes, **overrides}})

    @classmethod
    def preset(
        cls, name: str, *, min_confidence: float = DEFAULT_MIN_CONFIDENCE, max_loss: float | None = None
    ) -> TierPolicy:
        """``tiered`` (the default mix), ``slm`` (everything local) or ``llm`` (everything remote)."""
        if name not in POLICY_PRESETS:
            from tierflow.errors import ConfigError

            raise ConfigError(f"unknown policy {name!r}", hint=f"Use one of: {', '.join(POLICY_PRESETS)}.")
        return cls(default=name, min_confidence=min_confidence, max_loss=max_loss)

    def as_preset(self, name: str) -> TierPolicy:
        """The preset ``name`` with this policy's escalation settings (``min_confidence``,
        ``max_loss``) and without its node overrides: what ``--policy NAME`` runs."""
        return TierPolicy.preset(name, min_confidence=self.min_confidence, max_loss=self.max_loss)
