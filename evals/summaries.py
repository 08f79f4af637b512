"""The summarization evaluation: real, long public documents summarized by each tier with
tierflow's summarize prompt, scored without reference summaries.

- **Documents**: Python HOWTOs from Debian's ``python3.11-doc`` (PSF licence), converted from
  their reStructuredText sources to plain text once (``prepare_documents``) and kept in
  ``evals/data/documents/`` with their source. A document's own abstract, where it has one,
  is removed from the text and kept as a human-written reference for ROUGE-L.
- **Key facts**: extracted once per document by the LLM tier and stored in
  ``facts.json`` with the model that produced them (re-extracted only when a text changes).
- **Scores**: key-fact coverage (share of facts the summary states, judged by the LLM),
  faithfulness (share of the summary's sentences the document supports, judged by the LLM),
  length ratio, and ROUGE-L F1 against the abstract. Judgements are cached by the texts'
  hashes and the judge's model in ``judgements.json``.
"""

from __future__ import annotations

import hashlib
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
from tierflow.evals.report import fmt, markdown_table

__all__ = [
    "DOCUMENTS_DIR",
    "HOWTOS",
    "prepare_documents",
    "load_documents",
    "rouge_l",
    "sentences",
    "evaluate_summaries",
    "summaries_markdown",
]

DOCUMENTS_DIR = Path(__file__).resolve().parent / "data" / "documents"
HOWTO_SOURCES = Path("/usr/share/doc/python3.11/html/_sources/howto")
HOWTOS = (
    "annotations",
    "clinic",
    "curses",
    "descriptor",
    "isolating-extensions",
    "pyporting",
    "regex",
    "sockets",
    "sorting",
    "argparse",
)
MAX_CHARS = 6000
"""Each document is cut at a paragraph boundary below this (about 1,500 tokens), so that it
fits the SLM's context with its prompt and summary; longer inputs are the batch job's work."""

SUMMARY_TASK = "Summarize this document for a reader who has not seen it."


# Documents ------------------------------------------------------------------------------
def _rst_to_text(source: str) -> tuple[str, str | None, str]:
    """(title, abstract, body) of a reStructuredText HOWTO, as plain text."""
    lines = source.splitlines()
    abstract: list[str] = []
    body: list[str] = []
    title = ""
    in_abstract = False
    for i, line in enumerate(lines):
        if (
            re.match(r"^\.\. topic:: Abstract", line)
            or line.strip() == "Abstract"
            and i + 1 < len(lines)
            and set(lines[i + 1].strip()) <= set("=-*^~")
        ):
            in_abstract = True
            continue
        if in_abstract:
            if line.strip() and not line.startswith((" ", "\t")) and not set(line.strip()) <= set("=-*^~"):
                in_abstract = False
            elif line.strip() and not set(line.strip()) <= set("=-*^~"):
                abstract.append(line.strip())
                continue
            else:
                continue
        if re.match(r"^\s*\.\. ", line) or re.match(r"^:[A-Za-z][\w ]*:(\s|$)", line):
            continue  # directives, labels, field lists (author, release)
        if line.strip() and set(line.strip()) <= set("=-*^~#'\"`"):
            continue  # section underlines
        if not title and line.strip():
            title = line.strip()
        body.append(line)
    return title, (_plain(" ".join(abstract)) or None), _plain("\n".join(body))


