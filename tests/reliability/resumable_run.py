"""A task run that a test kills mid-step: ``python -m tests.reliability.resumable_run DIR``.

Scripted tiers plan two steps: ``tally`` (logs once and returns) and ``hold`` (logs, then
waits while DIR/hold exists). The test kills this process while ``hold`` waits, then
resumes the run in its own process."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from tierflow.agents.scripted import ScriptedModel
from tierflow.agents.tiers import Tiers
from tierflow.graphs.runner import TaskRunner
from tierflow.memory import TraceStore
from tierflow.memory.checkpoints import open_checkpointer
from tierflow.settings import TierPolicy
from tierflow.tools import ToolRegistry, tool

from tests.scripted import ANSWER, EXTRACT, PLAN, SELECT

POLICY = TierPolicy(default="slm", nodes={"plan": "llm"})
PLAN_REPLY = '{"steps": ["Count one", "Hold until released"], "answer": ""}'


def workdir() -> Path:
    return Path(sys.argv[1]) if len(sys.argv) > 1 else Path.cwd()


def note(directory: Path, line: str) -> None:
    with (directory / "tool.log").open("a", encoding="utf-8") as log:
        log.write(line + "\n")


def tools(directory: Path) -> ToolRegistry:
    @tool
    def tally(n: int) -> str:
        """Count.

        Args:
            n: a number
        """
        note(directory, "tally")
        return f"counted {n}"

    @tool(timeout_s=120)
    def hold(n: int) -> str:
        """Wait until released.

        Args:
            n: a number
        """
        note(directory, "hold-start")
        while (directory / "hold").exists():
            time.sleep(0.05)
        note(directory, "hold-end")
        return f"held {n}"

    return ToolRegistry([tally, hold])


def runner(directory: Path, slm: dict[str, list[str]], llm: dict[str, list[str]]) -> TaskRunner:
    small = ScriptedModel(tier="slm", name="tiny", by_node=slm)
    large = ScriptedModel(tier="llm", name="big", by_node=llm)
    return TaskRunner(
        Tiers(small, large),
        tools(directory),
        TraceStore.from_url(f"sqlite:///{directory / 'traces.db'}"),
        policy=POLICY,
        checkpointer=open_checkpointer(directory / "checkpoints.sqlite"),
    )


if __name__ == "__main__":
    here = workdir()
    first = runner(
        here,
        slm={
            SELECT: ['{"tool": "tally"}', '{"tool": "hold"}'],
            EXTRACT: ['{"n": 1}', '{"n": 2}'],
            ANSWER: ["done"],
        },
        llm={PLAN: [PLAN_REPLY]},
    )
    first.run("Count one, then hold")
