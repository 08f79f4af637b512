"""The SLM tier on an OpenAI-compatible server: its escalation signals read from the server's
log-probabilities in the response shapes of llama-cpp-python, vLLM and Ollama, the signals a
server cannot give named in the trace, and its settings. Fake servers on 127.0.0.1 answer the
real ``openai`` client; the real llama-cpp-python server is in ``test_served_slm_real``."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, TypedDict

import pytest
from langgraph.graph import END, START, StateGraph
from rich.console import Console
from tierflow import TierContext, TierPolicy, choose, run_graph, summarize
from tierflow.agents.confidence import ChoiceField
from tierflow.agents.fitting import context_budget
from tierflow.agents.llm import OpenAIChatModel, bounded_client
from tierflow.agents.scripted import ScriptedModel
from tierflow.agents.served import served_choice, served_tokens, served_value_signals
from tierflow.agents.tiers import Tiers
from tierflow.agents.watch import GenerationWatch, watching
from tierflow.app import App, build_slm, slm_name
from tierflow.batch.job import JobRequest, run_job
from tierflow.cli.render import print_run
from tierflow.errors import ConfigError, ContextOverflowError, LLMUnavailableError
from tierflow.memory import TraceStore
from tierflow.settings import load_settings

from tests.fake_openai import Endpoint, LogprobsShape, Token, fake_openai
from tests.test_cli import no_traceback, tierflow
from tests.test_kit import model_calls

TOOLS = ("get_weather", "get_time", "none")
TOOL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"tool": {"type": "string", "enum": list(TOOLS)}},
    "required": ["tool"],
}


def reply(*value_tokens: Token, key: str = "tool") -> list[Token]:
    """``{"KEY": ...}`` token by token: certain punctuation around the given value tokens."""
    return [
        ('{"', -0.01, [('{"', -0.01)]),
        (key, -0.02, [(key, -0.02)]),
        ('":', -0.01, [('":', -0.01)]),
        (' "', -0.01, [(' "', -0.01), (" [", -6.0)]),
        *value_tokens,
        ('"}', -0.03, [('"}', -0.03), ('",', -4.0)]),
    ]


def tokens_of(tokens: list[Token], shape: LogprobsShape = "openai", top: int = 5) -> Any:
    """What ``served_tokens`` reads from a response of this shape."""
    endpoint = Endpoint(tokens=tokens, logprobs_shape=shape)
    _, body = endpoint.answer({"logprobs": True, "top_logprobs": top})
    return served_tokens(body["choices"][0]["logprobs"])


# The llama.cpp grammar forced "ge" + "t" although the model would write "get": both tools
# share those tokens, so they cost neither anything; "_weather" against "_time" decides.
GRAMMAR_SPLIT = reply(
    ("ge", -1.0, [("ge", -1.0), ("none", -3.0), ("Weather", -3.5)]),
    ("t", -16.8, [("ol", -1.2), ("oc", -1.5), ("t", -16.8)]),
    ("_weather", -0.3, [("_weather", -0.3), ("_time", -1.6), ("weather", -2.5)]),
)


@pytest.mark.parametrize("shape", ["openai", "vllm", "ollama", "llamacpp"])
def test_option_probabilities_come_from_the_top_logprobs_along_the_reply(shape: LogprobsShape) -> None:
    text = '{"tool": "get_weather"}'
    tokens = tokens_of(GRAMMAR_SPLIT, shape)
    probabilities, keep = served_choice(tokens, text, ChoiceField("tool", TOOLS)) or ({}, "")
    assert keep == "get_weather"
    assert sum(probabilities.values()) == pytest.approx(1.0)
    # P(get_*) = e^-1 / (e^-1 + e^-3); then _weather against _time: e^-0.3 / (e^-0.3 + e^-1.6)
    get = 1 / (1 + math.exp(-2))
    weather = 1 / (1 + math.exp(-1.3))
    assert probabilities["get_weather"] == pytest.approx(get * weather, rel=1e-3)
    assert probabilities["get_time"] == pytest.approx(get * (1 - weather), rel=1e-3)
    assert probabilities["none"] == pytest.approx(1 - get, rel=1e-3)


def test_a_more_probable_option_replaces_the_reply_but_a_bound_never_does() -> None:
    text = '{"tool": "get_time"}'
    spoken = reply(("get", -0.1, [("get", -0.1)]), ("_time", -1.5, [("_weather", -0.4), ("_time", -1.5)]))
    probabilities, keep = served_choice(tokens_of(spoken), text, ChoiceField("tool", TOOLS)) or ({}, "")
    assert keep == "get_weather" and probabilities["get_weather"] > probabilities["get_time"]
    # nothing but the reply's tokens is listed: every other option is bounded by the smallest
    # listed probability, which can make it look as likely as the reply; a bound never wins
    unlisted = reply(("get", -2.0, [("get", -2.0)]), ("_time", -0.1, [("_time", -0.1)]))
    probabilities, keep = served_choice(tokens_of(unlisted), text, ChoiceField("tool", TOOLS)) or ({}, "")
    assert keep == "get_time" and probabilities["none"] > probabilities["get_time"]


def test_value_signals_read_bytes_across_a_split_character() -> None:
    # "é" is two bytes; vLLM and Ollama may split it over two tokens, each with its bytes
    pieces = [
        (b'{"', -0.01),
        (b"city", -0.02),
        (b'":', -0.01),
        (b' "', -0.01),
        (b"caf", -0.2),
        (b"\xc3", -0.5),
        (b"\xa9", -2.5),
        (b'"}', -0.03),
    ]
    content = [
        {
            "token": piece.decode(errors="replace"),
            "logprob": logprob,
            "bytes": list(piece),
            "top_logprobs": [],
        }
        for piece, logprob in pieces
    ]
    content[6]["top_logprobs"] = [{"token": "x", "logprob": -0.1, "bytes": [120]}]  # not the likeliest
    read = served_tokens({"content": content})
    assert read is not None and b"".join(t.piece for t in read) == '{"city": "café"}'.encode()
    signals = served_value_signals(read, '{"city": "café"}')
    assert signals is not None and signals.tokens == 5  # ' "' (its quote), caf, two halves of é, '"}'
    assert signals.min_logprob == -2.5 and signals.forced_tokens == 1


def slm_on(
    server_url: str, top_logprobs: int | None = 5, response_format: Any = "json_schema"
) -> OpenAIChatModel:
    client = bounded_client(server_url, "unused", timeout=10, max_retries=0)
    return OpenAIChatModel(
        client,
        "served-model",
        tier="slm",
        top_logprobs=top_logprobs,
        response_format=response_format,
        n_ctx=2048,
    )


MESSAGES = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.mark.parametrize("shape", ["openai", "vllm", "ollama", "llamacpp"])
def test_a_served_slm_asks_for_logprobs_and_gives_every_signal(shape: LogprobsShape) -> None:
    with fake_openai(Endpoint(tokens=GRAMMAR_SPLIT, logprobs_shape=shape)) as fake:
        slm = slm_on(fake.base_url)
        chosen = slm.complete(MESSAGES, schema=TOOL_SCHEMA, max_tokens=20)
        extracted = slm.complete(
            MESSAGES, schema={"type": "object", "properties": {"tool": {"type": "string"}}}, max_tokens=20
        )
        text = slm.complete(MESSAGES, max_tokens=20)
    sent = fake.requests[0]
    assert sent["logprobs"] is True and sent["top_logprobs"] == 5
    assert sent["response_format"]["type"] == "json_schema"
    assert chosen.tier == "slm" and json.loads(chosen.text) == {"tool": "get_weather"}
    assert chosen.choice_probabilities is not None and chosen.confidence == pytest.approx(
        chosen.choice_probabilities.probabilities["get_weather"]
    )
    assert chosen.missing_signals == ()
    assert extracted.signals is not None and extracted.signals.forced_tokens == 1  # the "t"
    assert text.signals is not None and text.signals.tokens == len(GRAMMAR_SPLIT)
    assert slm.n_ctx == 2048
    with fake_openai(Endpoint(tokens=GRAMMAR_SPLIT, logprobs_shape=shape)) as fake:
        slm_on(fake.base_url, response_format="llamacpp").complete(
            MESSAGES, schema=TOOL_SCHEMA, max_tokens=20
        )
    # a llama.cpp server answers as llama.cpp in process does: no repeat penalty
    assert (
        fake.requests[0]["repeat_penalty"] == 1.0
        and fake.requests[0]["response_format"]["type"] == "json_object"
    )


def test_a_server_without_logprobs_is_asked_once_and_the_missing_signal_named(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with fake_openai(Endpoint(tokens=GRAMMAR_SPLIT, refuse_logprobs=True)) as fake:
        slm = slm_on(fake.base_url)
        with caplog.at_level(logging.WARNING):
            first = slm.complete(MESSAGES, schema=TOOL_SCHEMA, max_tokens=20)
            second = slm.complete(MESSAGES, schema=TOOL_SCHEMA, max_tokens=20)
    assert [bool(r.get("logprobs")) for r in fake.requests] == [True, False, False]
    assert first.missing_signals == second.missing_signals == ("logprobs",)
    assert first.choice_probabilities is None and json.loads(first.text) == {"tool": "get_weather"}
    assert "the SLM at" in caplog.text and "logprobs" in caplog.text
    # a server that silently ignores the request (older Ollama) says nothing: still named
    with fake_openai(Endpoint(tokens=GRAMMAR_SPLIT, logprobs_shape="ignored")) as fake:
        assert slm_on(fake.base_url).complete(MESSAGES, max_tokens=20).missing_signals == ("logprobs",)


def test_a_served_slm_overflow_escalates_and_its_errors_name_the_slm_settings() -> None:
    with fake_openai(Endpoint(context_overflow=True)) as fake, pytest.raises(ContextOverflowError):
        slm_on(fake.base_url).complete(MESSAGES, max_tokens=20)
    with pytest.raises(LLMUnavailableError) as raised:
        slm_on("http://127.0.0.1:9/v1").complete(MESSAGES, max_tokens=20)
    assert "could not reach the SLM at http://127.0.0.1:9/v1" in raised.value.message
    assert "TIERFLOW_SLM_BASE_URL" in (raised.value.hint or "") and "SLM in process" in (
        raised.value.hint or ""
    )


class Ticket(TypedDict, total=False):
    report: str
    category: str


def classify_graph() -> Any:
    builder = StateGraph(Ticket, context_schema=TierContext)
    builder.add_node(
        "classify",
        choose(
            {"bug": "a defect", "spam": "advertising", "billing": "charges"}, inputs="report", into="category"
        ),
    )
    builder.add_edge(START, "classify")
    builder.add_edge("classify", END)
    return builder.compile()


# greedy decoding wrote "spam", but "bug" had more of the probability at its first token
SPAM_OVER_BUG = reply(
    ("sp", -1.2, [("bug", -0.6), ("sp", -1.2), ("bill", -2.5)]), ("am", -0.05, [("am", -0.05)]), key="label"
)


def test_a_kit_step_on_a_served_slm_traces_its_probabilities_and_escalates(store: TraceStore) -> None:
    with fake_openai(Endpoint(tokens=SPAM_OVER_BUG, logprobs_shape="vllm")) as fake:
        tiers = Tiers(
            slm_on(fake.base_url),
            ScriptedModel(tier="llm", name="big", by_node={"classify": [{"label": "bug"}]}),
        )
        sure = run_graph(
            classify_graph(),
            {"report": "Export crashes."},
            tiers=tiers,
            store=store,
            policy=TierPolicy(min_confidence=0.3),
        )
        unsure = run_graph(
            classify_graph(),
            {"report": "Export crashes."},
            tiers=tiers,
            store=store,
            policy=TierPolicy(min_confidence=0.6),
        )
    assert sure.ok and sure.state["category"] == "bug"  # the more probable option, on the SLM
    (call,) = model_calls(store.get_run(sure.run_id))
    assert call.tier == "slm" and not call.escalated
    assert (
        call.choice_probabilities is not None
        and call.choice_probabilities["bug"] > call.choice_probabilities["spam"]
    )
    assert call.missing_signals is None
    assert unsure.ok and unsure.state["category"] == "bug"
    slm_call, llm_call = model_calls(store.get_run(unsure.run_id))
    assert slm_call.escalated and (slm_call.escalation_reason or "").startswith("low_confidence")
    assert llm_call.tier == "llm"


def test_the_trace_names_a_signal_the_server_could_not_give(store: TraceStore) -> None:
    with fake_openai(Endpoint(tokens=SPAM_OVER_BUG, logprobs_shape="ignored")) as fake:
        tiers = Tiers(slm_on(fake.base_url), ScriptedModel(tier="llm", name="big", by_node={}))
        result = run_graph(classify_graph(), {"report": "Buy now!"}, tiers=tiers, store=store, policy="slm")
    assert result.ok and result.state["category"] == "spam"
    (call,) = model_calls(store.get_run(result.run_id))
    assert call.missing_signals == ["logprobs"] and call.choice_probabilities is None
    console = Console(record=True, width=200)
    print_run(console, store.get_run(result.run_id))
    assert "no logprobs from the server" in console.export_text()


def test_a_shared_slm_is_refused_for_a_ray_cluster_it_could_not_reach(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("A report.", encoding="utf-8")
    request = JobRequest(
        inputs=[str(tmp_path)], workers=2, backend="ray", ray_address="ray://10.0.0.9:10001", shared_slm=True
    )
    with App(load_settings()) as app, pytest.raises(ConfigError) as raised:
        run_job(request, app)
    assert "cannot reach" in raised.value.message and "serve-slm" in (raised.value.hint or "")


def test_the_slm_shorthand_names_a_server_and_its_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIERFLOW_SLM", "ollama:qwen2.5:0.5b")
    monkeypatch.setenv("TIERFLOW_SLM_API_KEY", "sk-slm-secret-1234")
    settings = load_settings()
    assert settings.slm_base_url == "http://127.0.0.1:11434/v1" and settings.slm_model == "qwen2.5:0.5b"
    assert settings.slm_response_format == "json_schema" and slm_name(settings) == "qwen2.5:0.5b"
    assert "sk-slm-secret-1234" in settings.secrets() and "sk-slm-secret" not in json.dumps(settings.masked())
    slm = build_slm(settings)
    assert isinstance(slm, OpenAIChatModel) and slm.tier == "slm" and slm.n_ctx == settings.slm_n_ctx
    monkeypatch.setenv("TIERFLOW_SLM", "llamacpp:qwen2.5-coder-0.5b")
    monkeypatch.setenv("TIERFLOW_SLM_MODEL", "other")
    monkeypatch.setenv("TIERFLOW_SLM_BASE_URL", "http://10.0.0.5:8080/v1")
    settings = load_settings()  # explicit settings win over the shorthand's
    assert (settings.slm_base_url, settings.slm_model, settings.slm_response_format) == (
        "http://10.0.0.5:8080/v1",
        "other",
        "llamacpp",
    )
    monkeypatch.setenv("TIERFLOW_SLM", "lmstudio:qwen")
    with pytest.raises(ConfigError) as raised:
        load_settings()
    assert "unknown SLM provider 'lmstudio'" in raised.value.message
    assert "TIERFLOW_SLM_BASE_URL" in (raised.value.hint or "")


LOOPING = [
    (f" {word}", -0.3, [(f" {word}", -0.3)])
    for _ in range(30)
    for word in "the export crashes again and".split()
]


def test_a_watched_text_on_a_served_slm_is_streamed_and_cut_off_when_it_loops() -> None:
    with fake_openai(Endpoint(tokens=LOOPING, logprobs_shape="llamacpp")) as fake:
        slm = slm_on(fake.base_url)
        with watching(GenerationWatch(source="The export button crashes.", loop_words=12)) as watch:
            got = slm.complete(MESSAGES, max_tokens=400)
        unwatched = slm.complete(MESSAGES, max_tokens=400)  # no watch: one plain request
    assert fake.requests[0]["stream"] is True and fake.requests[0]["logprobs"] is True
    assert "stream" not in fake.requests[1]
    assert watch is not None and got.stopped == watch.stopped == "loops" and got.finish_reason == "stopped"
    words = got.text.split()
    assert 24 <= len(words) < 40 < len(unwatched.text.split())  # two loops of 12 words, not 150
    assert got.signals is not None and got.signals.tokens == len(words)
    assert got.completion_tokens == len(words)  # counted from the stream (no usage was sent)


def test_a_kit_summary_on_a_served_slm_that_loops_escalates_at_once(store: TraceStore) -> None:
    builder = StateGraph(Ticket, context_schema=TierContext)
    builder.add_node("shorten", summarize(inputs="report", into="category", max_sentences=2))
    builder.add_edge(START, "shorten")
    builder.add_edge("shorten", END)
    with fake_openai(Endpoint(tokens=LOOPING, logprobs_shape="vllm")) as fake:
        llm = ScriptedModel(tier="llm", name="big", by_node={"shorten": ["The export crashes."]})
        tiers = Tiers(slm_on(fake.base_url), llm)
        result = run_graph(
            builder.compile(), {"report": "The export button crashes."}, tiers=tiers, store=store
        )
    assert result.ok and result.state["category"] == "The export crashes."
    slm_call, llm_call = model_calls(store.get_run(result.run_id))
    assert slm_call.escalated and (slm_call.escalation_reason or "").startswith("loops")
    assert llm_call.tier == "llm"


@pytest.mark.parametrize("tokenizer", ["llamacpp", "vllm", None])
def test_a_served_slm_counts_tokens_at_its_server_or_estimates_them(tokenizer: Any) -> None:
    text = "one two three four five six seven eight nine ten"
    with fake_openai(Endpoint(tokenizer=tokenizer)) as fake:
        slm = slm_on(fake.base_url)
        counts = [slm.count_tokens(text), slm.count_tokens(text + " eleven")]
        asked = fake.tokenized
    if tokenizer is None:  # no endpoint: a token per 3 characters, and no more asking
        assert counts == [-(-len(text) // 3), -(-(len(text) + 7) // 3)] and asked == 2
    else:  # the server's own count (a word a token here), found once, then asked directly
        assert counts == [10, 11] and asked == (3 if tokenizer == "vllm" else 2)
    # the text that fits the SLM's context is measured by the same count
    assert context_budget(slm, [], max_tokens=100) == 2048 - 100 - 48


def test_serve_slm_stays_on_loopback_unless_told_and_never_serves_a_served_slm(tmp_path: Path) -> None:
    env = {"TIERFLOW_DATA_DIR": str(tmp_path / "data")}
    open_to_all = tierflow("serve-slm", "--host", "0.0.0.0", env=env)
    assert open_to_all.returncode == 2 and "--remote" in open_to_all.stderr
    served = tierflow("serve-slm", env={**env, "TIERFLOW_SLM": "ollama:qwen2.5:0.5b"})
    assert served.returncode == 2 and "already set to a server" in served.stderr
    no_traceback(served)


def test_an_llm_on_llama_cpp_pythons_server_counts_tokens_there_and_others_are_not_asked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A batch job's workers reach the embedded LLM as an endpoint of response format
    ``llamacpp``: its chunks are cut in the server's tokens. A hosted LLM is never probed."""
    from tierflow.app import build_llm

    text = "one two three four five six seven eight nine ten"
    for response_format, asked in (("llamacpp", 1), ("json_schema", 0)):
        with fake_openai(Endpoint(tokenizer="llamacpp")) as fake:
            monkeypatch.setenv("TIERFLOW_LLM_BASE_URL", fake.base_url)
            monkeypatch.setenv("TIERFLOW_LLM_MODEL", "big")
            monkeypatch.setenv("TIERFLOW_LLM_RESPONSE_FORMAT", response_format)
            counted = build_llm(load_settings()).count_tokens(text)  # type: ignore[attr-defined]
            assert (counted, fake.tokenized) == ((10, 1) if asked else (-(-len(text) // 3), 0))
