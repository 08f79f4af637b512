"""A run whose process is killed (kill -9) mid-step is shown as interrupted, never
``running`` forever, and `resume` finishes it from its last checkpoint without repeating
the tool calls that had finished."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from tierflow.errors import RunNotFoundError, RunNotResumableError
from tierflow.memory import TraceStore

from tests.reliability.resumable_run import runner
from tests.scripted import ANSWER, model_calls, tool_calls

ROOT = Path(__file__).parents[2]


def start_and_kill(directory: Path) -> None:
    (directory / "hold").touch()
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.reliability.resumable_run", str(directory)], cwd=ROOT
    )
    log = directory / "tool.log"
    deadline = time.monotonic() + 120
    while not (log.exists() and "hold-start" in log.read_text()):
        assert process.poll() is None, "the run ended before the test could kill it"
        assert time.monotonic() < deadline, "the run never reached the step to kill"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(30)


def test_a_killed_run_is_interrupted_and_resumes_without_repeating_finished_tools(
    tmp_path: Path, tally: Any
) -> None:
    start_and_kill(tmp_path)
    store = TraceStore.from_url(f"sqlite:///{tmp_path / 'traces.db'}")
    [killed] = store.list_runs()
    assert killed.status == "interrupted"  # the process is gone: not "running" forever
    trace = store.get_run(killed.id)
    assert "tierflow resume" in (trace.error or "")
    done_before = [step.node for step in trace.steps]
    assert done_before[:4] == ["plan", "select_tool", "extract_args", "act"]

    (tmp_path / "hold").unlink()  # the held tool now returns at once
    # Only the answer is scripted: a step that ran before the kill cannot be asked again.
    resumed = runner(tmp_path, slm={ANSWER: ["done"]}, llm={}).resume(killed.id[:8])
    assert (resumed.status, resumed.answer, resumed.run_id) == ("succeeded", "done", killed.id)
    log = (tmp_path / "tool.log").read_text().split()
    assert log.count("tally") == 1  # the finished tool call was not repeated
    assert log.count("hold-start") == 2 and "hold-end" in log  # the one cut short was redone
    final = store.get_run(killed.id)
    assert final.status == "succeeded" and final.answer == "done"
    tally(faults_injected=1, runs_survived=1)
    assert [c.node for c in model_calls(final)] == [
        "plan", "select_tool", "extract_args", "select_tool", "extract_args", "answer",
    ]  # fmt: skip
    assert [(t.tool, t.result) for t in tool_calls(final)] == [("tally", "counted 1"), ("hold", "held 2")]
    seqs = [step.seq for step in final.steps]
    assert seqs == sorted(set(seqs))  # the resumed steps continue the numbering

    with pytest.raises(RunNotResumableError, match="already succeeded"):
        runner(tmp_path, slm={}, llm={}).resume(killed.id)


def test_unknown_and_live_runs_are_refused(tmp_path: Path) -> None:
    task_runner = runner(tmp_path, slm={}, llm={})
    with pytest.raises(RunNotFoundError):
        task_runner.resume("nope")
    live = task_runner.store.start_run("still going", graph="task")  # owned by this process: alive
    with pytest.raises(RunNotResumableError, match="still running"):
        task_runner.resume(live)


def test_a_step_whose_result_was_saved_but_not_its_checkpoint_is_not_run_again(tmp_path: Path) -> None:
    """A process killed between a step's result being written and the step's checkpoint
    leaves the result as a pending write and no step listed to run: resume finishes from it."""
    from typing import TypedDict

    from langgraph.graph import END, START, StateGraph
    from tierflow.agents.scripted import ScriptedModel
    from tierflow.agents.tiers import Tiers
    from tierflow.errors import StepOutputError
    from tierflow.graphs.running import run_graph
    from tierflow.memory.checkpoints import open_checkpointer

    class State(TypedDict, total=False):
        text: str
        done: str

    calls: list[str] = []

    def first(state: State) -> State:
        return {"text": state["text"].upper()}

    def second(state: State) -> State:
        calls.append(state["text"])
        raise StepOutputError("stopped before the second step ended")

    builder = StateGraph(State)
    builder.add_node("first", first)
    builder.add_node("second", second)
    builder.add_edge(START, "first")
    builder.add_edge("first", "second")
    builder.add_edge("second", END)
    saver = open_checkpointer(tmp_path / "checkpoints.sqlite")
    graph = builder.compile(checkpointer=saver)
    tiers = Tiers(ScriptedModel(tier="slm", name="tiny"), ScriptedModel(tier="llm", name="big"))
    store = TraceStore.from_url(f"sqlite:///{tmp_path / 'traces.db'}")

    stopped = run_graph(graph, {"text": "hi"}, tiers=tiers, store=store)
    assert stopped.status == "failed" and calls == ["HI"]
    # What a kill leaves: the second step's result saved, the checkpoint after it not.
    saved = graph.get_state({"configurable": {"thread_id": stopped.run_id}})
    [task] = saved.tasks
    saver.put_writes(saved.config, [("done", "from the saved result")], task.id)

    resumed = run_graph(graph, {}, tiers=tiers, store=store, resume=stopped.run_id)
    assert resumed.status == "succeeded", resumed.error
    assert resumed.state["done"] == "from the saved result"
    assert calls == ["HI"]  # the step was not run again
