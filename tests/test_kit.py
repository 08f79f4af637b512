"""The tiering kit in users' own graphs, on scripted tiers: steps, escalation, policy by
node name, composition (Send, subgraphs, checkpointers), and the checks run_graph makes."""

from __future__ import annotations

import operator
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import Send
from pydantic import BaseModel
from tierflow import (
    GraphError,
    StepScope,
    TierContext,
    TierPolicy,
    choose,
    extract,
    run_graph,
    summarize,
    tiered_node,
)
from tierflow.agents.escalation import parse_text
from tierflow.agents.scripted import ScriptedModel
from tierflow.agents.tiers import Tiers
from tierflow.graphs.examples import lecture_notes, triage
from tierflow.memory import TraceStore
from tierflow.records import ModelCallRecord, RunTrace

from tests.kit_support import scripted_tiers


def model_calls(trace: RunTrace) -> list[ModelCallRecord]:
    return [call for step in trace.steps for call in step.model_calls]


REPORT = "Hi, since 2.3 the export button crashes the app every time. -- ana@example.org"
FIELDS = {"product": "export", "severity": "high", "summary": "Export crashes the app."}


def triage_tiers(**overrides: Any) -> Any:
    slm = {"classify": [{"label": "bug"}], "extract_fields": [FIELDS], **overrides.get("slm", {})}
    llm = {"draft_reply": ["Thanks! Engineering is on it."], **overrides.get("llm", {})}
    return scripted_tiers(slm, llm)


def test_triage_runs_under_its_own_node_names(store: TraceStore) -> None:
    result = run_graph(triage.graph, {"report": REPORT}, tiers=triage_tiers(), store=store)
    assert result.ok, result.error
    assert result.state["category"] == "bug" and result.state["team"] == "engineering"
    assert result.state["fields"].severity == "high" and result.state["reply"].startswith("Thanks")
    trace = store.get_run(result.run_id)
    calls = [(c.node, c.tier) for c in model_calls(trace)]
    assert calls == [("classify", "slm"), ("extract_fields", "slm"), ("draft_reply", "llm")]
    assert trace.graph == "triage" and trace.status == "succeeded"


def test_invalid_slm_output_escalates_within_the_step(store: TraceStore) -> None:
    tiers = triage_tiers(
        slm={"extract_fields": [{"product": "export", "severity": "apocalyptic", "summary": "x"}]},
        llm={"extract_fields": [FIELDS]},
    )
    result = run_graph(triage.graph, {"report": REPORT}, tiers=tiers, store=store)
    assert result.ok and result.state["fields"].severity == "high"
    trace = store.get_run(result.run_id)
    step = next(s for s in trace.steps if s.node == "extract_fields")
    slm_call, llm_call = step.model_calls
    assert slm_call.tier == "slm" and slm_call.escalated
    assert (slm_call.escalation_reason or "").startswith("schema_validation: severity")
    assert llm_call.tier == "llm" and not llm_call.escalated


def test_policy_overrides_by_node_name_and_rejects_unknown_nodes(store: TraceStore) -> None:
    tiers = triage_tiers(slm={"draft_reply": ["Thanks, from the SLM."]})
    policy = TierPolicy(nodes={"draft_reply": "slm", "classify": "llm"})
    tiers.llm._by_node["classify"] = [{"label": "bug"}]  # type: ignore[attr-defined]
    result = run_graph(triage.graph, {"report": REPORT}, tiers=tiers, store=store, policy=policy)
    assert result.state["reply"] == "Thanks, from the SLM."
    calls = [(c.node, c.tier) for c in model_calls(store.get_run(result.run_id))]
    assert calls == [("classify", "llm"), ("extract_fields", "slm"), ("draft_reply", "slm")]
    with pytest.raises(GraphError, match="'drafting'") as info:
        run_graph(
            triage.graph,
            {"report": REPORT},
            tiers=tiers,
            store=store,
            policy=TierPolicy(nodes={"drafting": "slm"}),
        )
    assert "draft_reply" in info.value.hint


def test_input_must_match_the_input_schema(store: TraceStore) -> None:
    tiers = triage_tiers()
    for bad, message in [
        ({}, "missing report"),
        ({"report": REPORT, "extra": 1}, "unknown key"),
        ({"report": 42}, "report: "),
        (["not", "a", "dict"], "JSON object"),
    ]:
        with pytest.raises(GraphError, match=message):
            run_graph(triage.graph, bad, tiers=tiers, store=store)  # type: ignore[arg-type]
    assert store.list_runs() == []  # nothing started