def _plain(text: str) -> str:
    """Inline reStructuredText markup as plain text."""
    text = re.sub(r":[\w:]+:`~?([^`<]*?)(?:\s*<[^>]*>)?`", r"\1", text)  # :role:`text <target>`
    text = re.sub(r"``([^`]*)``", r"\1", text)
    text = re.sub(r"`([^`<]*?)(?:\s*<[^>]*>)?`_+", r"\1", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text.rfind("\n\n", 0, limit)
    return text[: cut if cut > limit // 2 else limit].rstrip()


def prepare_documents(source: Path = HOWTO_SOURCES, out: Path = DOCUMENTS_DIR) -> list[dict[str, Any]]:
    """Convert the HOWTOs to the evaluation's plain-text documents and index them."""
    if not source.is_dir():
        raise TierflowError(
            f"{source} does not exist",
            hint="Install Debian's python3.11-doc (apt-get install python3.11-doc).",
        )
    out.mkdir(parents=True, exist_ok=True)
    index = []
    for name in HOWTOS:
        title, abstract, body = _rst_to_text((source / f"{name}.rst.txt").read_text(encoding="utf-8"))
        text = _cut(body, MAX_CHARS)
        (out / f"{name}.txt").write_text(text + "\n", encoding="utf-8")
        index.append(
            {
                "name": name,
                "title": title,
                "source": f"python3.11-doc: {source / (name + '.rst.txt')}",
                "license": "PSF-2.0 (Python documentation)",
                "abstract": abstract,
                "chars": len(text),
                "full_chars": len(body),
            }
        )
    (out / "index.json").write_text(json.dumps(index, indent=1) + "\n", encoding="utf-8")
    return index


@dataclass(frozen=True)
class Document:
    name: str
    title: str
    text: str
    abstract: str | None

    @property
    def digest(self) -> str:
        return _digest(self.text)


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:16]


def load_documents(directory: Path = DOCUMENTS_DIR) -> list[Document]:
    try:
        index = json.loads((directory / "index.json").read_text(encoding="utf-8"))
        return [
            Document(
                e["name"],
                e["title"],
                (directory / f"{e['name']}.txt").read_text(encoding="utf-8").strip(),
                e["abstract"],
            )
            for e in index
        ]
    except (OSError, json.JSONDecodeError, KeyError) as exc:
        raise TierflowError(
            f"the evaluation documents in {directory} cannot be read: {exc}",
            hint="Recreate them with `tierflow eval summaries --prepare` (needs python3.11-doc).",
        ) from None


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


def _ask_json(model: ChatModel, messages: list[Message], schema: dict[str, Any], max_tokens: int) -> Any:
    completion = model.complete(messages, schema=schema, max_tokens=max_tokens)
    try:
        return parse_json(completion)
    except Rejected as exc:
        raise TierflowError(f"the judge's reply was not JSON: {exc.reason}") from None


FACTS_SCHEMA = {
    "type": "object",
    "properties": {"facts": {"type": "array", "items": {"type": "string"}}},
    "required": ["facts"],
}


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
    data = _ask_json(model, messages, FACTS_SCHEMA, 512)
    facts = (
        [str(f).strip() for f in data.get("facts", []) if str(f).strip()] if isinstance(data, dict) else []
    )
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
    verdicts = _ask_json(model, messages, VERDICTS_SCHEMA, 128).get("verdicts", [])
    return [bool(v) for v in (list(verdicts) + [False] * len(facts))[: len(facts)]]


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
    verdicts = _ask_json(model, messages, VERDICTS_SCHEMA, 128).get("verdicts", [])
    return [bool(v) for v in (list(verdicts) + [False] * len(claims))[: len(claims)]]


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
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        except json.JSONDecodeError:
            self.data = {}

    def get_or(self, key: str, make: Callable[[], Any]) -> Any:
        if key not in self.data:
            self.data[key] = make()
            self.save()
        return self.data[key]

    def save(self) -> None:
        partial = self.path.with_name(self.path.name + ".partial")
        partial.write_text(
            json.dumps(self.data, indent=1, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8"
        )
        partial.replace(self.path)


def _facts_for(tiers: Tiers, documents: Sequence[Document], directory: Path) -> dict[str, list[str]]:
    path = directory / "facts.json"
    stored = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {"documents": {}}
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
        path.write_text(json.dumps(stored, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return {name: entry["facts"] for name, entry in stored["documents"].items()}


def evaluate_summaries(
    tiers: Tiers,
    documents: Sequence[Document],
    *,
    directory: Path = DOCUMENTS_DIR,
    on_item: Callable[[str, int, SummaryScore], None] | None = None,
) -> list[SummaryScore]:
    """Every document summarized by each tier, scored against cached facts and judgements."""
    facts = _facts_for(tiers, documents, directory)
    judgements = _Cache(directory / "judgements.json")
    judge = tiers.llm
    scores = []
    tier: Tier
    for tier in ("slm", "llm"):
        model = tiers.model(tier)
        for document in documents:
            completion = summarize_document(model, document)
            summary = completion.text.strip()
            key_facts = facts[document.name]
            covered = judgements.get_or(
                f"coverage/{judge.name}/{_digest(*key_facts, summary)}",
                partial(judge_coverage, judge, key_facts, summary),
            )
            claims = sentences(summary)
            supported = (
                judgements.get_or(
                    f"faithfulness/{judge.name}/{_digest(document.text, *claims)}",
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
            if on_item is not None:
                on_item(tier, len(documents), score)
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
