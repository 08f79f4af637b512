"""The document memory's evaluation: retrieval and cited answers on real documents.

The fixture is the batch benchmark's corpus (22 real documents in five formats,
``data/batch/``) with 68 questions written for it (``data/memory/questions.json``): 60
answerable, each with a verbatim evidence span and answer keys, and 8 that no document
answers. Every question runs through tierflow's own code: the corpus is added to a fresh
document memory with ``DocumentMemory.add``, and questions go through ``build_qa_graph``
(``retrieve`` then ``cited_answer``) with ``run_graph``, traced to a scratch store.

- **Retrieval**: the chunk holding the evidence (whitespace ignored; a span cut by a chunk
  boundary counts for both chunks) is looked for in the ranking: hit@1, hit@3 and MRR
  (over the top 10), for the memory's own order and for the SLM's reranking of the top 5.
  The memory's ranking (word matches next to similarity) was chosen on these questions, so
  retrieval is also measured on 45 held-out questions (``data/memory/heldout.json``: 40
  answerable, each on evidence no question above uses, most worded away from their
  document), used only to check it.
- **Answers**, per policy (``slm``, ``tiered``, ``llm``): correct when an answerable
  question's answer contains one of its keys (case and whitespace ignored) and an
  unanswerable one is declined; citation accuracy: of the answers that cite, the share
  whose cited chunks include one holding the evidence; SLM share of model calls, LLM
  tokens and escalations.
"""

from __future__ import annotations

import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from tierflow.evals.batch_corpus import CORPUS_DIR
from tierflow.evals.report import markdown_table
from tierflow.graphs.calibrating import holds_a_key
from tierflow.records import OnProgress, Progress, slm_share
from tierflow.results import fmt

if TYPE_CHECKING:
    from tierflow.app import App
    from tierflow.graphs.citing import Rerank
    from tierflow.graphs.grounding import Evidence
    from tierflow.memory.documents import DocumentMemory
    from tierflow.settings import Settings

__all__ = [
    "QUESTIONS",
    "QUESTION_SETS",
    "QuestionSet",
    "Question",
    "calibrate_answers",
    "load_questions",
    "memory_eval",
    "memory_markdown",
]

GraphOf = Callable[["DocumentMemory"], Any]
"""A question graph built on a memory (a design tried against ``build_qa_graph``)."""
QUESTIONS = Path(__file__).resolve().parent / "data" / "memory" / "questions.json"
HELD_OUT = QUESTIONS.with_name("heldout.json")


@dataclass(frozen=True)
class QuestionSet:
    """Questions, the corpus they were written for, and the held-out retrieval questions."""

    name: str
    questions: Path
    corpus: Path
    held_out: Path | None
    results: str
    """The results file's name."""


QUESTION_SETS = {
    "main": QuestionSet("main", QUESTIONS, CORPUS_DIR, HELD_OUT, "memory.json"),
    # for trying changes to cited answers: another corpus (the Python HOWTOs of the summaries
    # evaluation) and other questions, so that nothing is tuned on the main set
    "dev": QuestionSet(
        "dev", QUESTIONS.with_name("dev.json"), QUESTIONS.parent.parent / "documents", None, "memory_dev.json"
    ),
    # the held-out questions answered, not only ranked: run once, at the end of a round of work
    # on cited answers, to check what the main set's figures say on questions nothing was tried on
    "heldout": QuestionSet("heldout", HELD_OUT, CORPUS_DIR, None, "memory_heldout.json"),
    # a user's own questions to calibrate the answer step on (``--calibrate``): the dev set's
    # HOWTOs, other questions than the dev set's, none of the main corpus
    "calibration": QuestionSet(
        "calibration",
        QUESTIONS.with_name("calibration.json"),
        QUESTIONS.parent.parent / "documents",
        None,
        "memory_calibration.json",
    ),
}
ANSWER_GRAPH = "ask"
"""The name ``build_qa_graph`` compiles its graph under, which its calibrated scorers carry."""
POLICIES = ("slm", "tiered", "llm")
RERANKS: tuple[Rerank, ...] = ("off", "auto", "always")
DEPTH = 10
RERANK_LABELS = {
    "off": "memory order (similarity + word matches)",
    "auto": "SLM rerank of the top 5 when the two best are within 0.03",
    "always": "SLM rerank of the top 5",
}