def test_send_fan_out_and_an_llm_step_with_a_typed_output(store: TraceStore) -> None:
    notes = "# Cells\nCells are the unit of life.\n# Energy\nATP stores energy."
    topic = {
        "topic": "t",
        "key_points": ["p"],
        "definitions": [{"term": "ATP", "meaning": "m"}],
        "questions": ["q"],
    }
    tiers = scripted_tiers(
        {"topic_notes": [topic, {**topic, "topic": "u"}]},
        {"cross_topic_questions": [{"questions": ["How do cells use ATP?"]}]},
    )
    result = run_graph(lecture_notes.graph, {"notes": notes}, tiers=tiers, store=store)
    assert result.ok, result.error
    assert sorted(t.topic for t in result.state["per_topic"]) == ["t", "u"]
    assert result.state["cross_topic"].questions == ["How do cells use ATP?"]
    trace = store.get_run(result.run_id)
    assert [s.node for s in trace.steps].count("topic_notes") == 2  # one step per Send
    prompts = [c.messages[-1]["content"] for c in model_calls(trace) if c.node == "topic_notes"]
    assert any("# Cells" in p for p in prompts) and any("# Energy" in p for p in prompts)


class Item(TypedDict, total=False):
    text: str
    label: str
    labels: Annotated[list[str], operator.add]


def test_steps_compose_with_subgraphs_conditional_edges_and_checkpointers(store: TraceStore) -> None:
    inner = StateGraph(Item, context_schema=TierContext)
    inner.add_node("label", choose(["urgent", "later"], inputs="text", into="label", confidence_into="conf"))
    inner.add_edge(START, "label")
    outer = StateGraph(Item, context_schema=TierContext)
    outer.add_node("triage_sub", inner.compile())
    outer.add_node("shout", tiered_node(lambda state, scope: {"text": state["text"].upper()}))
    outer.add_edge(START, "triage_sub")
    outer.add_conditional_edges("triage_sub", lambda s: "shout" if s["label"] == "urgent" else END)
    outer.add_edge("shout", END)
    graph = outer.compile(checkpointer=InMemorySaver())
    tiers = scripted_tiers({"label": [{"label": "urgent"}]})
    result = run_graph(graph, {"text": "server down"}, tiers=tiers, store=store)
    assert result.ok and (result.state["text"], result.state["label"]) == ("SERVER DOWN", "urgent")
    assert [s.node for s in store.get_run(result.run_id).steps] == ["label", "shout"]
    state = graph.get_state({"configurable": {"thread_id": result.run_id}})
    assert state.values["label"] == "urgent"  # the checkpointer has the run under its id


def test_a_custom_node_calls_models_through_scope_ask(store: TraceStore) -> None:
    def haiku(state: Item, scope: StepScope) -> dict[str, str]:
        got = scope.ask([{"role": "user", "content": state["text"]}], parse_text, max_tokens=40)
        return {"label": got.value or ""}

    graph = StateGraph(Item, context_schema=TierContext)
    graph.add_node("haiku", tiered_node(haiku))
    graph.add_edge(START, "haiku")
    tiers = scripted_tiers({"haiku": [""]}, {"haiku": ["autumn wind"]})  # empty SLM text escalates
    result = run_graph(graph.compile(), {"text": "write"}, tiers=tiers, store=store)
    assert result.state["label"] == "autumn wind"
    slm_call = model_calls(store.get_run(result.run_id))[0]
    assert slm_call.escalation_reason == "empty_output: the model returned no text"


def test_a_graph_invoked_without_tierflow_context_says_how_to_run_it() -> None:
    graph = StateGraph(Item)
    graph.add_node("label", choose(["a", "b"], inputs="text", into="label"))
    graph.add_edge(START, "label")
    with pytest.raises(GraphError, match="run context") as info:
        graph.compile().invoke({"text": "x"})
    assert "run_graph" in info.value.hint


class Notes(BaseModel):
    title: str


def test_a_step_with_no_usable_output_fails_the_run_clearly(store: TraceStore) -> None:
    graph = StateGraph(Item, context_schema=TierContext)
    graph.add_node("title", extract(Notes, inputs="text", into="label"))
    graph.add_edge(START, "title")
    tiers = scripted_tiers({"title": ["not json"]}, {"title": ["still not json"]})
    result = run_graph(graph.compile(), {"text": "x"}, tiers=tiers, store=store)
    assert result.status == "failed" and "step 'title' got no usable output from the LLM" in (
        result.error or ""
    )
    trace = store.get_run(result.run_id)
    assert trace.steps[0].status == "failed" and len(trace.steps[0].model_calls) == 2


