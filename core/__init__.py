"""tierflow: an agentic workflow orchestrator with tiered models.

The front door: every public name is importable from here, and only from here is it
documented. Build a LangGraph graph with the tiering kit's steps and run it with
``run_graph``::

    import tierflow
    result = tierflow.run_graph(graph, {"text": "..."}, policy="tiered")

Names are loaded on first use, so ``import tierflow`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from tierflow.version import __version__

_EXPORTS = {
    # the tiering kit
    "TierPolicy": "tierflow.agents.policy",
    "TierChoice": "tierflow.agents.policy",
    "POLICY_PRESETS": "tierflow.agents.policy",
    "Budget": "tierflow.agents.budget",
    "Prices": "tierflow.agents.budget",
    "Redactor": "tierflow.agents.redaction",
    "TierContext": "tierflow.graphs.context",
    "StepScope": "tierflow.graphs.steps",
    "StepView": "tierflow.agents.judging",
    "Answer": "tierflow.graphs.context",
    "extract": "tierflow.graphs.steps",
    "choose": "tierflow.graphs.steps",
    "summarize": "tierflow.graphs.steps",
    "reason": "tierflow.graphs.steps",
    "tiered_node": "tierflow.graphs.steps",
    "numbers_grounded": "tierflow.graphs.steps",
    "concise": "tierflow.graphs.steps",
    "all_of": "tierflow.graphs.steps",
    "Rejected": "tierflow.agents.escalation",
    "parse_model": "tierflow.agents.escalation",
    "parse_text": "tierflow.agents.escalation",
    "parse_json": "tierflow.agents.escalation",
    # answers from documents
    "retrieve": "tierflow.graphs.citing",
    "cited_answer": "tierflow.graphs.citing",
    "build_qa_graph": "tierflow.graphs.citing",
    "Evidence": "tierflow.graphs.grounding",
    "DocumentMemory": "tierflow.memory.documents",
    # running graphs and tasks
    "run_graph": "tierflow.app",
    "GraphResult": "tierflow.graphs.running",
    "App": "tierflow.app",
    "TaskRunner": "tierflow.graphs.runner",
    "RunResult": "tierflow.graphs.runner",
    "TraceStore": "tierflow.memory.traces",
    # batch summarization
    "JobRequest": "tierflow.batch.job",
    "SummaryOptions": "tierflow.batch.worker",
    "run_job": "tierflow.batch.job",
    # models, for tests and custom tiers
    "Tiers": "tierflow.agents.tiers",
    "ChatModel": "tierflow.agents.protocol",
    "Completion": "tierflow.agents.protocol",
    "Message": "tierflow.records",
    "Progress": "tierflow.records",
    "ScriptedModel": "tierflow.agents.scripted",
    # settings
    "Settings": "tierflow.settings",
    "load_settings": "tierflow.settings",
    # tools
    "tool": "tierflow.tools.base",
    "Tool": "tierflow.tools.base",
    "ToolRegistry": "tierflow.tools.registry",
    "ToolLimits": "tierflow.tools.limits",
    # errors
    "TierflowError": "tierflow.errors",
    "ConfigError": "tierflow.errors",
    "GraphError": "tierflow.errors",
    "StepOutputError": "tierflow.errors",
    "TaskInputError": "tierflow.errors",
    "BudgetExceededError": "tierflow.errors",
    "LLMUnavailableError": "tierflow.errors",
    "ModelNotFoundError": "tierflow.errors",
    "RunNotResumableError": "tierflow.errors",
    "ToolError": "tierflow.errors",
}
"""Each public name and the module that defines it."""

__all__ = [
    "__version__",
    "TierPolicy",
    "TierChoice",
    "POLICY_PRESETS",
    "Budget",
    "Prices",
    "Redactor",
    "TierContext",
    "StepScope",
    "StepView",
    "Answer",
    "extract",
    "choose",
    "summarize",
    "reason",
    "tiered_node",
    "numbers_grounded",
    "concise",
    "all_of",
    "Rejected",
    "parse_model",
    "parse_text",
    "parse_json",
    "retrieve",
    "cited_answer",
    "build_qa_graph",
    "Evidence",
    "DocumentMemory",
    "run_graph",
    "GraphResult",
    "App",
    "TaskRunner",
    "RunResult",
    "TraceStore",
    "JobRequest",
    "SummaryOptions",
    "run_job",
    "Tiers",
    "ChatModel",
    "Completion",
    "Message",
    "Progress",
    "ScriptedModel",
    "Settings",
    "load_settings",
    "tool",
    "Tool",
    "ToolRegistry",
    "ToolLimits",
    "TierflowError",
    "ConfigError",
    "GraphError",
    "StepOutputError",
    "TaskInputError",
    "BudgetExceededError",
    "LLMUnavailableError",
    "ModelNotFoundError",
    "RunNotResumableError",
    "ToolError",
]

if TYPE_CHECKING:
    from tierflow.agents.budget import Budget, Prices
    from tierflow.agents.escalation import Rejected, parse_json, parse_model, parse_text
    from tierflow.agents.judging import StepView
    from tierflow.agents.policy import POLICY_PRESETS, TierChoice, TierPolicy
    from tierflow.agents.protocol import ChatModel, Completion
    from tierflow.agents.redaction import Redactor
    from tierflow.agents.scripted import ScriptedModel
    from tierflow.agents.tiers import Tiers
    from tierflow.app import App, run_graph
    from tierflow.batch.job import JobRequest, run_job
    from tierflow.batch.worker import SummaryOptions
    from tierflow.errors import (
        BudgetExceededError,
        ConfigError,
        GraphError,
        LLMUnavailableError,
        ModelNotFoundError,
        RunNotResumableError,
        StepOutputError,
        TaskInputError,
        TierflowError,
        ToolError,
    )
    from tierflow.graphs.citing import build_qa_graph, cited_answer, retrieve
    from tierflow.graphs.context import Answer, TierContext
    from tierflow.graphs.grounding import Evidence
    from tierflow.graphs.runner import RunResult, TaskRunner
    from tierflow.graphs.running import GraphResult
    from tierflow.graphs.steps import (
        StepScope,
        all_of,
        choose,
        concise,
        extract,
        numbers_grounded,
        reason,
        summarize,
        tiered_node,
    )
    from tierflow.memory.documents import DocumentMemory
    from tierflow.memory.traces import TraceStore
    from tierflow.records import Message, Progress
    from tierflow.settings import Settings, load_settings
    from tierflow.tools.base import Tool, tool
    from tierflow.tools.limits import ToolLimits
    from tierflow.tools.registry import ToolRegistry


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tierflow' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
