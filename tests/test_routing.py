"""The task graph's routers are pure functions of the state: tested with plain dicts."""

from tierflow.graphs.task import (
    after_act,
    after_answer,
    after_extract_args,
    after_plan,
    after_select_tool,
    after_summarize,
)

RETRY = {"node": "", "reason": "invalid_json: x"}


def retry(node: str) -> dict[str, str]:
    return {**RETRY, "node": node}


def test_after_plan() -> None:
    assert after_plan({"steps": ["a"], "step_index": 0}) == "select_tool"
    assert after_plan({"steps": [], "answer": "hi"}) == "__end__"
    assert after_plan({"escalation": retry("plan")}) == "plan"  # type: ignore[typeddict-item]


def test_after_select_tool() -> None:
    assert after_select_tool({"tool": "calculator", "steps": ["a"], "step_index": 0}) == "extract_args"
    assert after_select_tool({"tool": None, "steps": ["a", "b"], "step_index": 1}) == "select_tool"
    assert after_select_tool({"tool": None, "steps": ["a"], "step_index": 1}) == "answer"
    assert after_select_tool({"escalation": retry("select_tool")}) == "select_tool"  # type: ignore[typeddict-item]


def test_after_extract_args() -> None:
    assert after_extract_args({"arguments": {}, "steps": ["a"], "step_index": 0}) == "act"
    assert after_extract_args({"arguments": None, "steps": ["a"], "step_index": 1}) == "answer"
    assert after_extract_args({"escalation": retry("extract_args")}) == "extract_args"  # type: ignore[typeddict-item]


def test_after_act() -> None:
    assert after_act({"escalation": retry("extract_args")}) == "extract_args"  # type: ignore[typeddict-item]
    assert after_act({"pending_summary": True, "steps": ["a"], "step_index": 1}) == "summarize"
    assert after_act({"pending_summary": False, "steps": ["a", "b"], "step_index": 1}) == "select_tool"
    assert after_act({"pending_summary": False, "steps": ["a"], "step_index": 1}) == "answer"


def test_after_summarize_and_answer() -> None:
    assert after_summarize({"escalation": retry("summarize")}) == "summarize"  # type: ignore[typeddict-item]
    assert after_summarize({"steps": ["a"], "step_index": 1}) == "answer"
    assert after_answer({"escalation": retry("answer")}) == "answer"  # type: ignore[typeddict-item]
    assert after_answer({"answer": "x"}) == "__end__"
    # an escalation pending for another node never loops this one
    assert after_answer({"escalation": retry("plan")}) == "__end__"  # type: ignore[typeddict-item]
