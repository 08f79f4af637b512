"""The OpenTelemetry export of runs, received by a local OTLP/HTTP collector on 127.0.0.1:
one trace per run (run -> step -> model or tool call), the GenAI attributes and tierflow's
own, escalations, errors, no content unless asked, and nothing at all when it is off."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from tierflow import run_graph
from tierflow.app import App, trace_listeners
from tierflow.errors import LLMUnavailableError
from tierflow.graphs.examples import triage
from tierflow.memory import TraceStore
from tierflow.memory.traces.otel_spans import lay_out
from tierflow.memory.traces.telemetry import RunTelemetry
from tierflow.memory.traces.tracelog import TraceLog, replay
from tierflow.settings import load_settings

from tests import otlp_receiver
from tests.kit_support import scripted_tiers
from tests.otlp_receiver import ReceivedSpan, Receiver
from tests.scripted import ANSWER, EXTRACT, PLAN, SELECT, scripted_runner

REPO = Path(__file__).resolve().parents[1]
REPORT = "Hi, since 2.3 the export button crashes the app every time. -- ana@example.org"
FIELDS = {"product": "export", "severity": "high", "summary": "Export crashes the app."}
REPLY = "Thanks! Engineering is on it."


def triage_tiers(**overrides: Any) -> Any:
    slm = {"classify": [{"label": "bug"}], "extract_fields": [FIELDS], **overrides.get("slm", {})}
    llm = {"draft_reply": [REPLY], **overrides.get("llm", {})}
    return scripted_tiers(slm, llm)


def escalating_tiers() -> Any:
    """Triage whose SLM extraction is rejected (no such severity), so the LLM redoes it."""
    wrong = {"product": "export", "severity": "apocalyptic", "summary": "x"}
    return triage_tiers(slm={"extract_fields": [wrong]}, llm={"extract_fields": [FIELDS]})


def root_of(spans: list[ReceivedSpan]) -> ReceivedSpan:
    [root] = [span for span in spans if not span.parent_id]
    return root


def children(spans: list[ReceivedSpan], parent: ReceivedSpan) -> list[ReceivedSpan]:
    """The parent's child spans, in the order they ended (the order they were exported)."""
    return [span for span in spans if span.parent_id == parent.span_id]


def assert_within(child: ReceivedSpan, parent: ReceivedSpan) -> None:
    assert parent.start_ns <= child.start_ns <= child.end_ns <= parent.end_ns, (child.name, parent.name)


def ns(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) * 1000


@pytest.fixture(autouse=True)
def no_otel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("OTEL_"):
            monkeypatch.delenv(key)


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    with otlp_receiver.serve() as running:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", running.url)
        yield running


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[Callable[[], TraceStore]]:
    """Opens trace stores as the environment is when called (the export is read then)."""
    opened: list[TraceStore] = []

    def open_store() -> TraceStore:
        url = f"sqlite:///{tmp_path / 'otel.db'}"
        opened.append(TraceStore.from_url(url, secrets=["sk-test-SECRET-42"], listeners=trace_listeners()))
        return opened[-1]

    yield open_store
    for store in opened:
        for listener in store.listeners:
            if isinstance(listener, RunTelemetry):
                listener.close()
        store.engine.dispose()