class Question(TypedDict):
    id: str
    file: str | None
    question: str
    evidence: str | None
    answers: list[str]


def load_questions(path: Path = QUESTIONS) -> list[Question]:
    questions: list[Question] = json.loads(path.read_text(encoding="utf-8"))
    return questions


def _flat(text: str) -> str:
    return " ".join(text.split()).lower()


def holds(chunk_text: str, evidence: str) -> bool:
    """Whether a chunk holds the evidence span: all of it, or (a span cut by the chunk
    boundary) its first or its last half, by words."""
    text, words = _flat(chunk_text), _flat(evidence).split()
    half = (len(words) + 1) // 2
    return any(" ".join(part) in text for part in (words, words[:half], words[-half:]))


def _gold(question: Question, evidence: Evidence) -> bool:
    """Whether a retrieved chunk holds the question's evidence."""
    span, file = question["evidence"], question["file"]
    return span is not None and Path(evidence["source"]).name == file and holds(evidence["text"], span)


def correct(question: Question, answer: str, declined: bool) -> bool:
    if not question["answers"]:
        return declined
    return not declined and holds_a_key(answer, question["answers"])


def _rank_metrics(ranks: Sequence[int | None]) -> dict[str, float]:
    count = len(ranks) or 1
    return {
        "hit@1": round(sum(r == 1 for r in ranks) / count, 3),
        "hit@3": round(sum(r is not None and r <= 3 for r in ranks) / count, 3),
        "mrr": round(sum(1 / r for r in ranks if r is not None) / count, 3),
    }


def _ingest(memory: DocumentMemory, corpus: Path) -> dict[str, Any]:
    files = sorted(p for p in corpus.iterdir() if p.suffix != ".json")
    started = time.perf_counter()
    added = [memory.add(path) for path in files]
    failed = {a.source: a.reason for a in added if a.status == "failed"}
    return {
        "documents": len(files),
        "chunks": sum(a.chunks for a in added),
        "failed": failed,
        "seconds": round(time.perf_counter() - started, 1),
    }


def _retrieval(
    app: App, memory: DocumentMemory, questions: list[Question], on_progress: OnProgress, label: str
) -> dict[str, Any]:
    from langgraph.graph import END, START, StateGraph
    from tierflow.graphs.citing import QuestionInput, QuestionState, retrieve
    from tierflow.graphs.context import TierContext

    answerable = [q for q in questions if q["evidence"]]
    results: dict[str, Any] = {}
    for rerank in RERANKS:
        builder = StateGraph(QuestionState, context_schema=TierContext, input_schema=QuestionInput)
        builder.add_node("retrieve", retrieve(memory, query="question", k=DEPTH, rerank=rerank))
        builder.add_edge(START, "retrieve")
        builder.add_edge("retrieve", END)
        graph = builder.compile(name="retrieval")
        ranks: list[int | None] = []
        for number, question in enumerate(answerable, 1):
            state = app.run_graph(graph, {"question": question["question"]}, policy="slm", name="retrieval")
            found = state.state.get("evidence") or []
            rank = next((i for i, e in enumerate(found, 1) if _gold(question, e)), None)
            ranks.append(rank)
            outcome = "found" if rank is not None else "missed"
            on_progress(
                Progress(f"{label}, rerank {rerank}", number, len(answerable), outcome, question["id"])
            )
        results[rerank] = {
            **_rank_metrics(ranks),
            "ranks": dict(zip([q["id"] for q in answerable], ranks, strict=True)),
        }
    return results


