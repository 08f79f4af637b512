"""The MinionS experiment on cited answers (evals/minions.py), with scripted tiers on a real
chromadb store: the SLM names sentences chunk by chunk, the answer is made from those
sentences only, and a question no chunk answers by the SLM's reading escalates as the
answer step's would."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

from tierflow import run_graph
from tierflow.agents.protocol import Message
from tierflow.agents.scripted import ScriptedModel
from tierflow.agents.tiers import Tiers
from tierflow.evals.minions import build_minions_graph, chosen, extract_schema, sentences_of
from tierflow.memory.documents import DocumentMemory
from tierflow.memory.traces import TraceStore

from tests.scripted import model_calls

CHUNK = "The refund window is 14 days.\nIt starts at the\nfirst payment. Plus costs 9 euros a month."


def test_sentences_are_named_by_number_and_at_most_two_are_kept() -> None:
    assert sentences_of(CHUNK) == [
        "The refund window is 14 days.",
        "It starts at the first payment.",
        "Plus costs 9 euros a month.",
    ]
    assert chosen(CHUNK, [3, 1, 2]) == "The refund window is 14 days. Plus costs 9 euros a month."
    assert chosen(CHUNK, [7, 2, 2]) == "It starts at the first payment."
    schema = extract_schema({"text": CHUNK})  # type: ignore[typeddict-item]
    assert schema["properties"]["sentences"]["items"]["enum"] == [1, 2, 3]


def _reader(phrase: str, answer: str, *, finds: bool = True) -> object:
    """The SLM: in an extraction prompt it names the sentence holding ``phrase`` (or none);
    in the answer prompt it answers from the one source it was shown."""

    def reply(messages: Sequence[Message]) -> str:
        user = messages[-1]["content"]
        if "Its sentences are numbered" in messages[0]["content"]:
            numbers = [
                int(n) for n, text in re.findall(r"^\[(\d+)\] (.*)$", user, re.MULTILINE) if phrase in text
            ]
            named = numbers[:1] if finds else []
            return json.dumps({"relevant": bool(named), "sentences": named})
        return json.dumps({"found": True, "sources": [1], "answer": answer})

    return reply


def _ask(
    memory: DocumentMemory, store: TraceStore, slm: object, llm: list[object]
) -> tuple[object, ScriptedModel]:
    small = ScriptedModel(tier="slm", name="tiny", by_node={"answer": [slm] * 5})
    large = ScriptedModel(tier="llm", name="big", by_node={"answer": llm})
    graph = build_minions_graph(memory, writer="question", aggregate="slm")
    result = run_graph(
        graph,
        {"question": "Can I get my money back after buying Plus?"},
        tiers=Tiers(small, large),
        store=store,
    )
    assert result.ok, result.error
    return result, large


def test_the_slm_answers_from_the_sentences_it_named_and_cites_their_whole_chunk(
    help_centre: DocumentMemory, store: TraceStore
) -> None:
    answer = "Yes: a new Plus subscription is refunded in full within 14 days of the first payment."
    result, large = _ask(help_centre, store, _reader("14 days", answer), [])
    state = result.state  # type: ignore[attr-defined]
    assert "14 days" in state["answer"] and not large.calls
    (cited,) = state["citations"]
    assert Path(cited["source"]).name == "billing.md" and "14 days" in cited["text"]
    step = store.get_run(result.run_id).steps[-1]  # type: ignore[attr-defined]
    (extract,) = step.evidence["extracts"].values()
    assert "14 days" in extract and len(extract) < len(cited["text"])  # the sentence, not the chunk


def test_no_sentence_named_over_relevant_chunks_escalates_to_the_llm_on_the_whole_chunks(
    help_centre: DocumentMemory, store: TraceStore
) -> None:
    llm_answer = json.dumps({"found": True, "sources": [1], "answer": "Within 14 days of the first payment."})
    result, large = _ask(help_centre, store, _reader("14 days", "", finds=False), [llm_answer])
    assert len(large.calls) == 1
    shown = large.calls[0]["messages"][-1]["content"]
    assert "14 days" in shown  # the LLM reads the chunks, not the SLM's (empty) extracts
    calls = [c for c in model_calls(store.get_run(result.run_id)) if c.tier == "slm"]  # type: ignore[attr-defined]
    assert "not_found_relevant" in (calls[-1].escalation_reason or "")