def test_each_run_is_a_trace_of_its_steps_and_model_calls(
    receiver: Receiver, stores: Callable[[], TraceStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "Authorization=Basic%20cGs6c2s=")  # as for Langfuse
    store = stores()
    escalated = run_graph(triage.graph, {"report": REPORT}, tiers=escalating_tiers(), store=store)
    plain = run_graph(triage.graph, {"report": REPORT}, tiers=triage_tiers(), store=store)
    assert escalated.ok and plain.ok
    traces = receiver.traces()  # flushed before run_graph returned
    runs = {root_of(spans).attributes["tierflow.run_id"]: spans for spans in traces.values()}
    assert len(traces) == 2 and set(runs) == {escalated.run_id, plain.run_id}
    assert {headers["authorization"] for headers in receiver.headers} == {"Basic cGs6c2s="}

    spans = runs[escalated.run_id]
    run = root_of(spans)
    assert (run.name, run.attributes["tierflow.graph"], run.error) == ("triage", "triage", None)
    assert run.attributes["tierflow.status"] == "succeeded"
    assert run.resource["service.name"] == "tierflow"
    steps = sorted(children(spans, run), key=lambda span: span.attributes["tierflow.step"])
    stored = store.get_run(escalated.run_id)
    # plain Python nodes (assign) are no traced steps
    assert (
        [s.name for s in steps]
        == [s.node for s in stored.steps]
        == ["classify", "extract_fields", "draft_reply"]
    )
    for span, step in zip(steps, stored.steps, strict=True):
        assert span.start_ns == ns(step.started_at) and span.attributes["tierflow.node"] == step.node
        assert_within(span, run)
    calls = {step.name: children(spans, step) for step in steps}
    for step in steps:
        for call in calls[step.name]:
            assert_within(call, step)
            assert call.attributes["tierflow.run_id"] == escalated.run_id
            assert call.attributes["tierflow.node"] == step.name

    stored_calls = [call for step in stored.steps for call in step.model_calls]
    sent = [call for step in steps for call in calls[step.name]]
    assert [c.attributes["tierflow.tier"] for c in sent] == ["slm", "slm", "llm", "llm"]
    for span, call in zip(sent, stored_calls, strict=True):
        assert span.attributes["gen_ai.operation.name"] == "chat"
        assert span.attributes["gen_ai.system"] == {"slm": "llama.cpp", "llm": "openai"}[call.tier]
        assert (
            span.attributes["gen_ai.request.model"] == span.attributes["gen_ai.response.model"] == call.model
        )
        assert span.name == f"chat {call.model}"
        assert span.attributes["gen_ai.usage.input_tokens"] == call.prompt_tokens > 0
        assert span.attributes["gen_ai.usage.output_tokens"] == call.completion_tokens
        assert span.attributes["gen_ai.request.max_tokens"] == call.max_tokens
        assert span.attributes["gen_ai.response.finish_reasons"] == ["stop"]

    slm_try, llm_redo = calls["extract_fields"]
    assert (slm_try.attributes["tierflow.tier"], llm_redo.attributes["tierflow.tier"]) == ("slm", "llm")
    assert slm_try.attributes["tierflow.escalated"] is True
    assert slm_try.attributes["tierflow.escalation_reason"].startswith("schema_validation: severity")
    assert llm_redo.attributes["tierflow.escalated"] is False
    assert "tierflow.escalation_reason" not in llm_redo.attributes

    # no prompt, reply or task by default: traces hold users' data
    assert not any("messages" in key or key.endswith(".value") for s in spans for key in s.attributes)
    for body in receiver.requests:
        assert b"export button" not in body and REPLY.encode() not in body


def test_tool_calls_are_spans_and_a_later_verdict_reaches_the_call(
    receiver: Receiver, stores: Callable[[], TraceStore], tmp_path: Path
) -> None:
    """The tool rejects the SLM's arguments, so a later step marks that call escalated."""
    runner, _, _ = scripted_runner(
        stores(),
        tmp_path,
        llm={PLAN: ['{"steps": ["Compute 1/0"], "answer": ""}'], EXTRACT: ['{"expression": "1/0"}']},
        slm={
            SELECT: ['{"tool": "calculator"}'],
            EXTRACT: ['{"expression": "1/0"}'],
            ANSWER: ["It cannot be computed: division by zero."],
        },
    )
    result = runner.run("What is 1/0?")
    assert result.status == "succeeded"
    [spans] = receiver.traces().values()
    by_id = {span.span_id: span for span in spans}
    tools = [s for s in spans if s.attributes.get("gen_ai.operation.name") == "execute_tool"]
    assert [t.name for t in tools] == ["execute_tool calculator"] * 2
    for tool in tools:
        assert tool.attributes["gen_ai.tool.name"] == "calculator" and tool.error == "division by zero"
        assert tool.attributes["error.type"] == "_OTHER"
        assert by_id[tool.parent_id].name == "act" and "gen_ai.tool.call.arguments" not in tool.attributes
        assert_within(tool, by_id[tool.parent_id])
    extracts = [s for s in spans if s.attributes.get("tierflow.node") == "extract_args" and s.parent_id]
    slm_call, llm_call = (s for s in extracts if s.attributes.get("gen_ai.operation.name") == "chat")
    assert slm_call.attributes["tierflow.tier"] == "slm" and slm_call.attributes["tierflow.escalated"] is True
    assert slm_call.attributes["tierflow.escalation_reason"] == "tool_rejected_arguments: division by zero"
    assert (
        llm_call.attributes["tierflow.tier"] == "llm" and llm_call.attributes["tierflow.escalated"] is False
    )


def test_failures_set_the_error_status(receiver: Receiver, stores: Callable[[], TraceStore]) -> None:
    store = stores()
    refused = run_graph(
        triage.graph,
        {"report": REPORT},
        tiers=triage_tiers(slm={"extract_fields": ["not json"]}),
        store=store,
        local_only=True,
    )
    down = LLMUnavailableError("could not reach the LLM at http://127.0.0.1:9/v1", hint="Start it.")
    unreachable = run_graph(
        triage.graph, {"report": REPORT}, tiers=triage_tiers(llm={"draft_reply": [down]}), store=store
    )
    assert refused.status == unreachable.status == "failed"
    runs = {root_of(spans).attributes["tierflow.run_id"]: spans for spans in receiver.traces().values()}

    spans = runs[refused.run_id]
    run = root_of(spans)
    assert run.attributes["tierflow.status"] == "failed" and "extract_fields" in (run.error or "")
    assert run.attributes["error.type"] == "failed"
    [step] = [s for s in spans if s.name == "extract_fields"]
    assert step.error and step.attributes["tierflow.status"] == "failed"
    [call] = children(spans, step)
    assert call.attributes["tierflow.escalation_refused"] == "local_only"
    assert call.attributes["tierflow.escalated"] is False

    spans = runs[unreachable.run_id]
    assert "could not reach" in (root_of(spans).error or "")
    [step] = [s for s in spans if s.name == "draft_reply"]
    assert step.error and step.error.startswith("LLMUnavailableError: could not reach")
    assert step.attributes["error.type"] == "LLMUnavailableError"
    [call] = children(spans, step)
    assert call.attributes["tierflow.tier"] == "llm" and (call.error or "").startswith("could not reach")


def test_content_only_when_asked_and_scrubbed_of_secrets(
    receiver: Receiver, stores: Callable[[], TraceStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIERFLOW_OTEL_CONTENT", "true")
    report = REPORT + (
        " My key is sk-abcdefghijklmnopqrstuvwx, the other sk-test-SECRET-42,"
        " my password is hunter2 and api_key=abc123def."
    )
    result = run_graph(triage.graph, {"report": report}, tiers=triage_tiers(), store=stores())
    assert result.ok
    [spans] = receiver.traces().values()
    run = root_of(spans)
    assert "export button" in run.attributes["input.value"] and "[REDACTED]" in run.attributes["input.value"]
    assert run.attributes["output.value"].startswith("{")  # the final state, as the trace keeps it
    [draft] = [s for s in spans if s.name == "chat big"]
    sent = json.loads(draft.attributes["gen_ai.input.messages"])
    assert [m["role"] for m in sent] == ["system", "user"]
    assert sent[1]["parts"][0]["type"] == "text" and "export button" in sent[1]["parts"][0]["content"]
    [reply] = json.loads(draft.attributes["gen_ai.output.messages"])
    assert reply == {
        "role": "assistant",
        "parts": [{"type": "text", "content": REPLY}],
        "finish_reason": "stop",
    }
    for body in receiver.requests:
        assert b"sk-abcdefghijklmnopqrstuvwx" not in body and b"sk-test-SECRET-42" not in body
        assert b"hunter2" not in body and b"abc123def" not in body


def test_a_batch_workers_trace_is_exported_when_replayed(
    receiver: Receiver, stores: Callable[[], TraceStore]
) -> None:
    log = TraceLog()  # a worker's store: its log keeps the writes for the driver
    worker = TraceStore.in_memory(listeners=[log])
    result = run_graph(triage.graph, {"report": REPORT}, tiers=escalating_tiers(), store=worker)
    assert result.ok and receiver.requests == []
    replay(stores(), log.writes)
    [spans] = receiver.traces().values()
    run = root_of(spans)
    assert run.attributes["tierflow.run_id"] == result.run_id
    steps = children(spans, run)
    assert sorted(s.name for s in steps) == ["classify", "draft_reply", "extract_fields"]
    for step in steps:
        assert_within(step, run)
    [slm_try, _] = children(spans, next(s for s in steps if s.name == "extract_fields"))
    assert slm_try.attributes["tierflow.escalated"] is True


def test_off_without_an_endpoint(stores: Callable[[], TraceStore]) -> None:
    with otlp_receiver.serve() as listening:  # up, but no OTEL_EXPORTER_OTLP_ENDPOINT names it
        store = stores()
        result = run_graph(triage.graph, {"report": REPORT}, tiers=triage_tiers(), store=store)
    assert result.ok and store.listeners == () and listening.requests == []


def test_the_app_wires_the_export_from_the_environment(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The trace store knows nothing of OpenTelemetry: the app hands it the export as a
    listener when the environment names an endpoint."""
    monkeypatch.setenv("TIERFLOW_DATA_DIR", str(tmp_path))
    with App(load_settings()) as app:
        [listener] = app.store.listeners
        assert isinstance(listener, RunTelemetry) and listener.endpoint == f"{receiver.url}/v1/traces"
        result = run_graph(triage.graph, {"report": REPORT}, tiers=triage_tiers(), store=app.store)
        listener.close()
    assert result.ok and len(receiver.traces()) == 1


def test_off_imports_no_exporter() -> None:
    """In a fresh process: a whole run without the variable loads neither the OTLP exporter
    nor the SDK's span processors. (``opentelemetry`` itself is imported anyway, by
    langsmith under langchain-core.)"""
    script = """
import json, sys
from tierflow import run_graph
from tierflow.graphs.examples import triage
from tierflow.settings import load_settings
from tierflow.memory import TraceStore
from tests.test_telemetry import REPORT, triage_tiers
from tierflow.app import trace_listeners
store = TraceStore.from_url("sqlite://", listeners=trace_listeners())
result = run_graph(triage.graph, {"report": REPORT}, tiers=triage_tiers(), store=store)
heavy = ("opentelemetry.exporter", "opentelemetry.sdk.trace.export")
loaded = [m for m in sys.modules if m.startswith(heavy)]
print(json.dumps({"ok": result.ok, "telemetry": bool(store.listeners), "loaded": loaded}))
"""
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    env["TIERFLOW_MEMORY"] = "false"  # chromadb imports the OTLP exporter itself, for its own telemetry
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == {"ok": True, "telemetry": False, "loaded": []}


def test_an_unreachable_collector_never_fails_a_run(
    stores: Callable[[], TraceStore], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")  # seconds
    store = stores()
    with caplog.at_level(logging.WARNING):
        results = [
            run_graph(triage.graph, {"report": REPORT}, tiers=triage_tiers(), store=store) for _ in "ab"
        ]
    assert all(result.ok for result in results)
    assert [store.get_run(r.run_id).status for r in results] == ["succeeded", "succeeded"]
    [warning] = [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert warning.name == "tierflow.memory.traces.telemetry"
    assert f"127.0.0.1:{port}/v1/traces" in warning.getMessage()
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" in warning.getMessage()


def test_calls_are_laid_end_to_end_within_their_step() -> None:
    start = datetime(2025, 1, 1, tzinfo=UTC)
    end = start + timedelta(milliseconds=100)
    at = [(a - start) / timedelta(milliseconds=1) for pair in lay_out(start, end, [30, 50, 40]) for a in pair]
    assert at == [0, 30, 30, 80, 80, 100]  # the last one is cut at the step's end