def _answers(
    app: App,
    memory: DocumentMemory,
    questions: list[Question],
    policy: str,
    on_progress: OnProgress,
    slm_chunks: int | None = None,
    graph_of: GraphOf | None = None,
) -> dict[str, Any]:
    from tierflow.graphs.citing import NOT_FOUND, build_qa_graph

    graph = graph_of(memory) if graph_of is not None else build_qa_graph(memory, slm_chunks=slm_chunks)
    items: list[dict[str, Any]] = []
    seconds: list[float] = []
    for number, question in enumerate(questions, 1):
        started = time.perf_counter()
        result = app.run_graph(graph, {"question": question["question"]}, policy=policy, name="memory-eval")
        seconds.append(time.perf_counter() - started)
        trace = app.store.get_run(result.run_id)
        answer = str(result.state.get("answer") or "") if result.state else ""
        cited = (result.state or {}).get("citations") or []
        declined = answer.strip() == NOT_FOUND
        calls = [c for step in trace.steps for c in step.model_calls]
        checked = next((s.evidence for s in trace.steps if s.node == "answer" and s.evidence), None) or {}
        items.append(
            {
                "id": question["id"],
                "status": result.status,
                "answer": answer,
                "declined": declined,
                "correct": correct(question, answer, declined),
                "cited": [e["id"] for e in cited],
                "citation_ok": any(_gold(question, e) for e in cited)
                if cited and question["evidence"]
                else None,
                "cited_gold": sum(_gold(question, e) for e in cited),
                "slm_calls": sum(c.tier == "slm" for c in calls),
                "llm_calls": sum(c.tier == "llm" for c in calls),
                "escalated": any(c.escalated for c in calls),
                "llm_tokens": sum(c.prompt_tokens + c.completion_tokens for c in calls if c.tier == "llm"),
                "seconds": round(seconds[-1], 2),
                "check": checked.get("check"),  # why the SLM's reply was escalated
                "withheld": checked.get("withheld"),  # why the final reply was not given
                "raw": calls[-1].raw_output if calls else None,
            }
        )
        outcome = "correct" if items[-1]["correct"] else "wrong"
        on_progress(Progress(f"answers, {policy}", number, len(questions), outcome, question["id"]))
    answerable = [i for i, q in zip(items, questions, strict=True) if q["evidence"]]
    unanswerable = [i for i, q in zip(items, questions, strict=True) if not q["evidence"]]
    citing = [i for i in answerable if i["citation_ok"] is not None]
    slm, llm = sum(i["slm_calls"] for i in items), sum(i["llm_calls"] for i in items)
    return {
        "policy": policy,
        "questions": len(items),
        "failed_runs": sum(i["status"] != "succeeded" for i in items),
        "correct": round(sum(i["correct"] for i in items) / len(items), 3),
        "correct_answerable": round(sum(i["correct"] for i in answerable) / max(1, len(answerable)), 3),
        "declined_unanswerable": round(
            sum(i["declined"] for i in unanswerable) / max(1, len(unanswerable)), 3
        ),
        "citation_accuracy": round(sum(i["citation_ok"] for i in citing) / len(citing), 3)
        if citing
        else None,
        "citation_precision": round(
            sum(i["cited_gold"] for i in citing) / sum(len(i["cited"]) for i in citing), 3
        )
        if citing
        else None,
        "answers_citing": len(citing),
        "slm_share": _rounded(slm_share(slm, slm + llm)),
        "kept_local": round(sum(i["llm_calls"] == 0 for i in items) / len(items), 3),
        "escalation_rate": round(sum(i["escalated"] for i in items) / len(items), 3),
        "llm_tokens": sum(i["llm_tokens"] for i in items),
        "seconds_p50": round(statistics.median(seconds), 2),
        "items": items,
    }


