"""The summarization evaluation: real, long public documents summarized by each tier with
tierflow's summarize prompt, scored without reference summaries.

- **Documents**: Python HOWTOs (``tierflow.evals.documents``).
- **Key facts**: extracted once per document by the LLM tier and stored in
  ``facts.json`` with the model that produced them (re-extracted only when a text changes).
- **Scores**: key-fact coverage (share of facts the summary states, judged by the LLM),
  faithfulness (share of the summary's sentences the document supports, judged by the LLM),
  length ratio, and ROUGE-L F1 against the abstract. Judgements are cached by the texts'
  hashes and the judge's model in ``judgements.json``.
"""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from tierflow.agents.escalation import Rejected, parse_json
from tierflow.agents.prompting import render_messages
from tierflow.agents.protocol import ChatModel, Completion, Message, Tier
from tierflow.agents.tiers import Tiers
from tierflow.errors import TierflowError
from tierflow.evals.documents import DOCUMENTS_DIR, Document, digest
from tierflow.evals.report import markdown_table
from tierflow.records import OnProgress, Progress
from tierflow.results import fmt

__all__ = [
    "rouge_l",
    "sentences",
    "evaluate_summaries",
    "summaries_markdown",
    "summaries_results",
]

SUMMARY_TASK = "Summarize this document for a reader who has not seen it."

# Scores -----------------------------------------------------------------------------------
_WORD = re.compile(r"\w+")