class Sized:
    """A scripted SLM that says its context size and counts tokens as words."""

    def __init__(self, n_ctx: int) -> None:
        self.n_ctx, self.tier, self.name = n_ctx, "slm", "sized"
        self.prompts: list[int] = []

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def complete(self, messages: Any, *, schema: Any = None, max_tokens: int) -> Any:
        from tierflow.agents.protocol import Completion

        size = sum(self.count_tokens(m["content"]) for m in messages)
        self.prompts.append(size)
        assert size + max_tokens <= self.n_ctx, "the step sent more than the context holds"
        return Completion("short summary", "sized", "slm", size, 2, 0.0)


def test_summarize_never_sends_the_slm_more_than_its_context(store: TraceStore, tmp_path: Path) -> None:
    from tierflow.agents.tiers import Tiers

    slm = Sized(n_ctx=400)
    tiers = Tiers(slm, scripted_tiers().llm)  # type: ignore[arg-type]
    graph = StateGraph(Item, context_schema=TierContext)
    graph.add_node("digest", summarize(inputs="text", into="label", max_tokens=100))
    graph.add_edge(START, "digest")
    text = " ".join(f"word{i}." for i in range(3000))
    result = run_graph(graph.compile(), {"text": text}, tiers=tiers, store=store, policy="slm")
    assert result.ok and result.state["label"] == "short summary"
    assert len(slm.prompts) > 10 and max(slm.prompts) <= 300


def test_send_with_a_kit_node_reads_the_sent_state(store: TraceStore) -> None:
    graph = StateGraph(Item, context_schema=TierContext)
    graph.add_node("fan", lambda s: {})
    graph.add_node("tag", choose(["x", "y"], inputs="text", into="labels", append=True))
    graph.add_edge(START, "fan")
    graph.add_conditional_edges("fan", lambda s: [Send("tag", {"text": t}) for t in ("1", "2", "3")], ["tag"])
    tiers = scripted_tiers({"tag": [{"label": "x"}, {"label": "y"}, {"label": "x"}]})
    result = run_graph(graph.compile(), {"text": "all"}, tiers=tiers, store=store)
    assert sorted(result.state["labels"]) == ["x", "x", "y"]


def test_an_unmarked_test_cannot_reach_a_real_model(tmp_path: Path) -> None:
    from tierflow.agents.server import EmbeddedServer
    from tierflow.agents.slm import LlamaCppModel

    with pytest.raises(AssertionError, match="real_slm"):
        LlamaCppModel(tmp_path / "model.gguf").load()
    with pytest.raises(AssertionError, match="real_llm"):
        EmbeddedServer(tmp_path / "model.gguf", alias="x", log_path=tmp_path / "log").start()


class _ServerLLM(ScriptedModel):
    """An LLM tier that, like the embedded server, has to be started before its first call."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(tier="llm", name="big", **kwargs)
        self.needs_start = True

    def load(self) -> None:
        self.needs_start = False


def test_an_embedded_server_start_is_a_step_of_its_own(store: TraceStore) -> None:
    llm = _ServerLLM(by_node={"draft_reply": ["Thanks, engineering has it."]})
    result = run_graph(triage.graph, {"report": REPORT}, tiers=Tiers(triage_tiers().slm, llm), store=store)
    assert result.ok, result.error
    steps = [step.node for step in store.get_run(result.run_id).steps]
    assert steps == ["start_llm_server", "classify", "extract_fields", "draft_reply"]
    assert not llm.needs_start

    llm.needs_start = True  # a run kept on the SLM does not start it
    again = run_graph(
        triage.graph,
        {"report": REPORT},
        tiers=Tiers(triage_tiers(slm={"draft_reply": ["Thanks, engineering has it."]}).slm, llm),
        store=store,
        policy="slm",
    )
    assert again.ok, again.error
    assert "start_llm_server" not in [step.node for step in store.get_run(again.run_id).steps]
    assert llm.needs_start


def test_every_shipped_graph_tells_langgraph_its_input_schema() -> None:
    """LangGraph's own tooling (Studio, ``get_input_jsonschema``) reads the state classes;
    before Python 3.12 pydantic needs ``typing_extensions.TypedDict`` for that."""
    from tierflow.graphs.citing import build_qa_graph
    from tierflow.graphs.examples import lecture_notes, support_faq
    from tierflow.graphs.summaries import document_graph, synthesis_graph
    from tierflow.graphs.task import build_task_graph

    graphs = {
        "triage": (triage.graph, "report"),
        "lecture_notes": (lecture_notes.graph, "notes"),
        "support_faq": (support_faq.graph, "question"),
        "task": (build_task_graph(), "task"),
        "ask": (build_qa_graph(lambda: None), "question"),  # type: ignore[arg-type, return-value]
        "summarize_document": (document_graph(max_sentences=3), "text"),
        "summarize_synthesis": (synthesis_graph(), "groups"),
    }
    for name, (graph, field) in graphs.items():
        assert field in graph.get_input_jsonschema()["properties"], name