def calibrate_answers(
    settings: Settings,
    question_set: QuestionSet,
    work: Path,
    on_progress: OnProgress,
    *,
    max_loss: float | None = None,
    slm_share: float | None = None,
    limit: int | None = None,
) -> dict[str, Any]:
    """Calibrate the answer step as ``tierflow calibrate`` does, on ``question_set`` (its
    corpus in a memory of its own, under ``work``, where a stopped calibration goes on): every
    question answered by the SLM and shadowed by the LLM, an answerable one's answer labelled
    by its answer keys (``--gold answer``), an unanswerable one's by agreement with the LLM;
    then the scorer and threshold fitted for ``max_loss`` (or ``slm_share``). Returns what the
    fit measured and where the scorers are (``scorers``)."""
    from dataclasses import asdict

    from tierflow.agents.calibration import fit_and_save, fitted_share
    from tierflow.app import App
    from tierflow.graphs.calibrating import CalibrationItem, collect_labels
    from tierflow.graphs.citing import build_qa_graph
    from tierflow.memory.documents import DocumentMemory

    questions = load_questions(question_set.questions)[:limit]
    conf = settings.model_copy(update={"data_dir": work})
    with App(conf) as app:
        memory = DocumentMemory.open(None, app.embeddings)
        on_progress(Progress("calibration corpus", note="adding the corpus …"))
        _ingest(memory, question_set.corpus)  # unchanged documents are not added again
        items = [
            CalibrationItem(
                q["id"], {"question": q["question"]}, {"answer": q["answers"]} if q["answers"] else {}
            )
            for q in questions
        ]
        graph = build_qa_graph(memory)
        collect_labels(
            graph, ANSWER_GRAPH, items, app.run_graph, app.store, app.tiers.llm, on_progress=on_progress
        )
        slm, llm = app.tiers.slm.name, app.tiers.llm.name
        labels = app.store.labels(graph=[ANSWER_GRAPH], slm_model=slm, llm_model=llm)
    path, fits = fit_and_save(
        labels,
        conf.scorers_dir(),
        graph=ANSWER_GRAPH,
        slm=slm,
        llm=llm,
        max_loss=max_loss,
        slm_share=slm_share,
    )
    return {
        "set": question_set.name,
        "questions": len(questions),
        "labelled_outputs": len({label.model_call_id for label in labels}),
        "max_loss": max_loss,
        "slm_share": slm_share,
        "estimated_slm_share": round(fitted_share(fits), 3),
        "fits": [asdict(fit) for fit in fits],
        "scorers": str(path),
    }


def memory_eval(
    settings: Settings,
    on_progress: OnProgress,
    *,
    policies: Sequence[str] = POLICIES,
    limit: int | None = None,
    question_set: QuestionSet = QUESTION_SETS["main"],
    retrieval_ranks: bool = True,
    slm_chunks: int | None = None,
    scorers: Path | None = None,
    graph: GraphOf | None = None,
) -> dict[str, Any]:
    """Ingest the set's corpus, measure retrieval (unless ``retrieval_ranks`` is off), then
    answer every question under each policy; ``on_progress`` hears of each question
    retrieved and answered. ``scorers``: the answer step's calibrated scorers
    (``calibrate_answers``), which ``tiered`` then judges the SLM's answers by. ``graph``:
    the question graph to answer with, for a design tried (``build_qa_graph``'s by default)."""
    from tierflow.agents.calibration import scorer_file
    from tierflow.app import App
    from tierflow.memory.documents import DocumentMemory

    questions = load_questions(question_set.questions)[:limit]
    held_out = (
        load_questions(question_set.held_out)[:limit] if question_set.held_out and retrieval_ranks else []
    )
    with tempfile.TemporaryDirectory(prefix="tierflow-memory-eval-") as scratch:
        conf = settings.model_copy(update={"data_dir": Path(scratch)})
        if scorers is not None:
            installed = scorer_file(conf.scorers_dir(), ANSWER_GRAPH)
            installed.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(scorers, installed)
        with App(conf) as app:
            memory = DocumentMemory.open(None, app.embeddings)
            on_progress(Progress("corpus", note="adding the corpus …"))
            ingest = _ingest(memory, question_set.corpus)
            retrieval = (
                _retrieval(app, memory, questions, on_progress, "retrieval") if retrieval_ranks else {}
            )
            retrieval_held_out = (
                _retrieval(app, memory, held_out, on_progress, "held-out retrieval") if held_out else {}
            )
            answers = {
                policy: _answers(app, memory, questions, policy, on_progress, slm_chunks, graph)
                for policy in policies
            }
    return {
        "fixture": {
            "set": question_set.name,
            "questions_file": question_set.questions.name,
            "corpus": question_set.corpus.name,
            "documents": ingest["documents"],
            "chunks": ingest["chunks"],
            "questions": len(questions),
            "answerable": sum(bool(q["evidence"]) for q in questions),
            "held_out_questions": len(held_out),
            "held_out_answerable": sum(bool(q["evidence"]) for q in held_out),
            "ingest_seconds": ingest["seconds"],
            "ingest_failures": ingest["failed"],
        },
        "slm_chunks": slm_chunks,
        "scorers": str(scorers) if scorers is not None else None,
        "retrieval": retrieval,
        "retrieval_held_out": retrieval_held_out,
        "answers": answers,
    }


