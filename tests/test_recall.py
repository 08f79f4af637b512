"""The memory of verified decisions in the task graph: examples in the SLM's prompts, the
tool shortlist, learning from the LLM, plan reuse, and a memory that cannot be written.
Real chromadb and real offline embeddings; scripted tiers record what the models were sent."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import chromadb
import pytest
from chromadb.config import Settings as ChromaSettings
from tierflow.agents.policy import TierPolicy
from tierflow.agents.scripted import ScriptedModel
from tierflow.agents.tiers import Tiers
from tierflow.evals.toolcalls import decide_call
from tierflow.graphs.recall import Recall, specifics
from tierflow.memory.decisions import DecisionMemory, MemoryWriteError, VerifiedDecision
from tierflow.memory.embeddings import OfflineEmbeddings
from tierflow.memory.traces import TraceStore
from tierflow.tools.base import Tool
from tierflow.tools.registry import ToolRegistry

from tests.scripted import ANSWER, EXTRACT, PLAN, SELECT, model_calls, nodes, scripted_runner


def weather(city: str, days: int = 1) -> str:
    """The weather forecast for a city.

    Args:
        city: the city
        days: how many days ahead
    """
    return f"sunny in {city}"


def convert_currency(amount: float, source: str, target: str) -> str:
    """Convert an amount of money from one currency to another.

    Args:
        amount: how much
        source: the currency code to convert from
        target: the currency code to convert to
    """
    return "1.0"


def registry(*extra: Tool) -> ToolRegistry:
    return ToolRegistry([Tool.from_function(weather), Tool.from_function(convert_currency), *extra])


def memory(embeddings: OfflineEmbeddings) -> DecisionMemory:
    client = chromadb.EphemeralClient(settings=ChromaSettings(anonymized_telemetry=False))
    return DecisionMemory(client, embeddings, collection=f"t{uuid.uuid4().hex}")


def run(
    store: TraceStore,
    recall: Recall,
    request: str,
    *,
    tools: ToolRegistry,
    policy: str = "slm",
    **scripts: Any,
) -> tuple[dict[str, Any], Tiers]:
    tiers = Tiers(
        ScriptedModel(tier="slm", by_node=scripts.get("slm", {})),
        ScriptedModel(tier="llm", by_node=scripts.get("llm", {})),
    )
    result = decide_call(request, tools, tiers, store, TierPolicy.preset(policy), context={"recall": recall})
    assert result.ok, result.error
    return {"run_id": result.run_id, **result.state}, tiers


def sent(tiers: Tiers, tier: str, node: str) -> str:
    model: ScriptedModel = tiers.model(tier)  # type: ignore[assignment]
    return "\n".join(m["content"] for call in model.calls if call["node"] == node for m in call["messages"])


def test_past_decisions_reach_the_slm_prompts(store: TraceStore, embeddings: OfflineEmbeddings) -> None:
    recall = Recall(memory(embeddings))
    tools = registry()
    recall.remember(
        "What will the weather be like in Oslo over the next 3 days?",
        tools.names(),
        "weather",
        {"city": "Oslo", "days": 3},
        "llm",
        None,
    )
    recall.remember(
        "Change 20 euros into yen", tools.names(), "convert_currency", {"amount": 20}, "llm", None
    )
    slm = {SELECT: [{"tool": "weather"}], EXTRACT: [{"city": "Rome", "days": 2}]}
    final, tiers = run(store, recall, "Forecast for Rome for 2 days, please", tools=tools, slm=slm)
    assert final["arguments"] == {"city": "Rome", "days": 2}
    choice_prompt, call_prompt = sent(tiers, "slm", SELECT), sent(tiers, "slm", EXTRACT)
    assert '"What will the weather be like in Oslo over the next 3 days?" -> weather' in choice_prompt
    assert '{"city": "Oslo", "days": 3}' in call_prompt
    assert "Change 20 euros" not in call_prompt  # only calls of the same tool teach its arguments
    calls = model_calls(store.get_run(final["run_id"]))
    assert calls[0].recall is not None and calls[0].recall["examples"] >= 1


def test_no_examples_without_a_similar_decision(store: TraceStore, embeddings: OfflineEmbeddings) -> None:
    recall = Recall(memory(embeddings))
    tools = registry()
    recall.remember(
        "Change 20 euros into yen", tools.names(), "convert_currency", {"amount": 20}, "llm", None
    )
    _, tiers = run(
        store,
        recall,
        "Forecast for Rome",
        tools=tools,
        slm={SELECT: [{"tool": "weather"}], EXTRACT: [{"city": "Rome"}]},
    )
    assert "similar past requests" not in sent(tiers, "slm", EXTRACT)


def test_the_llm_decisions_are_learned_and_a_failed_write_loses_nothing(
    store: TraceStore, embeddings: OfflineEmbeddings, monkeypatch: pytest.MonkeyPatch
) -> None:
    recall = Recall(memory(embeddings))
    tools = registry()
    llm = {SELECT: [{"tool": "weather"}], EXTRACT: [{"city": "Lima"}]}
    run(store, recall, "Weather in Lima?", tools=tools, policy="llm", llm=llm)
    (match,) = recall.memory.similar("Lima weather", k=1)
    assert (match.decision.tool, match.decision.arguments, match.decision.provenance) == (
        "weather",
        {"city": "Lima"},
        "llm",
    )

    def refuse(decision: VerifiedDecision) -> str:
        raise MemoryWriteError("could not store a decision in the memory at /x (disk full)")

    monkeypatch.setattr(recall.memory, "add", refuse)
    llm = {SELECT: [{"tool": "weather"}], EXTRACT: [{"city": "Quito"}]}
    final, _ = run(store, recall, "Weather in Quito?", tools=tools, policy="llm", llm=llm)
    assert final["arguments"] == {"city": "Quito"}  # the run went on
    last = model_calls(store.get_run(final["run_id"]))[-1]
    assert last.recall is not None and "disk full" in last.recall["learning_skipped"]


def test_many_tools_are_shortlisted_for_the_prompt(store: TraceStore, embeddings: OfflineEmbeddings) -> None:
    def make(name: str, description: str) -> Tool:
        def function(text: str) -> str:
            return text

        function.__doc__ = f"{description}\n\nArgs:\n    text: input"
        return Tool.from_function(function, name=name)

    fillers = [
        make("translate_text", "Translate text into another language."),
        make("send_email", "Send an e-mail message to someone."),
        make("create_invoice", "Create an invoice for a customer order."),
        make("play_music", "Play a song or playlist."),
        make("book_flight", "Book a flight between two airports."),
        make("count_words", "Count the words in a text."),
        make("resize_image", "Resize an image to new dimensions."),
    ]
    tools = registry(*fillers)
    recall = Recall(memory(embeddings), shortlist_over=8, shortlist_keep=4)
    _, tiers = run(
        store,
        recall,
        "Will it rain in Dublin tomorrow?",
        tools=tools,
        slm={SELECT: [{"tool": "weather"}], EXTRACT: [{"city": "Dublin"}]},
    )
    prompt = sent(tiers, "slm", SELECT)
    listed = [tool.name for tool in tools if f"- {tool.name}:" in prompt]
    assert len(listed) == 4 and "weather" in listed


def test_specifics_are_numbers_quotes_and_file_names() -> None:
    assert specifics('Add 2 and 3.5 to "total" in data/report.md') == {
        "2",
        "3.5",
        '"total"',
        "data/report.md",
    }


def test_a_close_successful_task_reuses_its_plan(
    store: TraceStore, tmp_path: Path, embeddings: OfflineEmbeddings
) -> None:
    recall = Recall(memory(embeddings), plan_reuse_similarity=0.9)
    plan = {"steps": ["Compute 12 * 7 with the calculator"], "answer": ""}
    scripts = {
        "slm": {
            SELECT: [{"tool": "calculator"}] * 3,
            EXTRACT: [{"expression": "12 * 7"}] * 3,
            ANSWER: ["84"] * 3,
        },
        "llm": {PLAN: [plan, plan]},
    }
    runner, _, large = scripted_runner(store, tmp_path, recall=recall, policy=TierPolicy(), **scripts)
    first = runner.run("What is 12 * 7?")
    assert first.status == "succeeded", (first.error, first.hint)
    again = runner.run("what is 12 * 7 ?")  # the same task, written differently
    trace = store.get_run(again.run_id)
    plan_step = trace.steps[nodes(trace).index("plan")]
    assert plan_step.model_calls == [] and plan_step.summary is not None
    assert plan_step.summary.startswith(f"reused the plan of run {first.run_id}")
    assert [c["node"] for c in large.calls] == [PLAN]  # the LLM planned once
    other = runner.run("What is 12 * 9?")  # close, but another number: planned anew
    assert nodes(store.get_run(other.run_id))[0] == "plan"
    assert [c["node"] for c in large.calls] == [PLAN, PLAN]


@pytest.mark.real_slm
def test_on_the_real_slm_the_past_call_is_in_its_prompt_and_its_signals_are_kept(
    store: TraceStore, embeddings: OfflineEmbeddings, slm_path: Path
) -> None:
    from tierflow.agents.slm import LlamaCppModel

    recall = Recall(memory(embeddings))
    tools = registry()
    recall.remember(
        "How much is 50 US dollars in euros?",
        tools.names(),
        "convert_currency",
        {"amount": 50, "source": "USD", "target": "EUR"},
        "llm",
        None,
    )
    slm = LlamaCppModel(slm_path, name="qwen2.5-coder-0.5b", n_ctx=2048, n_threads=2)
    request = "How much is 80 British pounds in Japanese yen?"
    chooser = ScriptedModel(tier="llm", by_node={SELECT: [{"tool": "convert_currency"}]})
    policy = TierPolicy(default="slm", nodes={SELECT: "llm"})  # the real SLM writes the call
    result = decide_call(request, tools, Tiers(slm, chooser), store, policy, context={"recall": recall})
    calls = model_calls(store.get_run(result.run_id))
    assert [(c.node, c.tier) for c in calls] == [(SELECT, "llm"), (EXTRACT, "slm")]
    assert "How much is 50 US dollars in euros?" in calls[0].messages[0]["content"]
    assert '"source": "USD"' in calls[1].messages[0]["content"]  # the past call, in the SLM's prompt
    assert calls[1].signals is not None and calls[1].signals.tokens > 0  # what the score reads
    assert result.state["arguments"]["amount"] == 80


def test_the_memory_is_rebuilt_from_the_stored_runs(
    store: TraceStore, tmp_path: Path, embeddings: OfflineEmbeddings
) -> None:
    from tierflow.memory.rebuild import decisions_in, rebuild_decisions

    plan = {"steps": ["Compute 12 * 7 with the calculator"], "answer": ""}
    runner, _, _ = scripted_runner(
        store,
        tmp_path,
        slm={SELECT: ['{"tool": "calculator"}'], EXTRACT: [{"expression": "12 * 7"}], ANSWER: ["84"]},
        llm={PLAN: [plan]},
    )
    confirmed = runner.run("What is 12 * 7?")
    tools = registry()
    llm = {SELECT: [{"tool": "weather"}], EXTRACT: [{"city": "Lima"}]}
    final, _ = run(
        store, Recall(memory(embeddings), learn=False), "Weather in Lima?", tools=tools, policy="llm", llm=llm
    )
    assert [(d.tool, d.provenance) for d in decisions_in(store.get_run(confirmed.run_id))] == [
        ("calculator", "slm_confirmed")  # the SLM's call, accepted by the tool
    ]
    fresh = memory(embeddings)
    runs, added = rebuild_decisions(store, fresh)
    assert (runs, added) == (2, 2)
    (match,) = fresh.similar("Lima weather", k=1)
    assert (match.decision.request, match.decision.tool, match.decision.provenance) == (
        "Weather in Lima?",
        "weather",
        "llm",
    )
    assert rebuild_decisions(store, fresh) == (2, 0)  # idempotent


def test_only_a_checked_plan_inside_the_workspace_is_kept(
    store: TraceStore, tmp_path: Path, embeddings: OfflineEmbeddings
) -> None:
    """A plan whose answer failed its checks, or whose steps name paths outside the
    workspace, is never offered again, even when every tool call succeeded."""
    recall = Recall(memory(embeddings), plan_reuse_similarity=0.9)
    (tmp_path / "notes.md").write_text("twelve words of notes here\n")
    outside = {"steps": ["Count the words of ../notes.md", "Count the words of /etc/notes.md"], "answer": ""}
    plain = {"steps": ["Compute 12 * 7 with the calculator"], "answer": ""}
    scripts = {
        "slm": {
            SELECT: [{"tool": "word_count"}] * 2 + [{"tool": "calculator"}] * 2,
            EXTRACT: [{"path": "notes.md"}] * 2 + [{"expression": "12 * 7"}] * 2,
            ANSWER: ["5 words.", "It is 85."],  # the second: a number no result holds
        },
        "llm": {PLAN: [outside, plain, plain], ANSWER: ["It is 96."]},
    }
    runner, _, large = scripted_runner(store, tmp_path, recall=recall, policy=TierPolicy(), **scripts)
    first = runner.run("How many words are in my notes?")  # both tool calls succeed
    assert first.status == "succeeded" and first.answer == "5 words."
    second = runner.run("What is 12 * 7?")  # the LLM's answer is kept, but fails its checks
    assert second.status == "succeeded" and second.answer == "It is 96."
    for run, task in ((first, "How many words are in my notes?"), (second, "What is 12 * 7?")):
        past = recall.plans.nearest(task)  # the memory is shared with other tests
        assert past is None or past.run_id != run.run_id  # neither plan was kept
