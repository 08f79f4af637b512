"""The task graph's routers are pure functions of the state: tested with plain dicts."""

from tierflow.graphs.task import (
    after_act,
    after_extract_args,
    after_plan,
    after_select_only,
    after_select_tool,
    after_summarize,
)

REFUSED = {"node": "extract_args", "reason": "tool_rejected_arguments: x"}


def test_after_plan() -> None:
    assert after_plan({"steps": ["a"], "step_index": 0}) == "select_tool"
    assert after_plan({"steps": [], "answer": "hi"}) == "__end__"


def test_after_select_tool() -> None:
    assert after_select_tool({"tool": "calculator", "steps": ["a"], "step_index": 0}) == "extract_args"
    assert after_select_tool({"tool": None, "steps": ["a", "b"], "step_index": 1}) == "select_tool"
    assert after_select_tool({"tool": None, "steps": ["a"], "step_index": 1}) == "answer"


def test_after_extract_args() -> None:
    assert after_extract_args({"arguments": {}, "steps": ["a"], "step_index": 0}) == "act"
    assert after_extract_args({"arguments": None, "steps": ["a"], "step_index": 1}) == "answer"


def test_after_act() -> None:
    # the tool refused the SLM's arguments: extract_args runs again (on the LLM)
    assert after_act({"escalation": REFUSED}) == "extract_args"  # type: ignore[typeddict-item]
    assert after_act({"pending_summary": True, "steps": ["a"], "step_index": 1}) == "summarize"
    assert after_act({"pending_summary": False, "steps": ["a", "b"], "step_index": 1}) == "select_tool"
    assert after_act({"pending_summary": False, "steps": ["a"], "step_index": 1}) == "answer"


def test_after_summarize_and_select_only() -> None:
    assert after_summarize({"steps": ["a"], "step_index": 1}) == "answer"
    assert after_summarize({"steps": ["a", "b"], "step_index": 1}) == "select_tool"
    assert after_select_only({"tool": "calculator"}) == "extract_args"
    assert after_select_only({"tool": None}) == "__end__"
