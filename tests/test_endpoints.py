"""Real endpoints' quirks, through the real ``openai`` client and ``OpenAIChatModel`` against a
fake OpenAI-compatible server on 127.0.0.1: the token-cap parameter, temperature, the
structured-output form, native tool calls, the OpenAI SDK's variables and the
``provider:model`` shorthand."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Literal

import openai
import pytest
from tierflow.agents.llm import OpenAIChatModel
from tierflow.agents.protocol import Message
from tierflow.app import build_llm
from tierflow.errors import ConfigError, LLMUnavailableError
from tierflow.settings import load_settings

from tests.fake_openai import TOOLS_REFUSED, Endpoint, FakeServer, fake_openai

HI: list[Message] = [{"role": "user", "content": "What is the weather in Paris?"}]
CHOICE = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
WEATHER = {  # as ToolRegistry.specs() gives it
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
CLOCK = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}


@pytest.fixture(autouse=True)
def no_openai_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("OPENAI_"):
            monkeypatch.delenv(name)


def chat_model(server: FakeServer, name: str = "my-model", **options: Any) -> OpenAIChatModel:
    client = openai.OpenAI(base_url=server.base_url, api_key="test-key", max_retries=0, timeout=10)
    return OpenAIChatModel(client, name, **options)


def sent(server: FakeServer, key: str) -> list[Any]:
    """What each request sent for ``key`` (None where it sent nothing)."""
    return [request.get(key) for request in server.requests]


# The token cap and the sampling parameters ----------------------------------------------------
def test_a_plain_endpoint_gets_max_tokens_temperature_zero_and_the_seed() -> None:
    with fake_openai() as server:
        reply = chat_model(server).complete(HI, max_tokens=8)
    assert reply.text == "ok" and reply.model == "served-model"
    assert reply.prompt_tokens == 21 and reply.completion_tokens == 7 and reply.latency_ms > 0
    (request,) = server.requests
    assert request["max_tokens"] == 8 and request["temperature"] == 0 and request["seed"] == 0
    assert "max_completion_tokens" not in request


@pytest.mark.parametrize("name", ["o1", "o3-mini", "o4-mini", "gpt-5", "gpt-5-mini", "openai/gpt-5-nano"])
def test_reasoning_models_are_sent_max_completion_tokens_from_the_start(name: str) -> None:
    with fake_openai(Endpoint(refuse_max_tokens=True)) as server:
        chat_model(server, name).complete(HI, max_tokens=8)
    assert sent(server, "max_completion_tokens") == [8] and sent(server, "max_tokens") == [None]


def test_refused_max_tokens_and_temperature_are_retried_once_each_and_remembered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # a reasoning model behind a deployment name that does not give it away (Azure, a proxy)
    quirks = Endpoint(refuse_max_tokens=True, refuse_temperature=True)
    with fake_openai(quirks) as server, caplog.at_level(logging.WARNING, "tierflow.agents.llm"):
        model = chat_model(server, "team-deployment")
        assert model.complete(HI, max_tokens=8).text == "ok"
        assert sent(server, "max_tokens") == [8, None, None]
        assert sent(server, "max_completion_tokens") == [None, 8, 8]
        assert sent(server, "temperature") == [0, 0, None]
        model.complete(HI, max_tokens=9)  # remembered: one request
    assert len(server.requests) == 4
    assert server.requests[-1]["max_completion_tokens"] == 9 and "temperature" not in server.requests[-1]
    assert "refused max_tokens" in caplog.text and "refused temperature" in caplog.text


def test_a_server_refusing_max_completion_tokens_gets_max_tokens() -> None:
    with fake_openai(Endpoint(refuse_max_completion_tokens=True)) as server:
        chat_model(server, "o3-mini").complete(HI, max_tokens=8)
    assert sent(server, "max_completion_tokens") == [8, None] and sent(server, "max_tokens") == [None, 8]


def test_an_explicit_token_parameter_is_kept_and_the_hint_names_the_refused_one() -> None:
    with fake_openai(Endpoint(refuse_max_tokens=True)) as server:
        model = chat_model(server, "team-deployment", token_parameter="max_tokens")
        with pytest.raises(LLMUnavailableError) as info:
            model.complete(HI, schema=CHOICE, max_tokens=8)  # response_format is sent too
    assert len(server.requests) == 1
    assert (
        "refusing 'max_tokens'" in info.value.message and "Use 'max_completion_tokens'" in info.value.message
    )
    assert "TIERFLOW_LLM_TOKEN_PARAMETER=max_completion_tokens" in info.value.hint
    assert "RESPONSE_FORMAT" not in info.value.hint  # not blamed any more


def test_no_temperature_is_sent_when_it_is_left_to_the_server() -> None:
    with fake_openai() as server:
        chat_model(server, temperature=None, seed=None).complete(HI, max_tokens=8)
    assert "temperature" not in server.requests[0] and "seed" not in server.requests[0]


def test_a_400_that_names_no_refused_parameter_blames_none() -> None:
    too_long = (
        "'max_tokens' or 'max_completion_tokens' is too large: 5000. This model's maximum context "
        "length is 4096 tokens and your request has 12 input tokens (5000 > 4096 - 12)."
    )  # vLLM's words: both names, neither refused
    fail = (400, {"error": {"message": too_long, "type": "BadRequestError", "param": None, "code": 400}})
    with fake_openai(Endpoint(fail=fail)) as server, pytest.raises(LLMUnavailableError) as info:
        chat_model(server).complete(HI, schema=CHOICE, max_tokens=5000)
    assert len(server.requests) == 1 and "is too large" in info.value.message
    assert "RESPONSE_FORMAT" not in info.value.hint and "TOKEN_PARAMETER" not in info.value.hint


# Structured output ----------------------------------------------------------------------------
def test_a_refused_json_schema_falls_back_to_llamacpps_form_under_auto() -> None:
    with fake_openai(Endpoint(refuse_json_schema=True)) as server:
        model = chat_model(server)
        model.complete(HI, schema=CHOICE, max_tokens=8)
        model.complete(HI, schema=CHOICE, max_tokens=8)
    forms = [format_["type"] for format_ in sent(server, "response_format")]
    assert forms == ["json_schema", "json_object", "json_object"]
    assert server.requests[-1]["response_format"]["schema"] == CHOICE


def test_an_explicit_json_schema_that_is_refused_names_response_format() -> None:
    with fake_openai(Endpoint(refuse_json_schema=True)) as server:
        model = chat_model(server, response_format="json_schema")
        with pytest.raises(LLMUnavailableError, match="refusing 'response_format'") as info:
            model.complete(HI, schema=CHOICE, max_tokens=8)
    assert len(server.requests) == 1 and "TIERFLOW_LLM_RESPONSE_FORMAT=llamacpp" in info.value.hint


# Native tool calls ----------------------------------------------------------------------------
def test_a_native_tool_call_is_parsed() -> None:
    with fake_openai(Endpoint(tool_call=("get_weather", '{"city": "Paris"}'))) as server:
        model = chat_model(server)
        assert model.native_tools is None  # not tried yet
        result = model.call_tool(HI, [WEATHER, CLOCK], max_tokens=30)
    assert (result.name, result.arguments, result.problem) == ("get_weather", {"city": "Paris"}, None)
    assert result.native and model.native_tools is True and result.finish_reason == "tool_calls"
    assert result.text == '{"city": "Paris"}' and result.messages == HI
    assert result.prompt_tokens == 21 and result.completion_tokens == 7 and result.latency_ms > 0
    (request,) = server.requests
    assert request["tool_choice"] == "auto" and "response_format" not in request
    assert [tool["function"]["name"] for tool in request["tools"]] == ["get_weather", "get_time"]
    assert request["tools"][0] == {"type": "function", "function": WEATHER}


def test_a_reply_without_a_tool_call_is_no_call() -> None:
    with fake_openai(Endpoint(reply="I cannot look that up.")) as server:
        model = chat_model(server)
        chosen = model.call_tool(HI, [WEATHER], max_tokens=30)
        required = model.call_tool(HI, [WEATHER], max_tokens=30, tool_choice="required")
    assert chosen.name is None and chosen.arguments == {} and chosen.problem is None
    assert chosen.text == "I cannot look that up." and chosen.native
    assert required.name is None and required.problem is not None and "required" in required.problem
    assert sent(server, "tool_choice") == ["auto", "required"]


@pytest.mark.parametrize(
    ("call", "problem"),
    [(("get_weather", "{not json"), "not JSON"), (("delete_all", "{}"), "not one of the tools")],
)
def test_an_unusable_call_is_the_models_mistake_not_a_failure(call: tuple[str, str], problem: str) -> None:
    with fake_openai(Endpoint(tool_call=call)) as server:
        result = chat_model(server).call_tool(HI, [WEATHER], max_tokens=30)
    assert result.name is None and result.problem is not None and problem in result.problem


@pytest.mark.parametrize("server_kind", list(TOOLS_REFUSED))
def test_refused_tools_fall_back_to_a_json_reply_and_it_is_remembered(
    server_kind: Literal["ollama", "vllm"],
) -> None:
    reply = '{"tool": "get_weather", "arguments": {"city": "Paris"}}'
    with fake_openai(Endpoint(refuse_tools=server_kind, reply=reply)) as server:
        model = chat_model(server)
        result = model.call_tool(HI, [WEATHER, CLOCK], max_tokens=30)
        assert (result.name, result.arguments, result.native) == ("get_weather", {"city": "Paris"}, False)
        assert model.native_tools is False and len(server.requests) == 2
        model.call_tool(HI, [WEATHER], max_tokens=30, tool_choice="required")
    first, fallback, later = server.requests
    assert "tools" in first and "tools" not in fallback and "tools" not in later
    schema = fallback["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["tool"]["enum"] == ["get_weather", "get_time", "none"]
    assert later["response_format"]["json_schema"]["schema"]["properties"]["tool"]["enum"] == ["get_weather"]
    assert fallback["messages"][0]["role"] == "system" and "get_time" in fallback["messages"][0]["content"]
    assert result.messages == fallback["messages"]  # the trace shows what was really sent


def test_a_json_reply_of_none_is_no_call() -> None:
    with fake_openai(Endpoint(reply='{"tool": "none", "arguments": {}}')) as server:
        result = chat_model(server, native_tools="off").call_tool(HI, [WEATHER], max_tokens=30)
    assert result.name is None and result.problem is None and not result.native


def test_native_tools_off_never_sends_tools_and_leaves_the_callers_messages_alone() -> None:
    messages: list[Message] = [{"role": "system", "content": "You are terse."}, *HI]
    reply = '{"tool": "get_weather", "arguments": {"city": "Paris"}}'
    with fake_openai(Endpoint(reply=reply)) as server:
        model = chat_model(server, native_tools="off")
        assert model.native_tools is False
        result = model.call_tool(messages, [WEATHER], max_tokens=30)
    (request,) = server.requests
    assert "tools" not in request and result.name == "get_weather"
    system = request["messages"][0]["content"]
    assert system.startswith("You are terse.\n\n") and "get_weather" in system
    assert messages[0]["content"] == "You are terse." and len(request["messages"]) == 2


def test_native_tools_on_refused_is_an_error_that_names_tools() -> None:
    with fake_openai(Endpoint(refuse_tools="vllm")) as server:
        model = chat_model(server, native_tools="on")
        with pytest.raises(LLMUnavailableError, match="refusing 'tools'") as info:
            model.call_tool(HI, [WEATHER], max_tokens=30)
    assert len(server.requests) == 1 and "TIERFLOW_LLM_NATIVE_TOOLS" in info.value.hint
    assert "RESPONSE_FORMAT" not in info.value.hint


def test_a_tool_spec_without_a_name_is_a_programming_error() -> None:
    with fake_openai() as server, pytest.raises(ValueError, match="needs a name"):
        chat_model(server).call_tool(HI, [{"description": "nameless"}], max_tokens=30)
    assert server.requests == []


# Settings: the OpenAI SDK's variables and the provider shorthand ------------------------------
def test_openai_variables_are_the_fallbacks(monkeypatch: pytest.MonkeyPatch) -> None:
    key = "sk-from-openai-env-0123456789"
    with fake_openai() as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", key)
        monkeypatch.setenv("TIERFLOW_LLM_MODEL", "served-model")
        settings = load_settings()
        build_llm(settings).complete(HI, max_tokens=8)
    assert server.headers[0]["authorization"] == f"Bearer {key}"
    shown = settings.masked()
    assert shown["llm_base_url"] == server.base_url and shown["llm_api_key"] == "**** (set)"
    assert key not in str(shown) and key in settings.secrets()


def test_tierflow_variables_win_over_openai_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    with fake_openai() as ours, fake_openai() as theirs:
        monkeypatch.setenv("OPENAI_BASE_URL", theirs.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-env-key-0123456789")
        monkeypatch.setenv("TIERFLOW_LLM_BASE_URL", ours.base_url)
        monkeypatch.setenv("TIERFLOW_LLM_API_KEY", "tierflow-own-key")
        monkeypatch.setenv("TIERFLOW_LLM_MODEL", "served-model")
        build_llm(load_settings()).complete(HI, max_tokens=8)
    assert theirs.requests == [] and ours.headers[0]["authorization"] == "Bearer tierflow-own-key"


def test_an_openai_key_alone_keeps_the_embedded_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-env-key-0123456789")
    settings = load_settings()
    assert (
        settings.llm_base_url is None and settings.masked()["llm_base_url"] == "(embedded llama.cpp server)"
    )


def test_an_openai_base_url_without_a_model_says_how_to_name_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    with pytest.raises(ConfigError, match="no model is named") as info:
        build_llm(load_settings())
    assert "TIERFLOW_LLM_MODEL" in info.value.hint and "TIERFLOW_LLM=openai:gpt-4o-mini" in info.value.hint


def test_an_error_quoting_the_key_is_scrubbed(monkeypatch: pytest.MonkeyPatch) -> None:
    key = "fallback-key-from-openai-env-42"
    fail = (400, {"error": {"message": f"bad request from {key}", "param": None}})
    with fake_openai(Endpoint(fail=fail)) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", key)
        monkeypatch.setenv("TIERFLOW_LLM_MODEL", "served-model")
        with pytest.raises(LLMUnavailableError) as info:
            build_llm(load_settings()).complete(HI, max_tokens=8)
    assert key not in str(info.value)


@pytest.mark.parametrize(
    ("shorthand", "base_url", "model", "response_format"),
    [
        ("openai:gpt-4o-mini", "https://api.openai.com/v1", "gpt-4o-mini", "json_schema"),
        (
            "vllm:Qwen/Qwen2.5-7B-Instruct",
            "http://127.0.0.1:8000/v1",
            "Qwen/Qwen2.5-7B-Instruct",
            "json_schema",
        ),
        ("ollama:llama3.2:3b", "http://127.0.0.1:11434/v1", "llama3.2:3b", "json_schema"),
        ("llamacpp:qwen2.5-7b", "http://127.0.0.1:8080/v1", "qwen2.5-7b", "llamacpp"),
    ],
)
def test_the_provider_shorthand(
    monkeypatch: pytest.MonkeyPatch, shorthand: str, base_url: str, model: str, response_format: str
) -> None:
    monkeypatch.setenv("TIERFLOW_LLM", shorthand)
    settings = load_settings()
    assert (settings.llm_base_url, settings.llm_model) == (base_url, model)
    assert settings.llm_response_format == response_format


def test_explicit_fields_win_over_the_shorthand(monkeypatch: pytest.MonkeyPatch) -> None:
    with fake_openai() as server:
        monkeypatch.setenv("TIERFLOW_LLM", "ollama:llama3.2")
        monkeypatch.setenv("TIERFLOW_LLM_BASE_URL", server.base_url)
        monkeypatch.setenv("TIERFLOW_LLM_RESPONSE_FORMAT", "llamacpp")
        build_llm(load_settings()).complete(HI, schema=CHOICE, max_tokens=8)
    (request,) = server.requests
    assert request["model"] == "llama3.2" and request["response_format"]["type"] == "json_object"


def test_openai_base_url_moves_openai_but_not_another_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "https://gateway.example/v1")
    monkeypatch.setenv("TIERFLOW_LLM", "openai:gpt-4o-mini")
    assert load_settings().llm_base_url == "https://gateway.example/v1"
    monkeypatch.setenv("TIERFLOW_LLM", "ollama:llama3.2")
    assert load_settings().llm_base_url == "http://127.0.0.1:11434/v1"


@pytest.mark.parametrize(
    ("shorthand", "says"),
    [
        ("azure:gpt-4o", "unknown LLM provider 'azure'"),
        ("gpt-4o-mini", "is not provider:model"),
        ("ollama:", "is not provider:model"),
    ],
)
def test_a_bad_shorthand_is_a_clear_config_error(
    monkeypatch: pytest.MonkeyPatch, shorthand: str, says: str
) -> None:
    monkeypatch.setenv("TIERFLOW_LLM", shorthand)
    with pytest.raises(ConfigError, match=says) as info:
        load_settings()
    assert "openai, vllm, ollama, llamacpp" in info.value.hint


def test_openai_without_a_key_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIERFLOW_LLM", "openai:gpt-4o-mini")
    with pytest.raises(ConfigError, match="no API key") as info:
        build_llm(load_settings())
    assert "OPENAI_API_KEY" in info.value.hint


def test_capability_settings_reach_the_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    reply = '{"tool": "get_weather", "arguments": {"city": "Paris"}}'
    with fake_openai(Endpoint(reply=reply)) as server:
        monkeypatch.setenv("TIERFLOW_LLM_BASE_URL", server.base_url)
        monkeypatch.setenv("TIERFLOW_LLM_MODEL", "served-model")
        monkeypatch.setenv("TIERFLOW_LLM_TOKEN_PARAMETER", "max_completion_tokens")
        monkeypatch.setenv("TIERFLOW_LLM_TEMPERATURE", "default")
        monkeypatch.setenv("TIERFLOW_LLM_NATIVE_TOOLS", "off")
        model = build_llm(load_settings())
        assert isinstance(model, OpenAIChatModel) and model.native_tools is False
        assert model.call_tool(HI, [WEATHER], max_tokens=30).name == "get_weather"
    (request,) = server.requests
    assert request["max_completion_tokens"] == 30 and "max_tokens" not in request
    assert "temperature" not in request and "tools" not in request


@pytest.mark.parametrize("native", [True, False])
def test_the_task_graph_writes_a_tool_call_natively_on_an_endpoint_that_takes_tools(
    store: Any, tmp_path: Any, native: bool
) -> None:
    from tierflow.agents.scripted import ScriptedModel
    from tierflow.agents.tiers import Tiers
    from tierflow.graphs.runner import TaskRunner
    from tierflow.settings import TierPolicy
    from tierflow.tools import default_registry

    from tests.scripted import ANSWER, PLAN, SELECT, model_calls, tool_calls

    slm = ScriptedModel(
        tier="slm",
        by_node={
            PLAN: ['{"steps": ["add 2 and 3"], "answer": ""}'],
            SELECT: ['{"tool": "calculator"}'],
            ANSWER: ["5"],
        },
    )
    arguments = '{"expression": "2 + 3"}'
    # native: the endpoint calls the tool; else it answers in text, and is asked again for JSON
    endpoint = Endpoint(tool_call=("calculator", arguments)) if native else Endpoint(reply=arguments)
    with fake_openai(endpoint) as server:
        runner = TaskRunner(
            Tiers(slm, chat_model(server)),
            default_registry(tmp_path),
            store,
            policy=TierPolicy(default="slm", nodes={"extract_args": "llm"}),
        )
        result = runner.run("What is 2 + 3?")
    assert result.status == "succeeded", result.error
    request, *again = server.requests  # the arguments, as a native tool call
    assert request["tool_choice"] == "required" and "response_format" not in request
    assert [tool["function"]["name"] for tool in request["tools"]] == ["calculator"]
    if not native:  # no call came back: the same question, as a JSON reply to the tool's schema
        (retry,) = again
        assert "tools" not in retry and retry["response_format"]["type"] == "json_schema"
    trace = store.get_run(result.run_id)
    (call,) = [c for c in model_calls(trace) if c.tier == "llm"]
    assert call.node == "extract_args" and call.finish_reason == ("tool_calls" if native else "stop")
    assert call.parsed == {"expression": "2 + 3"}
    assert call.prompt_tokens == 21 * len(server.requests)  # both requests are counted
    assert [(t.tool, t.result) for t in tool_calls(trace)] == [("calculator", "5")]


def test_a_llamacpp_server_gets_json_replies_rather_than_tool_calls() -> None:
    with fake_openai(Endpoint()) as server:
        assert chat_model(server, response_format="llamacpp").native_tools is False
        assert chat_model(server, response_format="llamacpp", native_tools="on").native_tools is True


def test_summarize_on_the_llm_needs_no_slm_file(tmp_path: Path) -> None:
    """--policy llm downloads nothing: the chunks are sized for the LLM, never the SLM."""
    import subprocess
    import sys

    folder = tmp_path / "reports"
    folder.mkdir()
    for name in ("a.txt", "b.txt"):
        (folder / name).write_text("Sales rose 5 percent in May, mostly in the north region.\n")
    reply = "Sales rose 5 percent in May."
    with fake_openai(Endpoint(reply=reply)) as server:
        env = {
            **os.environ,
            "TIERFLOW_DATA_DIR": str(tmp_path / "data"),
            "TIERFLOW_MODELS_DIR": str(tmp_path / "no-models"),
            "TIERFLOW_AUTO_PULL": "false",
            "TIERFLOW_LLM_BASE_URL": server.base_url,
            "TIERFLOW_LLM_MODEL": "served-model",
        }
        done = subprocess.run(
            [sys.executable, "-m", "tierflow", "summarize", str(folder), "--policy", "llm", "--json"],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
            check=False,
        )
    assert done.returncode == 0, done.stderr[-800:]
    report = json.loads(done.stdout)
    assert [d["status"] for d in report["documents"]] == ["succeeded", "succeeded"]
    assert not (tmp_path / "no-models").exists() or not any((tmp_path / "no-models").rglob("*.gguf"))
