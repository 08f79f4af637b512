"""Test doubles for the tiering kit's tests: a recording OpenAI-style client (the real
``OpenAIChatModel`` adapter in front of it), and scripted tiers answering by node name."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from openai.types.chat import ChatCompletion, ChatCompletionMessage
from openai.types.chat.chat_completion import Choice
from openai.types.completion_usage import CompletionUsage
from tierflow.agents.llm import OpenAIChatModel
from tierflow.agents.scripted import Reply, ScriptedModel
from tierflow.agents.tiers import Tiers


class RecordingCompletions:
    def __init__(self, reply: Callable[[dict[str, Any]], str]) -> None:
        self.requests: list[dict[str, Any]] = []
        self._reply = reply

    def create(self, **request: Any) -> ChatCompletion:
        self.requests.append(request)
        message = ChatCompletionMessage(role="assistant", content=self._reply(request))
        return ChatCompletion(
            id="rec",
            object="chat.completion",
            created=0,
            model=request["model"],
            choices=[Choice(index=0, finish_reason="stop", message=message)],
            usage=CompletionUsage(prompt_tokens=40, completion_tokens=10, total_tokens=50),
        )


class RecordingClient:
    """Stands in for ``openai.OpenAI``: keeps every request it is sent."""

    base_url = "http://recording.invalid/v1"

    def __init__(self, reply: Callable[[dict[str, Any]], str]) -> None:
        self.chat = SimpleNamespace(completions=RecordingCompletions(reply))

    @property
    def requests(self) -> list[dict[str, Any]]:
        completions: RecordingCompletions = self.chat.completions
        return completions.requests

    def sent_text(self) -> str:
        return "\n".join(m["content"] for r in self.requests for m in r["messages"])


def recording_llm(reply: Callable[[dict[str, Any]], str]) -> tuple[OpenAIChatModel, RecordingClient]:
    client = RecordingClient(reply)
    return OpenAIChatModel(client, "big", response_format="none"), client  # type: ignore[arg-type]


def scripted_tiers(
    slm: dict[str, list[Reply]] | None = None, llm: dict[str, list[Reply]] | None = None
) -> Tiers:
    return Tiers(
        ScriptedModel(tier="slm", name="tiny", by_node=slm or {}),
        ScriptedModel(tier="llm", name="big", by_node=llm or {}),
    )
