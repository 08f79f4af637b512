"""Tools run under limits: a runaway call (model-chosen arguments, a prompt injection, a user
tool's bug) is stopped at its time, memory or result-size limit, recorded as the tool's
error, and the run goes on."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from tierflow.agents.scripted import ScriptedModel
from tierflow.agents.tiers import Tiers
from tierflow.errors import SandboxError, ToolError
from tierflow.graphs.runner import TaskRunner
from tierflow.memory import TraceStore
from tierflow.settings import TierPolicy
from tierflow.tools import ToolRegistry, default_registry, tool
from tierflow.tools.limits import ToolLimits

from tests.scripted import ANSWER, EXTRACT, PLAN, SELECT, tool_calls

FAST = ToolLimits(timeout_s=2.0)


@pytest.fixture
def builtins(tmp_path: Path) -> ToolRegistry:
    return default_registry(tmp_path)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "expression", ["round(1, -10**9)", "round(1, -10**6)", "round(2.5, 10**9)", "round(1, 0.5)"]
)
def test_calculator_refuses_rounding_that_would_never_end(
    builtins: ToolRegistry, expression: str, tally: Any
) -> None:
    started = time.monotonic()
    with pytest.raises(ToolError, match="round takes a whole number of digits"):
        builtins.get("calculator").call({"expression": expression}, FAST)  # type: ignore[union-attr]
    took = time.monotonic() - started
    tally(inputs_tried=1, longest_tool_s=took)
    assert took < 1.5  # refused, not stopped by the time limit
    assert builtins.get("calculator").call({"expression": "round(1234.5678, -2)"}) == "1200"  # type: ignore[union-attr]
    assert builtins.get("calculator").call({"expression": "round(2.675, 2)"}) == "2.67"  # type: ignore[union-attr]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "unit", ["9**9**9*m", "m*10**1000000", "2^99999999 m", "m" * 100_000, "1" * 50 + " m"]
)
def test_unit_conversion_refuses_units_that_are_expressions(
    builtins: ToolRegistry, unit: str, tally: Any
) -> None:
    started = time.monotonic()
    with pytest.raises(ToolError):
        builtins.get("unit_convert").call(  # type: ignore[union-attr]
            {"value": 1, "from_unit": unit, "to_unit": "km"}, FAST
        )
    took = time.monotonic() - started
    tally(inputs_tried=1, longest_tool_s=took)
    assert took < 1.5
    converted = builtins.get("unit_convert").call({"value": 3, "from_unit": "m**2", "to_unit": "cm^2"})  # type: ignore[union-attr]
    assert converted == "3 m**2 = 30000 cm^2"


@tool(timeout_s=1.0)
def spin(seconds: int) -> str:
    """Loop without end (a runaway user tool).

    Args:
        seconds: ignored
    """
    while True:
        pass


@tool(memory_mb=64)
def hoard(megabytes: int) -> str:
    """Allocate memory.

    Args:
        megabytes: how much
    """
    block = bytearray(megabytes * 1024 * 1024)
    return str(len(block))


@tool(max_result_chars=1000)
def flood(characters: int) -> str:
    """Return a long text.

    Args:
        characters: how long
    """
    return "x" * characters


@tool(timeout_s=0.5, isolate=False)
def nap(seconds: float) -> str:
    """Sleep in the caller's process.

    Args:
        seconds: how long
    """
    time.sleep(seconds)
    return "rested"


@pytest.mark.timeout(60)
def test_a_runaway_call_is_stopped_at_its_time_limit(tally: Any) -> None:
    started = time.monotonic()
    with pytest.raises(ToolError, match=r"spin ran past its 1 s time limit and was stopped"):
        spin.call({"seconds": 1})
    took = time.monotonic() - started
    tally(faults_injected=1, longest_tool_s=took)
    assert took < 3


def test_memory_and_result_size_are_limited(tally: Any) -> None:
    tally(faults_injected=3)
    with pytest.raises(ToolError, match="out of memory"):
        hoard.call({"megabytes": 512})
    assert hoard.call({"megabytes": 8}) == str(8 * 1024 * 1024)
    with pytest.raises(ToolError, match="over the 1,000-character limit"):
        flood.call({"characters": 5000})
    assert flood.call({"characters": 1000}) == "x" * 1000
    # A run-wide limit applies to a tool without its own.
    with pytest.raises(ToolError, match="over the 100-character limit"):
        spin_free = tool(lambda_free)
        spin_free.call({"characters": 101}, ToolLimits(max_result_chars=100))


def lambda_free(characters: int) -> str:
    """Repeat a letter.

    Args:
        characters: how many
    """
    return "y" * characters


def test_a_tool_in_the_callers_process_says_it_could_not_be_stopped(tally: Any) -> None:
    tally(faults_injected=1)
    with pytest.raises(ToolError, match="could not be stopped and is still running"):
        nap.call({"seconds": 2})
    assert nap.call({"seconds": 0}) == "rested"


def test_errors_keep_their_kind_across_the_process_boundary(builtins: ToolRegistry) -> None:
    with pytest.raises(SandboxError):
        builtins.get("read_file").call({"path": "../etc/passwd"})  # type: ignore[union-attr]

    @tool
    def buggy(x: int) -> int:
        """Divide by zero.

        Args:
            x: a number
        """
        return x // 0

    with pytest.raises(ToolError, match="ZeroDivisionError: integer division or modulo by zero"):
        buggy.call({"x": 1})


def test_unknown_or_bad_limits_are_refused_when_the_tool_is_made() -> None:
    with pytest.raises(ValueError, match="must be positive"):
        tool(timeout_s=0)(lambda_free)
    with pytest.raises(TypeError, match="unknown tool limits"):
        from tierflow.tools.base import Tool

        Tool.from_function(lambda_free, timeout=3)


@pytest.mark.timeout(120)
def test_the_run_goes_on_after_a_tool_is_stopped(store: TraceStore, tmp_path: Path, tally: Any) -> None:
    tools = ToolRegistry([spin, *default_registry(tmp_path)])
    small = ScriptedModel(
        tier="slm",
        name="tiny",
        by_node={
            SELECT: ['{"tool": "spin"}', '{"tool": "calculator"}'],
            EXTRACT: ['{"seconds": 5}', '{"expression": "6 * 7"}'],
            ANSWER: ["The loop was stopped; 6 * 7 is 42."],
        },
    )
    large = ScriptedModel(
        tier="llm", name="big", by_node={PLAN: ['{"steps": ["Spin", "Compute 6 * 7"], "answer": ""}']}
    )
    policy = TierPolicy(nodes={"select_tool": "slm", "extract_args": "slm"})  # no retry on the LLM
    runner = TaskRunner(Tiers(small, large), tools, store, policy=policy, checkpointer=InMemorySaver())
    result = runner.run("Spin, then compute 6 * 7")
    assert result.status == "succeeded", result.error
    stopped, computed = tool_calls(store.get_run(result.run_id))
    assert stopped.tool == "spin" and "time limit and was stopped" in (stopped.error or "")
    tally(faults_injected=1, runs_survived=1, longest_tool_s=stopped.latency_ms / 1000)
    assert 900 < stopped.latency_ms < 3000
    assert (computed.tool, computed.result) == ("calculator", "42")


def test_word_count_counts_every_character_of_a_long_file(builtins: ToolRegistry, tmp_path: Path) -> None:
    line = "alpha beta gamma δέλτα\r\n"
    (tmp_path / "long.txt").write_text(line * 120_000, encoding="utf-8", newline="")  # 2.9 M characters
    counts = json.loads(builtins.get("word_count").call({"path": "long.txt"}))  # type: ignore[union-attr]
    assert counts == {"words": 480_000, "lines": 120_000, "characters": len(line) * 120_000}
