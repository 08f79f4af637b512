"""Privacy and budgets, proven at the LLM client: a recording OpenAI-style client behind the
real OpenAI adapter sees every byte the LLM tier would have been sent."""

from __future__ import annotations

import json

from tierflow import Budget, run_graph
from tierflow.agents.redaction import Redactor, luhn_valid
from tierflow.agents.tiers import Tiers
from tierflow.graphs.examples import triage
from tierflow.memory import TraceStore
from tierflow.records import ModelCallRecord, RunTrace

from tests.kit_support import recording_llm, scripted_tiers

SECRET_VALUES = [
    "ana.lima@example.org",
    "+44 20 7946 0958",
    "GB82 WEST 1234 5698 7654 32",
    "4111 1111 1111 1111",
    "078-05-1120",
    "Ana Lima",
]
REPORT = (
    "Hello, I am Ana Lima (ana.lima@example.org, +44 20 7946 0958). The export crashes and I was "
    "charged twice to card 4111 1111 1111 1111; refund to GB82 WEST 1234 5698 7654 32 please. "
    "My customer ID is 078-05-1120."
)
FIELDS = {"product": "export", "severity": "high", "summary": "Export crashes; double charge."}


def calls(trace: RunTrace) -> list[ModelCallRecord]:
    return [call for step in trace.steps for call in step.model_calls]


def slm_script(**extra: list[object]) -> Tiers:
    return scripted_tiers({"classify": [{"label": "billing"}], "extract_fields": [FIELDS], **extra})


def test_local_only_never_reaches_the_llm_client(store: TraceStore) -> None:
    llm, client = recording_llm(lambda request: "should never be asked")
    tiers = Tiers(slm_script(draft_reply=["Thanks, finance will call you."]).slm, llm)
    result = run_graph(triage.graph, {"report": REPORT}, tiers=tiers, store=store, local_only=True)
    assert result.ok and result.state["reply"] == "Thanks, finance will call you."
    assert client.requests == []
    trace = store.get_run(result.run_id)
    assert {c.tier for c in calls(trace)} == {"slm"}
    draft = next(c for c in calls(trace) if c.node == "draft_reply")
    assert draft.escalation_refused == "local_only" and not draft.escalated


def test_local_only_refuses_an_escalation_and_fails_clearly(store: TraceStore) -> None:
    llm, client = recording_llm(lambda request: json.dumps(FIELDS))
    tiers = Tiers(slm_script(extract_fields=["not json"]).slm, llm)
    tiers.slm._by_node["extract_fields"] = ["not json"]  # type: ignore[attr-defined]
    result = run_graph(triage.graph, {"report": REPORT}, tiers=tiers, store=store, local_only=True)
    assert result.status == "failed" and "extract_fields" in (result.error or "")
    assert client.requests == []
    refused = next(c for c in calls(store.get_run(result.run_id)) if c.node == "extract_fields")
    assert refused.escalation_refused == "local_only" and (refused.escalation_reason or "").startswith(
        "invalid_json"
    )


def test_redacted_values_never_reach_the_llm_and_come_back_in_the_output(store: TraceStore) -> None:
    def reply(request: dict[str, object]) -> str:
        sent = json.dumps(request["messages"])
        assert "[EMAIL_1]" in sent and "[NAME_1]" in sent
        return "Dear [NAME_1], we refund card [CARD_1] and write to [EMAIL_1]."

    llm, client = recording_llm(reply)
    slm = slm_script(**{"draft_reply:find_names": [{"names": ["Ana Lima"]}]}).slm
    result = run_graph(triage.graph, {"report": REPORT}, tiers=Tiers(slm, llm), store=store, redact=True)
    assert result.ok, result.error
    sent = client.sent_text()
    assert len(client.requests) == 1
    for value in SECRET_VALUES:
        assert value not in sent, value
    assert result.state["reply"] == (
        "Dear Ana Lima, we refund card 4111 1111 1111 1111 and write to ana.lima@example.org."
    )
    trace = store.get_run(result.run_id)
    llm_call = next(c for c in calls(trace) if c.tier == "llm")
    assert llm_call.redacted == ["email", "iban", "card", "id", "phone", "name"]
    stored = json.dumps(llm_call.messages)
    assert not any(value in stored for value in SECRET_VALUES)  # the trace keeps what was sent


