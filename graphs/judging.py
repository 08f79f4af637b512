"""The escalation score applied in the task graph: whether the SLM's tool choice, and then
the call it wrote, is kept or handed to the LLM.

select_tool's choice is judged inside its step (``ask(judge=...)``): a choice likely wrong
goes to the LLM, which then decides the whole call. extract_args' arguments are judged with
the choice's features: a call likely wrong goes back to select_tool on the LLM, so the LLM
decides tool and arguments together. A call the SLM made is judged only by what the SLM's
own output shows (choice probabilities, token log-probabilities); without them (a remote
or scripted SLM) nothing is judged and the output is kept.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from tierflow.agents.protocol import Completion
from tierflow.agents.scoring import EscalationScorer, ToolText, args_features, select_features, tool_line
from tierflow.graphs.context import Judge, Judgement, TierContext
from tierflow.tools.base import Tool

__all__ = ["tool_texts", "select_judge", "judge_arguments"]


def tool_texts(tools: Sequence[Tool]) -> list[ToolText]:
    return [ToolText(tool.name, tool.description, tool.parameters) for tool in tools]


def _judgement(scorer: EscalationScorer, node: str, max_loss: float, features: Sequence[float]) -> Judgement:
    node_scorer = scorer.nodes[node]
    return Judgement(node_scorer.p_wrong(features), node_scorer.threshold(max_loss))


def select_judge(
    ctx: TierContext,
    scorer: EscalationScorer,
    request: str,
    tools: Sequence[Tool],
    keep: list[list[float]],
    relevance: Callable[[], Callable[[str, Sequence[str]], list[float]]],
) -> Judge:
    """A judge of select_tool's choice; the features it computed go into ``keep``.
    ``relevance()`` gives the request's similarity to texts (the tools' ``tool_line``); it is
    asked only when there is a choice to judge, so an SLM without choice scores never loads
    the embedding model."""
    texts = tool_texts(tools)

    def judge(value: Any, completion: Completion) -> Judgement | None:
        if completion.choice_probabilities is None:
            return None
        choice = str(getattr(value, "tool", "none"))
        similarities = relevance()(request, [tool_line(t) for t in texts])
        probabilities = completion.choice_probabilities.probabilities
        features = select_features(request, texts, choice, probabilities, similarities)
        keep.append(features)
        judgement = _judgement(scorer, "select_tool", ctx.policy.loss_or_default, features)
        if choice == "none" and not scorer.nodes["select_tool"].none_confirmed(features):
            return dataclasses.replace(judgement, unconfirmed_none=True)  # never on the SLM's word alone
        return judgement

    return judge


def judge_arguments(
    ctx: TierContext,
    scorer: EscalationScorer,
    request: str,
    tool: Tool,
    arguments: dict[str, Any],
    completion: Completion,
    choice_features: Sequence[float] | None,
) -> Judgement | None:
    """The score of the call the SLM wrote (``None`` when its output carries no signals)."""
    if completion.signals is None or choice_features is None:
        return None
    (text,) = tool_texts([tool])
    features = args_features(request, text, arguments, completion.signals, choice_features)
    return _judgement(scorer, "extract_args", ctx.policy.loss_or_default, features)
