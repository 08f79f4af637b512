"""The tiering kit: tiered steps for any LangGraph graph.

Build a graph with LangGraph as usual and make its model-backed nodes with the step
builders; run it with ``run_graph`` (or ``graph.invoke(input, context=TierContext(...))``).

* ``extract(Model, inputs=..., into=...)``: a pydantic model from text (grammar-forced on
  the SLM, validated, escalated to the LLM with the recorded reason when invalid);
* ``choose(options, inputs=..., into=...)``: one of N labels, with the SLM's confidence;
* ``summarize(inputs=..., into=...)``: plain text, never more than the SLM's context per call;
* ``reason(instructions, inputs=..., into=...)``: planning and reasoning, on the LLM;
* ``tiered_node(function)``: your own node, ``function(state, scope)``, calling models with
  ``scope.ask(...)`` under the same policy, privacy, budget and tracing.

``TierPolicy`` says which tier serves each node (by its name in the graph); ``Budget`` caps
a run's LLM tokens or cost; ``local_only`` and ``redact`` keep data on the machine.
"""

from tierflow.agents.budget import Budget, Prices
from tierflow.agents.escalation import Rejected, parse_json, parse_model, parse_text
from tierflow.agents.policy import POLICY_PRESETS, TierChoice, TierPolicy
from tierflow.agents.redaction import REDACTION_KINDS, Redactor
from tierflow.graphs.context import Answer, TierContext, ask
from tierflow.graphs.running import GraphResult, run_graph
from tierflow.graphs.steps import StepScope, choose, extract, reason, summarize, tiered_node

__all__ = [
    "TierPolicy",
    "TierChoice",
    "POLICY_PRESETS",
    "Budget",
    "Prices",
    "Redactor",
    "REDACTION_KINDS",
    "TierContext",
    "StepScope",
    "Answer",
    "ask",
    "extract",
    "choose",
    "summarize",
    "reason",
    "tiered_node",
    "run_graph",
    "GraphResult",
    "Rejected",
    "parse_json",
    "parse_model",
    "parse_text",
]