def memory_tables(data: dict[str, Any]) -> str:
    """The retrieval and answer tables (memory.md and the README)."""
    held_out = data.get("retrieval_held_out", {})
    retrieval = (
        ""
        if not data["retrieval"]
        else markdown_table(
            ["ranking", "hit@1", "hit@3", "MRR", "held-out hit@1", "held-out hit@3", "held-out MRR"],
            [
                [RERANK_LABELS[name], *_metric_cells(r), *_metric_cells(held_out.get(name))]
                for name, r in data["retrieval"].items()
            ],
        )
    )
    answers = markdown_table(
        [
            "policy",
            "correct",
            "answerable correct",
            "unanswerable declined",
            "citation accuracy",
            "citation precision",
            "SLM share",
            "escalated",
            "LLM tokens",
        ],
        [
            [
                a["policy"],
                fmt(a["correct"], "%"),
                fmt(a["correct_answerable"], "%"),
                fmt(a["declined_unanswerable"], "%"),
                fmt(a["citation_accuracy"], "%"),
                fmt(a["citation_precision"], "%"),
                fmt(a["slm_share"], "%"),
                fmt(a["escalation_rate"], "%"),
                f"{a['llm_tokens']:,}",
            ]
            for a in data["answers"].values()
        ],
    )
    return (retrieval + "\n" if retrieval else "") + answers


def _metric_cells(ranks: dict[str, Any] | None) -> list[str]:
    if not ranks:
        return ["–"] * 3
    return [fmt(ranks["hit@1"], "%"), fmt(ranks["hit@3"], "%"), f"{ranks['mrr']:.3f}"]


def _options(data: dict[str, Any]) -> str:
    """The ``--set`` and ``--slm-chunks`` a results file was measured with, as its command gave them."""
    found = data["fixture"].get("set", "main")
    chunks = data.get("slm_chunks")
    return ("" if found == "main" else f" --set {found}") + (f" --slm-chunks {chunks}" if chunks else "")


def memory_markdown(data: dict[str, Any]) -> str:
    fixture = data["fixture"]
    latency = ", ".join(f"{a['policy']} {a['seconds_p50']:.1f} s" for a in data["answers"].values())
    return "\n".join(
        [
            "# Document memory: retrieval and cited answers\n",
            f"{fixture['documents']} real documents ({fixture['chunks']} chunks), {fixture['questions']} "
            f"questions ({fixture['answerable']} answerable). Command: `tierflow eval memory"
            f"{_options(data)}`.\n",
            memory_tables(data),
            (
                "Retrieval: the rank of the chunk holding the evidence. "
                if data.get("retrieval")
                else "Answers only (`--no-retrieval`). "
            )
            + (
                f"Held-out: {fixture['held_out_answerable']} answerable questions, used only to check the "
                "ranking chosen on the questions above (retrieval only). "
                if data.get("retrieval") and fixture.get("held_out_answerable")
                else ""
            )
            + "Correct: an answerable "
            "question's answer contains one of its keys, an unanswerable one is declined. "
            "Citation accuracy: of the answers that cite, the share citing a chunk that holds "
            "the evidence; citation precision: the share of cited chunks that hold it. SLM "
            "share: model calls served by the SLM (an escalated SLM call counts as one); kept "
            "local: questions that never reached the LLM.\n",
            f"Median time per question, models loaded: {latency}.\n",
            *([f"Note: {note}\n"] if (note := data.get("environment", {}).get("note")) else []),
        ]
    )


def _rounded(value: float | None) -> float | None:
    return round(value, 3) if value is not None else None