def test_redaction_rules() -> None:
    redactor = Redactor(["card", "phone", "email"])
    text, kinds = redactor.redact_text("Card 4111 1111 1111 1112 is not valid; call 555-0100-22.")
    assert "4111 1111 1111 1112" in text and kinds == {"phone"}  # a failed Luhn check is kept
    assert luhn_valid("4111111111111111") and not luhn_valid("1234")
    again, _ = redactor.redact_text("call 555-0100-22 or mail a@b.io")
    assert again == "call [PHONE_1] or mail [EMAIL_1]"  # the same value, the same placeholder
    assert redactor.restore("[PHONE_1] and [EMAIL_1] and [NAME_9]") == "555-0100-22 and a@b.io and [NAME_9]"


def test_the_budget_stops_the_run_before_the_call_that_would_pass_it(store: TraceStore) -> None:
    llm, client = recording_llm(lambda request: "a reply")
    tiers = Tiers(slm_script().slm, llm)
    result = run_graph(
        triage.graph, {"report": REPORT}, tiers=tiers, store=store, budget=Budget(max_llm_tokens=1)
    )
    assert result.status == "budget_exceeded" and client.requests == []
    assert "'draft_reply'" in (result.error or "") and "1-token budget" in (result.error or "")
    assert result.state["category"] == "billing" and result.state["team"] == "finance"  # kept
    trace = store.get_run(result.run_id)
    assert trace.status == "budget_exceeded"
    assert [(s.node, s.status) for s in trace.steps] == [
        ("classify", "succeeded"),
        ("extract_fields", "succeeded"),
        ("draft_reply", "failed"),
    ]


def test_a_cost_budget_allows_calls_until_the_cap(store: TraceStore) -> None:
    llm, client = recording_llm(lambda request: "a reply")
    tiers = Tiers(slm_script().slm, llm)
    generous = Budget(max_cost_usd=1.0)
    result = run_graph(triage.graph, {"report": REPORT}, tiers=tiers, store=store, budget=generous)
    assert result.ok and len(client.requests) == 1
    tiny = Budget(max_cost_usd=0.000001)
    tiers = Tiers(slm_script().slm, llm)
    result = run_graph(triage.graph, {"report": REPORT}, tiers=tiers, store=store, budget=tiny)
    assert result.status == "budget_exceeded" and "$" in (result.error or "")
    assert len(client.requests) == 1


def test_a_local_only_run_cannot_be_replayed_on_the_llm(store: TraceStore) -> None:
    import pytest
    from tierflow.errors import LocalOnlyError
    from tierflow.graphs.replay import replay_call

    llm, client = recording_llm(lambda request: "never")
    tiers = Tiers(slm_script(draft_reply=["Thanks."]).slm, llm)
    result = run_graph(triage.graph, {"report": REPORT}, tiers=tiers, store=store, local_only=True)
    call = calls(store.get_run(result.run_id))[0]
    assert call.id is not None
    with pytest.raises(LocalOnlyError, match="local-only"):
        replay_call(store, tiers, call.id, "llm")
    assert client.requests == []


def test_one_step_can_redact_when_the_run_does_not(store: TraceStore) -> None:
    from langgraph.graph import START, StateGraph
    from tierflow import TierContext, reason

    from tests.test_kit import Item

    llm, client = recording_llm(lambda request: "We will write to [EMAIL_1].")
    graph = StateGraph(Item, context_schema=TierContext)
    graph.add_node("reply", reason("Reply.", inputs="text", into="label", redact=True))
    graph.add_edge(START, "reply")
    tiers = Tiers(scripted_tiers({"reply:find_names": [{"names": []}]}).slm, llm)
    result = run_graph(graph.compile(), {"text": "mail me at ana.lima@example.org"}, tiers=tiers, store=store)
    assert result.state["label"] == "We will write to ana.lima@example.org."
    assert "ana.lima@example.org" not in client.sent_text()