def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if x == y else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L F1 over lower-cased word tokens."""
    c, r = _WORD.findall(candidate.lower()), _WORD.findall(reference.lower())
    if not c or not r:
        return 0.0
    lcs = _lcs(c, r)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(c), lcs / len(r)
    return 2 * precision * recall / (precision + recall)


def sentences(text: str) -> list[str]:
    parts = re.split(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])", " ".join(text.split()))
    return [p for p in parts if len(_WORD.findall(p)) >= 3]


VERDICTS_SCHEMA = {
    "type": "object",
    "properties": {"verdicts": {"type": "array", "items": {"type": "boolean"}}},
    "required": ["verdicts"],
}


def _verdicts(model: ChatModel, messages: list[Message], wanted: int) -> list[bool]:
    """The judge's first ``wanted`` verdicts (``False`` for any it did not give). A reply cut
    off at max_tokens (a 1.5B model that goes on writing ``true, true, ...``) still counts
    when it holds ``wanted`` whole verdicts; with fewer it is an error."""
    completion = model.complete(messages, schema=VERDICTS_SCHEMA, max_tokens=128)
    try:
        data = parse_json(completion)
        verdicts = [bool(v) for v in data.get("verdicts", [])] if isinstance(data, dict) else []
    except Rejected as exc:
        body = _list_body(completion.text)
        verdicts = [word == "true" for word in re.findall(r"\b(true|false)\b", body)]
        if not completion.truncated or len(verdicts) < wanted:
            raise TierflowError(f"the judge's reply was not JSON: {exc.reason}") from None
    return (verdicts + [False] * wanted)[:wanted]


FACTS_SCHEMA = {
    "type": "object",
    "properties": {"facts": {"type": "array", "items": {"type": "string"}}},
    "required": ["facts"],
}


def _list_body(text: str) -> str:
    """What a reply cut off inside its list wrote after the list began."""
    return text.split("[", 1)[1] if "[" in text else ""


def _complete_strings(text: str) -> list[str]:
    """The complete JSON strings of a reply cut off inside a list (the last one is dropped)."""
    body = _list_body(text)
    found = []
    for match in re.finditer(r'"((?:[^"\\]|\\.)*)"', body):
        try:
            found.append(json.loads(f'"{match.group(1)}"'))
        except json.JSONDecodeError:
            continue
    return found


def extract_facts(model: ChatModel, document: Document) -> list[str]:
    messages: list[Message] = [
        {
            "role": "system",
            "content": "You list the key facts of a document: the 6 to 8 most important statements a good "
            "summary must contain, each one short, self-contained sentence. Reply with JSON only: "
            '{"facts": ["...", "..."]}',
        },
        {"role": "user", "content": f"Document: {document.title}\n\n{document.text}"},
    ]
    completion = model.complete(messages, schema=FACTS_SCHEMA, max_tokens=1024)
    try:
        data = parse_json(completion)
        listed = data.get("facts", []) if isinstance(data, dict) else []
    except Rejected:
        if not completion.truncated:
            raise TierflowError(f"the LLM's key facts for {document.name} were not JSON") from None
        listed = _complete_strings(completion.text)  # cut off: keep the facts written in full
    facts = [str(f).strip() for f in listed if str(f).strip()]
    if not facts:
        raise TierflowError(f"the LLM listed no key facts for {document.name}")
    return facts[:8]


def judge_coverage(model: ChatModel, facts: Sequence[str], summary: str) -> list[bool]:
    numbered = "\n".join(f"{i}. {fact}" for i, fact in enumerate(facts, start=1))
    messages: list[Message] = [
        {
            "role": "system",
            "content": "You check a summary against a numbered list of facts. For each fact, in order, "
            "answer true if the summary states it or clearly implies it, false otherwise. "
            "Reply with JSON only: "
            '{"verdicts": [true, false, ...]} with exactly one verdict per fact.',
        },
        {"role": "user", "content": f"Facts:\n{numbered}\n\nSummary:\n{summary}"},
    ]
    return _verdicts(model, messages, len(facts))


def judge_faithfulness(model: ChatModel, document: Document, claims: Sequence[str]) -> list[bool]:
    numbered = "\n".join(f"{i}. {claim}" for i, claim in enumerate(claims, start=1))
    messages: list[Message] = [
        {
            "role": "system",
            "content": "You check numbered sentences of a summary against the document. For each sentence, "
            "in order, answer true if the document supports it, false if the document does not say it or "
            'contradicts it. Reply with JSON only: {"verdicts": [true, false, ...]}, one per sentence.',
        },
        {"role": "user", "content": f"Document:\n{document.text}\n\nSentences:\n{numbered}"},
    ]
    return _verdicts(model, messages, len(claims))


# Running ----------------------------------------------------------------------------------
def summarize_document(model: ChatModel, document: Document) -> Completion:
    """One summary through tierflow's summarize prompt (the task graph's summarize node)."""
    messages = render_messages(
        "summarize",
        task=SUMMARY_TASK,
        tool="read_file",
        output=f"{document.title}\n\n{document.text}",
        max_sentences=5,
    )
    return model.complete(messages, max_tokens=320)


@dataclass
class SummaryScore:
    document: str
    tier: str
    model: str
    summary: str
    coverage: float
    faithfulness: float | None
    length_ratio: float
    rouge_l: float | None
    latency_ms: float
    prompt_tokens: int
    completion_tokens: int
    truncated: bool


class _Cache:
    """Judgements kept by key in ``path``, starting from ``seed`` (the shipped ones) while
    ``path`` does not exist yet."""

    def __init__(self, path: Path, seed: Path | None = None) -> None:
        self.path = path
        source = path if path.exists() or seed is None else seed
        try:
            self.data: dict[str, Any] = (
                json.loads(source.read_text(encoding="utf-8")) if source.exists() else {}
            )
        except json.JSONDecodeError:
            self.data = {}

    def get_or(self, key: str, make: Callable[[], Any]) -> Any:
        if key not in self.data:
            self.data[key] = make()
            self.save()
        return self.data[key]

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(self.path.name + ".partial")
        partial.write_text(
            json.dumps(self.data, indent=1, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8"
        )
        partial.replace(self.path)


def _facts_for(
    tiers: Tiers, documents: Sequence[Document], directory: Path, cache: Path
) -> dict[str, list[str]]:
    """Each document's key facts: cached in ``cache`` (starting from those shipped in
    ``directory``), extracted by the LLM for a document that changed."""
    path = cache / "facts.json"
    source = path if path.exists() else directory / "facts.json"
    stored = json.loads(source.read_text(encoding="utf-8")) if source.exists() else {"documents": {}}
    changed = False
    for document in documents:
        entry = stored["documents"].get(document.name)
        if entry is None or entry.get("text_sha256_16") != document.digest:
            stored["documents"][document.name] = {
                "text_sha256_16": document.digest,
                "model": tiers.llm.name,
                "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "facts": extract_facts(tiers.llm, document),
            }
            changed = True
    if changed:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(stored, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return {name: entry["facts"] for name, entry in stored["documents"].items()}


def evaluate_summaries(
    tiers: Tiers,
    documents: Sequence[Document],
    *,
    directory: Path = DOCUMENTS_DIR,
    cache: Path | None = None,
    on_progress: OnProgress | None = None,
) -> list[SummaryScore]:
    """Every document summarized by each tier, scored against cached facts and judgements.
    New ones are cached in ``cache`` (the results dir's ``summaries/``), starting from those
    shipped in ``directory``; nothing is written into ``directory``. ``on_progress`` hears
    of each summary, the tier as the stage, its fact coverage as the detail."""
    cache = cache or directory
    facts = _facts_for(tiers, documents, directory, cache)
    judgements = _Cache(cache / "judgements.json", seed=directory / "judgements.json")
    judge = tiers.llm
    scores = []
    tier: Tier
    for tier in ("slm", "llm"):
        model = tiers.model(tier)
        for done, document in enumerate(documents, start=1):
            completion = summarize_document(model, document)
            summary = completion.text.strip()
            key_facts = facts[document.name]
            covered = judgements.get_or(
                f"coverage/{judge.name}/{digest(*key_facts, summary)}",
                partial(judge_coverage, judge, key_facts, summary),
            )
            claims = sentences(summary)
            supported = (
                judgements.get_or(
                    f"faithfulness/{judge.name}/{digest(document.text, *claims)}",
                    partial(judge_faithfulness, judge, document, claims),
                )
                if claims
                else []
            )
            score = SummaryScore(
                document=document.name,
                tier=tier,
                model=completion.model,
                summary=summary,
                coverage=sum(covered) / len(key_facts),
                faithfulness=sum(supported) / len(claims) if claims else None,
                length_ratio=len(summary) / len(document.text),
                rouge_l=rouge_l(summary, document.abstract) if document.abstract else None,
                latency_ms=completion.latency_ms,
                prompt_tokens=completion.prompt_tokens,
                completion_tokens=completion.completion_tokens,
                truncated=completion.truncated,
            )
            scores.append(score)
            if on_progress is not None:
                detail = f"coverage {score.coverage:.0%}"
                on_progress(Progress(tier, done, len(documents), "summarized", document.name, detail))
    return scores


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None


def aggregate(scores: Sequence[SummaryScore]) -> dict[str, dict[str, Any]]:
    result = {}
    for tier in ("slm", "llm"):
        mine = [s for s in scores if s.tier == tier]
        if mine:
            result[tier] = {
                "documents": len(mine),
                "coverage": _mean([s.coverage for s in mine]),
                "faithfulness": _mean([s.faithfulness for s in mine]),
                "length_ratio": _mean([s.length_ratio for s in mine]),
                "rouge_l": _mean([s.rouge_l for s in mine]),
                "latency_ms_mean": _mean([s.latency_ms for s in mine]),
                "truncated": sum(s.truncated for s in mine),
            }
    return result


def summaries_results(
    scores: Sequence[SummaryScore], documents: Sequence[Document], env: dict[str, Any]
) -> dict[str, Any]:
    return {
        "suite": "summaries",
        "kind": "summaries",
        "environment": env,
        "metrics": aggregate(scores),
        "documents": [
            {"name": d.name, "title": d.title, "chars": len(d.text), "has_abstract": bool(d.abstract)}
            for d in documents
        ],
        "items": [asdict(s) for s in scores],
    }


def summaries_markdown(data: dict[str, Any]) -> str:
    rows = [
        [
            tier,
            str(m["documents"]),
            fmt(m["coverage"], "%"),
            fmt(m["faithfulness"], "%"),
            fmt(m["length_ratio"], "%"),
            fmt(m["rouge_l"]),
            fmt(m["latency_ms_mean"], "s"),
        ]
        for tier, m in data["metrics"].items()
    ]
    by_doc: dict[str, dict[str, Any]] = {}
    for item in data["items"]:
        by_doc.setdefault(item["document"], {})[item["tier"]] = item
    doc_rows = [
        [
            name,
            *(
                f"{fmt(tiers[t]['coverage'], '%')} / {fmt(tiers[t]['faithfulness'], '%')}"
                if t in tiers
                else "–"
                for t in ("slm", "llm")
            ),
        ]
        for name, tiers in by_doc.items()
    ]
    env = data["environment"]
    return (
        "# Summaries: SLM vs LLM\n\n"
        f"Key facts and judgements by {env['models'].get('llm')}; SLM {env['models'].get('slm')}. "
        "Coverage: share of the document's key facts the summary states. Faithfulness: share of the "
        "summary's sentences the document supports. ROUGE-L against the document's own abstract.\n\n"
        + markdown_table(
            ["tier", "documents", "coverage", "faithfulness", "length / document", "ROUGE-L", "time"], rows
        )
        + "\n## Per document (coverage / faithfulness)\n\n"
        + markdown_table(["document", "slm", "llm"], doc_rows)
    )
