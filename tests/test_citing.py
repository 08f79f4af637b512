"""Cited answers from the document memory, on a real chromadb store with the offline MiniLM
embeddings and scripted tiers (the orchestration is under test: which tier answers, when
the SLM escalates and why, what each tier is shown, what the trace keeps). The scripted
models answer by reading the numbered sources of the prompt they are sent, so a test
never depends on the retrieval order."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from tierflow import run_graph
from tierflow.agents.protocol import Message
from tierflow.agents.scripted import ScriptedModel
from tierflow.agents.tiers import Tiers
from tierflow.graphs.citing import NOT_FOUND, build_qa_graph, search_memory_tool
from tierflow.graphs.examples import support_faq
from tierflow.memory.documents import DocumentMemory
from tierflow.memory.traces import TraceStore
from tierflow.settings import TierPolicy

from tests.scripted import ANSWER, EXTRACT, PLAN, SELECT, model_calls, scripted_runner, tool_calls

DOCS = support_faq.SAMPLE_DOCS
VAULT = "The door code of the Leipzig office vault is 4417; only the night guard knows it."


@pytest.fixture
def memory(help_centre: DocumentMemory) -> DocumentMemory:
    return help_centre


def add_vault(memory: DocumentMemory, folder: Path, *, alone: bool = False) -> None:
    """A secret in a local-only collection (``alone``: the only document in the memory)."""
    if alone:
        memory.forget_all()
    private = folder / "vault.md"
    private.write_text(VAULT, encoding="utf-8")
    memory.add(private, collection="private", local_only=True)


def sources_of(messages: Sequence[Message]) -> dict[int, str]:
    """The numbered sources of a cited-answer prompt: {1: text, ...}."""
    user = messages[-1]["content"]
    parts = re.split(r"^\[(\d+)\] .*$", user, flags=re.MULTILINE)
    return {int(number): text for number, text in zip(parts[1::2], parts[2::2], strict=True)}


def citing(phrase: str, answer: str) -> Callable[[Sequence[Message]], str]:
    """A reply that cites the source holding ``phrase`` (or says not found without one)."""

    def reply(messages: Sequence[Message]) -> str:
        numbers = [n for n, text in sources_of(messages).items() if phrase in text]
        if not numbers:
            return json.dumps({"found": False, "sources": [], "answer": ""})
        return json.dumps({"found": True, "sources": numbers[:1], "answer": answer})

    return reply


def citing_first(answer: str) -> str:
    return json.dumps({"found": True, "sources": [1], "answer": answer})


NOT_FOUND_REPLY = json.dumps({"found": False, "sources": [], "answer": ""})


def shown_chunk(text: str) -> Any:
    """A chunk as a cited answer is shown it (the checks read its text)."""
    return {"text": text, "similarity": 0.5}


def ask(
    memory: DocumentMemory,
    store: TraceStore,
    question: str,
    slm: list[Any],
    llm: list[Any] = (),
    **options: Any,
) -> tuple[Any, ScriptedModel, ScriptedModel]:
    small = ScriptedModel(tier="slm", name="tiny", by_node={"answer": list(slm)})
    large = ScriptedModel(tier="llm", name="big", by_node={"answer": list(llm)})
    result = run_graph(
        build_qa_graph(memory), {"question": question}, tiers=Tiers(small, large), store=store, **options
    )
    assert result.ok, result.error
    return result, small, large


def sent(model: ScriptedModel) -> str:
    return "\n".join(m["content"] for call in model.calls for m in call["messages"])


def test_a_grounded_slm_answer_stays_local_and_names_its_source(
    memory: DocumentMemory, store: TraceStore
) -> None:
    result, _small, large = ask(
        memory,
        store,
        "Can I get my money back after buying Plus?",
        [
            citing(
                "14 days",
                "Yes: a new Plus subscription is refunded in full within 14 days of the first payment.",
            )
        ],
    )
    answer = result.state["answer"]
    assert "14 days" in answer and "Sources: billing.md, part" in answer
    (cited,) = result.state["citations"]
    assert Path(cited["source"]).name == "billing.md" and "14 days" in cited["text"]
    assert not large.calls
    trace = store.get_run(result.run_id)
    retrieve, answer_step = trace.steps
    assert retrieve.evidence is not None and answer_step.evidence is not None
    retrieved = [e["id"] for e in retrieve.evidence["retrieved"]]
    assert cited["id"] in retrieved and answer_step.evidence["cited"] == [cited["id"]]
    assert answer_step.evidence["shown"] == {"slm": retrieved} and answer_step.evidence["tier"] == "slm"


def test_the_slm_can_be_shown_only_the_best_chunks(memory: DocumentMemory, store: TraceStore) -> None:
    small = ScriptedModel(
        tier="slm",
        name="tiny",
        by_node={
            "answer": [citing("14 days", "Yes: a new Plus subscription is refunded in full within 14 days")]
        },
    )
    large = ScriptedModel(tier="llm", name="big", by_node={"answer": []})
    graph = build_qa_graph(memory, slm_chunks=2)
    result = run_graph(
        graph,
        {"question": "Can I get my money back after buying Plus?"},
        tiers=Tiers(small, large),
        store=store,
    )
    retrieve, answer_step = store.get_run(result.run_id).steps
    assert retrieve.evidence is not None and answer_step.evidence is not None
    retrieved = [e["id"] for e in retrieve.evidence["retrieved"]]
    assert len(retrieved) > 2 and answer_step.evidence["shown"] == {"slm": retrieved[:2]}
    assert "14 days" in result.state["answer"] and not large.calls


def test_an_answer_its_cited_chunk_does_not_hold_escalates_with_the_reason(
    memory: DocumentMemory, store: TraceStore
) -> None:
    result, _small, large = ask(
        memory,
        store,
        "How long do I have to ask for a refund?",
        [citing("14 days", "You have 30 days to ask for a refund.")],  # 30: not what the chunk says
        [citing("14 days", "Within 14 days of the first payment.")],
    )
    assert result.state["answer"].startswith("Within 14 days")
    calls = model_calls(store.get_run(result.run_id))
    first, second = (c for c in calls if c.node == "answer")
    assert first.tier == "slm" and first.escalated and "ungrounded_numbers" in (first.escalation_reason or "")
    assert second.tier == "llm"
    assert len(large.calls) == 1


def test_a_grounded_answer_from_a_sentence_about_something_else_escalates(
    memory: DocumentMemory, store: TraceStore
) -> None:
    question = "How long does a password reset link stay valid?"
    result, _small, large = ask(
        memory,
        store,
        question,
        [citing("30 days", "30 days")],  # grounded in the chunk, but in the sentence on deleting
        [citing("30 minutes", "For 30 minutes.")],
    )
    assert result.state["answer"].startswith("For 30 minutes")
    first, second = (c for c in model_calls(store.get_run(result.run_id)) if c.node == "answer")
    assert first.escalated and "off_question" in (first.escalation_reason or "") and second.tier == "llm"

    right, _small, large = ask(memory, store, question, [citing("30 minutes", "30 minutes")])
    assert right.state["answer"].startswith("30 minutes") and not large.calls


def test_off_question_looks_at_the_answers_sentence_and_its_neighbours() -> None:
    from tierflow.graphs.grounding import CitedReply, off_question_problem

    shown = [
        shown_chunk("Guido began Python over the holidays of 1989. It was first released in 1991."),
        shown_chunk("Python releases come out every 12 months. The schedule was set in 2019."),
        shown_chunk("Python is named after Monty Python."),  # "python", in every chunk, tells nothing
    ]
    question = "In what year did Guido start implementing Python?"
    year = CitedReply(found=True, sources=[2], answer="2019")
    rejected = off_question_problem(year, shown, question)
    assert rejected is not None and rejected.code == "off_question" and "guido" in rejected.detail
    # the question's words may stand in the sentence before the answer's
    assert off_question_problem(CitedReply(found=True, sources=[1], answer="1991"), shown, question) is None
    assert off_question_problem(CitedReply(found=False, sources=[], answer=""), shown, question) is None


def test_weak_evidence_escalates_and_an_answer_no_chunk_holds_is_withheld(
    memory: DocumentMemory, store: TraceStore
) -> None:
    result, _small, _large = ask(
        memory,
        store,
        "What is the capital of Peru?",
        [citing_first("Peru's capital is Lima.")],
        [citing_first("The capital of Peru is Lima.")],  # true, but from no document
    )
    assert result.state["answer"] == NOT_FOUND and result.state["citations"] == []
    trace = store.get_run(result.run_id)
    first = next(c for c in model_calls(trace) if c.node == "answer")
    assert "weak_evidence" in (first.escalation_reason or "")
    evidence = trace.steps[-1].evidence or {}
    assert "ungrounded" in evidence["withheld"] and evidence["tier"] == "llm"


def test_not_found_over_weak_evidence_stays_on_the_slm(memory: DocumentMemory, store: TraceStore) -> None:
    result, _small, large = ask(memory, store, "Who won the 1998 football world cup?", [NOT_FOUND_REPLY])
    assert result.state["answer"] == NOT_FOUND and not large.calls


def test_not_found_over_relevant_evidence_escalates(memory: DocumentMemory, store: TraceStore) -> None:
    result, _small, _large = ask(
        memory,
        store,
        "How many requests per minute does the API allow?",
        [NOT_FOUND_REPLY],
        [citing("120 requests", "The API allows 120 requests per minute per token.")],
    )
    assert "120 requests per minute" in result.state["answer"]
    first = next(c for c in model_calls(store.get_run(result.run_id)) if c.node == "answer")
    assert "not_found_relevant" in (first.escalation_reason or "")


def test_a_wrong_neighbour_citation_is_corrected_to_the_chunk_holding_the_answer(
    memory: DocumentMemory, store: TraceStore
) -> None:
    def cite_a_neighbour(messages: Sequence[Message]) -> str:
        sources = sources_of(messages)
        holding = next(n for n, text in sources.items() if "120 requests" in text)
        other = next(n for n in sources if n != holding)
        return json.dumps({"found": True, "sources": [other], "answer": "120 requests per minute per token."})

    result, _small, _large = ask(
        memory, store, "What is the API's rate limit?", [cite_a_neighbour], [cite_a_neighbour]
    )
    (cited,) = result.state["citations"]
    assert "120 requests" in cited["text"]
    evidence = store.get_run(result.run_id).steps[-1].evidence or {}
    assert evidence["citations_repaired"] and evidence["cited"] == [cited["id"]]


def test_local_only_chunks_never_reach_the_llm(
    memory: DocumentMemory, store: TraceStore, tmp_path: Path
) -> None:
    add_vault(memory, tmp_path)
    result, small, large = ask(
        memory,
        store,
        "What is the door code of the office vault?",
        [citing_first("The code is 9999.")],  # ungrounded: escalates
        [NOT_FOUND_REPLY],
    )
    assert "4417" in sent(small) and large.calls
    assert "4417" not in sent(large)  # the LLM saw the shareable chunks only
    evidence = store.get_run(result.run_id).steps[-1].evidence or {}
    private_ids = {e["id"] for e in result.state["evidence"] if e["local_only"]}
    assert private_ids and not private_ids & set(evidence["shown"]["llm"])


def test_with_only_local_only_evidence_the_escalation_is_refused(
    memory: DocumentMemory, store: TraceStore, tmp_path: Path
) -> None:
    add_vault(memory, tmp_path, alone=True)
    result, _small, large = ask(
        memory, store, "What is the vault's door code?", [citing_first("It is 9999.")]
    )
    assert not large.calls and result.state["answer"] == NOT_FOUND  # ungrounded, and no LLM may check it
    first = next(c for c in model_calls(store.get_run(result.run_id)) if c.node == "answer")
    assert first.escalation_refused == "local_only"


def test_the_support_faq_bot_hands_off_what_its_documents_do_not_answer(
    memory: DocumentMemory, store: TraceStore
) -> None:
    graph = support_faq.build_graph(memory)
    tiers = Tiers(
        ScriptedModel(
            tier="slm", by_node={"answer": [citing("30 minutes", "The link is valid for 30 minutes.")]}
        ),
        ScriptedModel(tier="llm", by_node={"answer": [NOT_FOUND_REPLY]}),
    )
    answered = run_graph(
        graph, {"question": "How long is the password reset link valid?"}, tiers=tiers, store=store
    )
    assert answered.ok and not answered.state["handoff"] and "30 minutes" in answered.state["answer"]
    ingest = store.get_run(answered.run_id).steps[0]
    assert ingest.node == "ingest" and ingest.summary == "5 added"

    tiers = Tiers(
        ScriptedModel(tier="slm", by_node={"answer": [NOT_FOUND_REPLY]}),
        ScriptedModel(tier="llm", by_node={"answer": [NOT_FOUND_REPLY]}),
    )
    handed = run_graph(graph, {"question": "Do you sell gift cards?"}, tiers=tiers, store=store)
    assert handed.ok and handed.state["handoff"] and handed.state["answer"] == support_faq.HANDOFF
    assert store.get_run(handed.run_id).steps[0].summary == "5 unchanged"  # nothing read again


# The task graph's search_memory tool ----------------------------------------------------------
def task_runner(store: TraceStore, tmp_path: Path, memory: DocumentMemory, **scripts: Any) -> Any:
    runner, small, large = scripted_runner(store, tmp_path, **scripts)
    runner.tools.register(search_memory_tool(memory))
    return runner, small, large


def cite_in_text(phrase: str, text: str) -> Callable[[Sequence[Message]], str]:
    """An answer naming, in brackets, the source of the passage that holds ``phrase``."""

    def reply(messages: Sequence[Message]) -> str:
        passages = messages[-1]["content"].split('{"source": "')[1:]
        source = next(p.split('"')[0] for p in passages if phrase in p)
        return f"{text} [{source}]"

    return reply


def test_the_task_graph_searches_the_memory_and_its_answer_cites(
    memory: DocumentMemory, store: TraceStore, tmp_path: Path
) -> None:
    runner, _small, _large = task_runner(
        store,
        tmp_path,
        memory,
        slm={
            SELECT: ['{"tool": "search_memory"}'],
            EXTRACT: ['{"query": "refund period"}'],
            ANSWER: [cite_in_text("14 days", "Refunds are possible within 14 days.")],
        },
        llm={PLAN: ['{"steps": ["Look up the refund period in my documents"], "answer": ""}']},
    )
    result = runner.run("How long can I ask for a refund, according to my documents?")
    trace = store.get_run(result.run_id)
    assert [t.tool for t in tool_calls(trace)] == ["search_memory"]
    answer_step = trace.steps[-1]
    assert answer_step.evidence is not None
    assert answer_step.evidence["cited"] and answer_step.evidence["cited"][0].startswith("billing.md, part")
    assert len(answer_step.evidence["retrieved"]) == 4
    assert not any(step.node == "summarize" for step in trace.steps)  # passages are kept whole


def test_a_plan_for_a_question_about_my_documents_searches_them_first(
    memory: DocumentMemory, store: TraceStore, tmp_path: Path
) -> None:
    """The planner reached for the file tools; the plan searches the documents first."""
    runner, _small, _large = task_runner(
        store,
        tmp_path,
        memory,
        slm={
            SELECT: ['{"tool": "search_memory"}', '{"tool": "word_count"}'],
            EXTRACT: ['{"query": "refund period"}', '{"text": "refund"}'],
            ANSWER: [cite_in_text("14 days", "Refunds are possible within 14 days.")],
        },
        llm={PLAN: ['{"steps": ["Count the words of the refund policy with word_count"], "answer": ""}']},
    )
    result = runner.run("According to my documents, how long can I ask for a refund?")
    trace = store.get_run(result.run_id)
    plan_step = next(step for step in trace.steps if step.node == "plan")
    assert "searches them first" in (plan_step.summary or "")
    assert [t.tool for t in tool_calls(trace)][0] == "search_memory"
    assert result.status == "succeeded" and "14 days" in (result.answer or "")


@pytest.mark.parametrize(
    ("task", "about"),
    [
        ("According to my documents, which technique saves memory?", True),
        ("What do my notes say about the launch date?", True),
        ("Search our knowledge base for the refund period", True),
        ("How many words are in notes.txt?", False),
        ("Convert 5 liters to US gallons", False),
        ("What documents does a passport application need?", False),
    ],
)
def test_which_tasks_ask_about_the_users_documents(task: str, about: bool) -> None:
    from tierflow.graphs.grounding import asks_about_documents

    assert asks_about_documents(task) is about


def test_a_local_only_passage_keeps_the_rest_of_the_task_run_on_the_slm(
    memory: DocumentMemory, store: TraceStore, tmp_path: Path
) -> None:
    add_vault(memory, tmp_path, alone=True)
    runner, small, large = task_runner(
        store,
        tmp_path,
        memory,
        slm={ANSWER: ["The code is 4417 [vault.md, part 1]."]},
        llm={
            PLAN: ['{"steps": ["Find the vault door code in my documents"], "answer": ""}'],
            SELECT: ['{"tool": "search_memory"}'],
            EXTRACT: ['{"query": "vault door code"}'],
        },
        policy=TierPolicy(default="llm"),  # every step on the LLM, were it not for the passage
    )
    result = runner.run("What is the vault's door code?")
    assert "4417" in (result.answer or "") and "4417" in sent(small) and "4417" not in sent(large)
    answer_call = next(c for c in model_calls(store.get_run(result.run_id)) if c.node == ANSWER)
    assert answer_call.tier == "slm" and answer_call.escalation_refused == "local_only"


def copy_scorer(node: str = "answer") -> Any:
    """A text scorer for which an answer that copies its source is likely wrong."""
    from tierflow.agents.calibration import StepScorer
    from tierflow.agents.judging import FEATURES, Logistic, ThresholdPoint

    names = FEATURES["text"]
    copy = names.index("copied_share")
    model = Logistic(
        names,
        (0.0,) * len(names),
        (1.0,) * len(names),
        tuple(8.0 if i == copy else 0.0 for i in range(len(names))),
        -4.0,
    )
    points = (ThresholdPoint(0.01, 0.5, 0.8, 0.0, 0.0, 0.0),)
    return StepScorer("text", model, points, {"slm": "tiny", "llm": "big", "node": node})


def test_a_cited_answer_is_judged_by_its_nodes_scorer_and_shadowed_only_when_shareable(
    memory: DocumentMemory, store: TraceStore, tmp_path: Path
) -> None:
    from tierflow.agents.calibration import StepScorers

    scorers = StepScorers({"answer": copy_scorer()})
    copied = "a new Plus subscription is refunded in full within 14 days of the first payment"
    result, _small, large = ask(
        memory,
        store,
        "Can I get my money back after buying Plus?",
        [citing("14 days", copied)],  # grounded, but a copy of its chunk: the scorer doubts it
        [citing("14 days", "Yes, within 14 days.")],
        context={"scorers": scorers},
    )
    first, second = (c for c in model_calls(store.get_run(result.run_id)) if c.node == "answer")
    assert first.step_kind == "text" and first.features and first.features["copied_share"] > 0.5
    assert first.escalated and (first.escalation_reason or "").startswith("escalation_score")
    assert first.p_wrong is not None and first.p_wrong > 0.5 and second.tier == "llm"
    assert result.state["answer"].startswith("Yes, within 14 days") and len(large.calls) == 1

    def shadowed(question: str, slm: Any, llm: Any) -> tuple[Any, ScriptedModel, ScriptedModel]:
        small = ScriptedModel(tier="slm", name="tiny", by_node={"answer": [slm]})
        large = ScriptedModel(
            tier="llm", name="big", by_node={"answer:shadow": [llm], "answer:judge": [{"verdict": "same"}]}
        )
        result = run_graph(
            build_qa_graph(memory),
            {"question": question},
            tiers=Tiers(small, large),
            store=store,
            context={"shadow_rate": 1.0},
        )
        assert result.ok, result.error
        return result, small, large

    reply = citing("14 days", "Yes, within 14 days.")
    kept, _, large = shadowed("Can I get my money back after buying Plus?", reply, reply)
    nodes = [c.node for c in model_calls(store.get_run(kept.run_id))]
    assert nodes[-3:] == ["answer", "answer:shadow", "answer:judge"]
    (label,) = store.labels(graph=None)
    assert label.node == "answer" and label.slm_right and label.source == "shadow"
    add_vault(memory, tmp_path)
    private, small, large = shadowed(
        "What is the door code of the office vault?", citing("4417", "The code is 4417."), reply
    )
    assert "4417" in sent(small) and not large.calls  # a local-only chunk was shown: no shadow
    assert private.state["answer"].startswith("The code is 4417")


def test_calibrating_the_answer_step_labels_answers_by_the_keys_a_right_one_holds(
    memory: DocumentMemory, store: TraceStore
) -> None:
    """A gold answer given as a list of keys labels the SLM's cited answer right when its
    text holds one (case and spacing ignored), with no judge asked; the LLM's shadow is
    labelled the same way (the run's own shadow is still judged, as in every shadowed run).
    An answer a check escalated gets no label."""
    from functools import partial

    from tierflow.graphs.calibrating import CalibrationItem, collect_labels

    question = {"question": "Can I get my money back after buying Plus?"}
    items = [
        CalibrationItem("right", question, {"answer": ["within 14  DAYS", "two weeks"]}),
        CalibrationItem("wrong", question, {"answer": ["30 days"]}),
        CalibrationItem("checked", question, {"answer": ["14 days"]}),
    ]
    reply = citing("14 days", "Yes, within 14 days of the first payment.")
    ungrounded = citing("14 days", "Yes, within 45 days.")  # its chunk lacks 45: a check escalates it
    tiered = Tiers(
        ScriptedModel(tier="slm", name="tiny", by_node={"answer": [reply, reply, ungrounded]}),
        ScriptedModel(
            tier="llm",
            name="big",
            by_node={
                "answer": [reply],
                "answer:shadow": [reply, reply],
                "answer:judge": [{"verdict": "same"}] * 2,
            },
        ),
    )
    run = partial(run_graph, tiers=tiered, store=store)
    assert collect_labels(build_qa_graph(memory), "ask", items, run, store, tiered.llm) == 3
    # an answer a check escalated is escalated whatever a scorer says: it gets no label
    gold = {label.detail: label for label in store.labels(graph="ask") if label.source == "gold"}
    assert len(gold) == 2
    assert gold['["within 14  DAYS", "two weeks"]'].slm_right and not gold['["30 days"]'].slm_right
    assert gold['["within 14  DAYS", "two weeks"]'].llm_right and not gold['["30 days"]'].llm_right
    assert len(tiered.llm.calls) == 5  # a shadow and its judge per kept answer, and the escalated one


def test_citations_of_chunks_that_do_not_hold_the_answer_are_dropped(
    memory: DocumentMemory, store: TraceStore
) -> None:
    def cite_everything(messages: Sequence[Message]) -> str:  # as a small model does
        return json.dumps(
            {"found": True, "sources": list(sources_of(messages)), "answer": "120 requests per minute."}
        )

    result, _small, large = ask(memory, store, "What is the API's rate limit?", [cite_everything])
    assert not large.calls  # grounded: it stays on the SLM
    (cited,) = result.state["citations"]
    assert "120 requests" in cited["text"]
    evidence = store.get_run(result.run_id).steps[-1].evidence or {}
    assert evidence["cited"] == [cited["id"]] and len(evidence["citations_pruned"]) >= 1


def test_support_is_a_sentence_holding_the_answers_figure_or_most_of_its_words() -> None:
    from tierflow.graphs.grounding import supports

    chunk = "Billing is monthly. The API allows 120 requests per minute per token. Keys expire."
    assert supports(chunk, "120 a minute")
    assert supports(chunk, "Requests are allowed per token per minute.", "What is the limit?")
    assert not supports(chunk, "Passwords must be rotated every quarter.")
    assert supports(chunk, "Yes.")  # an answer that adds nothing cannot be checked


def test_citations_keep_the_fewest_chunks_whose_sentences_cover_the_answer() -> None:
    from tierflow.graphs.grounding import CitedReply, supported_citations

    shown = [
        shown_chunk("Argparse is the recommended parser. It parses the command line."),
        shown_chunk("Two other modules do the same: getopt, like the C function, and optparse, deprecated."),
        shown_chunk("In 1980 the parser accepted options. Argparse also writes help."),
    ]
    reply = CitedReply(found=True, sources=[1, 2, 3], answer="getopt and optparse")
    assert supported_citations(reply, shown, "Which modules besides argparse parse options?").sources == [2]
    both = CitedReply(found=True, sources=[3, 1, 2], answer="getopt and optparse; argparse writes help")
    assert supported_citations(both, shown, "What parses options?").sources == [3, 2]
    figure = CitedReply(found=True, sources=[1, 3], answer="80%")  # "80" is not stated by "1980"
    assert supported_citations(figure, shown, "What coverage?").sources == [1, 3]  # none holds it: unchanged


def test_a_figure_or_option_counts_only_as_a_whole_token() -> None:
    from tierflow.graphs.grounding import CitedReply, grounding_problem, recited

    shown = [
        shown_chunk("The parser dates from 1980, a percent of it; --verbose prints more."),
        shown_chunk("Coverage is 80 percent."),
    ]
    assert recited(CitedReply(found=True, sources=[1], answer="80 percent"), shown).sources == [2]
    option = CitedReply(found=True, sources=[1], answer="Pass `-v` to print more.")
    rejected = grounding_problem(option, shown, "How do I print more?")
    assert rejected is not None and rejected.code == "ungrounded_code"  # "-v" is not "--verbose"
    stated = CitedReply(found=True, sources=[1], answer="Pass `--verbose` to print more.")
    assert grounding_problem(stated, shown, "How do I print more?") is None


def test_a_sentence_wrapped_across_lines_supports_as_one() -> None:
    from tierflow.graphs.grounding import supports

    chunk = "Two other modules, namely\n   getopt (like the C one) and the\n   deprecated optparse.\n\nNext."
    assert supports(chunk, "getopt and optparse", "Which modules besides argparse?")
    assert not supports("getopt is old.\n\noptparse is deprecated.", "getopt and optparse", "Which modules?")
