"""tierflow: an agentic workflow orchestrator with tiered models.

The front door for Python users: build a LangGraph graph with the tiering kit's steps and
run it with ``run_graph``::

    import tierflow
    result = tierflow.run_graph(graph, {"text": "..."}, policy="tiered")

Names are loaded on first use, so ``import tierflow`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    # the tiering kit
    "TierPolicy": "tierflow.agents.policy",
    "TierChoice": "tierflow.agents.policy",
    "POLICY_PRESETS": "tierflow.agents.policy",
    "Budget": "tierflow.agents.budget",
    "Redactor": "tierflow.agents.redaction",
    "TierContext": "tierflow.graphs.context",
    "StepScope": "tierflow.graphs.steps",
    "Answer": "tierflow.graphs.context",
    "extract": "tierflow.graphs.steps",
    "choose": "tierflow.graphs.steps",
    "summarize": "tierflow.graphs.steps",
    "reason": "tierflow.graphs.steps",
    "tiered_node": "tierflow.graphs.steps",
    "Rejected": "tierflow.agents.escalation",
    # running graphs
    "run_graph": "tierflow.graphs.running",
    "GraphResult": "tierflow.graphs.running",
    "App": "tierflow.app",
    # models, for tests and custom tiers
    "Tiers": "tierflow.agents.tiers",
    "ChatModel": "tierflow.agents.protocol",
    "Completion": "tierflow.agents.protocol",
    "ScriptedModel": "tierflow.agents.scripted",
    # settings
    "Settings": "tierflow.settings",
    "load_settings": "tierflow.settings",
    # tools
    "tool": "tierflow.tools.registry",
    "Tool": "tierflow.tools.registry",
    "ToolRegistry": "tierflow.tools.registry",
    "ToolLimits": "tierflow.tools.limits",
    # errors
    "TierflowError": "tierflow.errors",
    "ConfigError": "tierflow.errors",
    "GraphError": "tierflow.errors",
    "StepOutputError": "tierflow.errors",
    "BudgetExceededError": "tierflow.errors",
    "LLMUnavailableError": "tierflow.errors",
    "ModelNotFoundError": "tierflow.errors",
    "ToolError": "tierflow.errors",
}

__all__ = [
    "__version__",
    "TierPolicy",
    "TierChoice",
    "POLICY_PRESETS",
    "Budget",
    "Redactor",
    "TierContext",
    "StepScope",
    "Answer",
    "extract",
    "choose",
    "summarize",
    "reason",
    "tiered_node",
    "Rejected",
    "run_graph",
    "GraphResult",
    "App",
    "Tiers",
    "ChatModel",
    "Completion",
    "ScriptedModel",
    "Settings",
    "load_settings",
    "tool",
    "Tool",
    "ToolLimits",
    "ToolRegistry",
    "TierflowError",
    "ConfigError",
    "GraphError",
    "StepOutputError",
    "BudgetExceededError",
    "LLMUnavailableError",
    "ModelNotFoundError",
    "ToolError",
]

if TYPE_CHECKING:
    from tierflow.agents.budget import Budget
    from tierflow.agents.escalation import Rejected
    from tierflow.agents.policy import POLICY_PRESETS, TierChoice, TierPolicy
    from tierflow.agents.protocol import ChatModel, Completion
    from tierflow.agents.redaction import Redactor
    from tierflow.agents.scripted import ScriptedModel
    from tierflow.agents.tiers import Tiers
    from tierflow.app import App
    from tierflow.errors import (
        BudgetExceededError,
        ConfigError,
        GraphError,
        LLMUnavailableError,
        ModelNotFoundError,
        StepOutputError,
        TierflowError,
        ToolError,
    )
    from tierflow.graphs.context import Answer, TierContext
    from tierflow.graphs.running import GraphResult, run_graph
    from tierflow.graphs.steps import StepScope, choose, extract, reason, summarize, tiered_node
    from tierflow.settings import Settings, load_settings
    from tierflow.tools.limits import ToolLimits
    from tierflow.tools.registry import Tool, ToolRegistry, tool


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tierflow' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
