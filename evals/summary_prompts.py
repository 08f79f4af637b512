"""Issue 27's prompt trial for the SLM's chunk summaries, on a development set: the 10 Python
HOWTOs of ``evals/data/documents`` (not the batch corpus, not the memory questions).

Each document is cut into the batch job's chunks (``chunk_budget``, counted with the SLM's
tokenizer), and every chunk is summarized by the SLM once per prompt variant, under the
batch job's watch (``GenerationWatch``: copying, looping, sentence budget) and its checks by
code (numbers, names, figures attributed, concise). Recorded per variant: how many replies the
watch stopped and why, how many passed every check (what ``tiered`` would keep on the SLM),
the SLM's seconds and tokens. The variants differ only in the prompt; sampling stays greedy.

Each document's chunk summaries, joined, are read by code against its key sentences
(``evals.key_sentences``: no model). With ``--judge`` they are also scored for the key facts of
that document in ``data/documents/facts.json`` (written by the LLM from the whole document, not
from any summary), judged by the catalog's 1.5B LLM in the same process after the SLM is done
(``evals.summaries.judge_coverage``): the share of the facts the summary states.

Run: ``python -m tierflow.evals.summary_prompts [--variant NAME ...] [--minions] [--half-chunks]
[--instructed] [--judge] [--out FILE]`` (one llama.cpp process at a time, ~5 min a variant on 2
cores, ~2 more to judge it).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from tierflow.agents.escalation import Rejected
from tierflow.agents.fitting import split_to_fit
from tierflow.agents.prompting import render_messages
from tierflow.agents.protocol import Message
from tierflow.agents.watch import GenerationWatch, watching
from tierflow.graphs.summaries import (
    CHUNK_CHECKS,
    CHUNK_INSTRUCTIONS,
    CHUNK_SUMMARY_TOKENS,
    BatchContext,
    chunk_budget,
)

DOCUMENTS = Path(__file__).parent / "data" / "documents"
SENTENCES = 4

_BEFORE = (
    "{instructions}\nSummarize the text below. Keep every number, name, date and fact that matters; "
    "drop the rest. Write at most {n} sentences of plain text."
)


def variants(text: str) -> dict[str, list[Message]]:
    """The prompts tried, by the names the results use: the instruction before the text (the
    product's until this trial), after it (the product's since), after it with the reply
    begun for the model, asking for facts rather than topics, and asking for as many sentences
    as the budget allows, each a fact (the SLM's summaries were shorter than the LLM's: 2-3
    sentences against 4-5)."""
    after = render_messages(
        "step_summarize", instructions=CHUNK_INSTRUCTIONS, max_sentences=SENTENCES, text=text
    )
    system, user = after
    lead = ' Begin with "This part" and say what it explains.'
    begun: list[Message] = [system, {"role": user["role"], "content": user["content"] + lead}]
    facts = (
        " Write what the text says (its facts, names, commands and figures), not what it is about:"
        ' no sentence like "This text explains ...".'
    )
    stated: list[Message] = [system, {"role": user["role"], "content": user["content"] + facts}]
    asked_for = (
        f'Text:\n"""\n{text}\n"""\n\n{CHUNK_INSTRUCTIONS} Write {SENTENCES} sentences, each stating a '
        "different fact the text gives: what it says, with its names, commands, dates and figures. Use "
        "your own words; do not copy its sentences."
    )
    counted: list[Message] = [
        {"role": "system", "content": "You summarize texts in your own words."},
        {"role": "user", "content": asked_for},
    ]
    return {
        "instruction before the text": [
            {"role": "system", "content": _BEFORE.format(instructions=CHUNK_INSTRUCTIONS, n=SENTENCES)},
            {"role": "user", "content": text},
        ],
        "instruction after the text": after,
        "after the text, begun for it": begun,
        "after the text, facts not topics": stated,
        "after the text, a fact a sentence": counted,
    }


def _check(summary: str, source: str) -> str | None:
    try:
        CHUNK_CHECKS(summary, source)
    except Rejected as rejection:
        return rejection.code
    return None


def trial(model: Any, names: list[str] | None = None) -> dict[str, Any]:
    chunks = [
        (path.name, chunk)
        for path in sorted(DOCUMENTS.glob("*.txt"))
        for chunk in split_to_fit(
            model, path.read_text(encoding="utf-8"), chunk_budget(model, BatchContext.chunk_tokens)
        )
    ]
    results: dict[str, Any] = {}
    for name in names or list(variants("")):
        lines = []
        for number, (document, chunk) in enumerate(chunks, start=1):
            lines.append(_summarized(model, document, chunk, variants(chunk)[name], SENTENCES))
            print(f"{name} {number}/{len(chunks)} {document}: {_outcome(lines[-1])}", flush=True)
        results[name] = _variant(lines)
    return results


def _summarized(
    model: Any, document: str, chunk: str, messages: list[Message], sentences: int
) -> dict[str, Any]:
    """One chunk summarized under the batch job's watch and checked as the job checks it: why
    it would escalate (``problem``, ``None`` when kept), its seconds, tokens and text."""
    with watching(GenerationWatch(source=chunk, max_sentences=sentences)):
        started = time.perf_counter()
        got = model.complete(messages, max_tokens=CHUNK_SUMMARY_TOKENS)
        seconds = time.perf_counter() - started
    return {
        "document": document,
        "stopped": got.stopped,
        "problem": got.stopped or ("truncated" if got.truncated else None) or _check(got.text, chunk),
        "seconds": round(seconds, 2),
        "completion_tokens": got.completion_tokens,
        "text": got.text,
    }


def _outcome(line: dict[str, Any]) -> str:
    return f"{line['problem'] or 'kept'} {line['seconds']:.1f}s"


def _variant(lines: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """A variant's figures from its chunk summaries (``extra``: figures of its own)."""
    return {
        "chunks": len(lines),
        **_by_code(lines),
        "kept": sum(line["problem"] is None for line in lines),
        "problems": dict(Counter(line["problem"] for line in lines if line["problem"])),
        "seconds": round(sum(line["seconds"] for line in lines), 1),
        "completion_tokens": sum(line["completion_tokens"] for line in lines),
        **extra,
        "lines": lines,
    }


def _by_code(lines: list[dict[str, Any]]) -> dict[str, Any]:
    """Each document's chunk summaries, joined, read by code against its key sentences
    (``evals.key_sentences``): the mean share covered, and of its parts drawn on."""
    from tierflow.evals.key_sentences import coverage, mean_of

    read = [
        coverage(
            (DOCUMENTS / document).read_text(encoding="utf-8"),
            " ".join(line["text"] for line in lines if line["document"] == document),
        )
        for document in dict.fromkeys(line["document"] for line in lines)
    ]
    return {
        "key_sentences_covered": mean_of(read, "covered"),
        "parts_drawn_on": mean_of(read, "parts_drawn_on"),
    }


MINIONS = "minions: the LLM's instruction from the outline, half-size chunks"
HALF_CHUNKS = "half-size chunks, no instruction (MinionS without its LLM)"
INSTRUCTED = "the LLM's instruction from the outline, the job's chunks"
_OUTLINE_SYSTEM = (
    "A small model will summarize a document part by part, without seeing the rest of it. From "
    "the document's outline below, write the instruction it follows for every part: which facts "
    "to keep (names, commands, options, versions, numbers, what each section explains), in two "
    "or three sentences. Do not summarize the document yourself. Reply with the instruction only."
)


def outline(text: str) -> str:
    """A document's title and headings: its first line, and each short line that stands alone
    between blank lines with no full stop (what the HOWTOs' headings look like). Only this
    much of the document reaches the LLM."""
    lines = text.splitlines()
    heads = [
        line.strip()
        for number, line in enumerate(lines)
        if line.strip()
        and not line.startswith((" ", "\t"))
        and len(line) < 60
        and not line.rstrip().endswith((".", ":", ",", ";", ")"))
        and (number == 0 or not lines[number - 1].strip())
        and (number + 1 == len(lines) or not lines[number + 1].strip())
    ]
    return "\n".join(heads[:20])


def minions_trial(model: Any, llm: Any | None, *, half: bool = True) -> dict[str, Any]:
    """The MinionS protocol for summaries: the LLM writes each document's instruction once,
    from its outline alone; the SLM applies it to every chunk of half the batch job's size,
    in at most half the sentences, so that the summary's sentence budget stays that of the
    others. With no ``llm``, the same chunks with no instruction (what the smaller chunks
    alone do); with ``half`` off, the instruction on the batch job's own chunks and budget."""
    instructions: dict[str, tuple[str, float, int]] = {}
    if llm is not None:
        for path in sorted(DOCUMENTS.glob("*.txt")):
            messages: list[Message] = [
                {"role": "system", "content": _OUTLINE_SYSTEM},
                {"role": "user", "content": "Outline:\n" + outline(path.read_text(encoding="utf-8"))},
            ]
            started = time.perf_counter()
            got = llm.complete(messages, max_tokens=120)
            tokens = got.prompt_tokens + got.completion_tokens
            instructions[path.name] = (got.text.strip(), time.perf_counter() - started, tokens)
            print(f"instruction for {path.name}: {got.text.strip()[:100]}", flush=True)
    budget = chunk_budget(model, BatchContext.chunk_tokens) // (2 if half else 1)
    sentences = SENTENCES // (2 if half else 1)
    lines = []
    for path in sorted(DOCUMENTS.glob("*.txt")):
        instruction = instructions[path.name][0] if llm is not None else ""
        for chunk in split_to_fit(model, path.read_text(encoding="utf-8"), budget):
            messages = render_messages(
                "step_summarize",
                instructions=f"{CHUNK_INSTRUCTIONS} {instruction}".strip(),
                max_sentences=sentences,
                text=chunk,
            )
            lines.append(_summarized(model, path.name, chunk, messages, sentences))
            print(f"minions {len(lines)} {path.name}: {_outcome(lines[-1])}", flush=True)
    name = INSTRUCTED if not half else MINIONS if llm is not None else HALF_CHUNKS
    return {
        name: _variant(
            lines,
            llm_seconds=round(sum(seconds for _, seconds, _ in instructions.values()), 1),
            llm_tokens=sum(tokens for _, _, tokens in instructions.values()),
            instructions={document: text for document, (text, _, _) in instructions.items()},
        )
    }


def judge(results: dict[str, Any], judge_model: Any) -> None:
    """Add each variant's key-fact coverage (see the module) to ``results``."""
    from tierflow.evals.summaries import judge_coverage

    facts = json.loads((DOCUMENTS / "facts.json").read_text(encoding="utf-8"))["documents"]
    for name, result in results.items():
        covered: dict[str, float] = {}
        for document in dict.fromkeys(line["document"] for line in result["lines"]):
            summary = " ".join(line["text"] for line in result["lines"] if line["document"] == document)
            key_facts = facts[Path(document).stem]["facts"]
            verdicts = judge_coverage(judge_model, key_facts, summary)
            covered[document] = round(sum(verdicts) / len(verdicts), 3)
            print(f"{name} {document}: {covered[document]:.0%} of {len(key_facts)} facts", flush=True)
        result["coverage"] = round(sum(covered.values()) / len(covered), 3)
        result["coverage_per_document"] = covered


def main() -> None:
    from tierflow.agents.catalog import CATALOG, cached_path
    from tierflow.agents.slm import LlamaCppModel
    from tierflow.paths import cache_dir

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("summary_prompts.json"))
    parser.add_argument("--variant", action="append", choices=list(variants("")), help="(default: all)")
    parser.add_argument("--judge", action="store_true", help="score key facts with the 1.5B LLM")
    parser.add_argument(
        "--minions", action="store_true", help="the MinionS variant (the 1.5B LLM writes instructions)"
    )
    parser.add_argument("--half-chunks", action="store_true", help="its half-size chunks alone")
    parser.add_argument("--instructed", action="store_true", help="its instruction on the job's chunks")
    args = parser.parse_args()
    path = cached_path(CATALOG["qwen2.5-coder-0.5b"], cache_dir() / "models")
    model = LlamaCppModel(path, name="qwen2.5-coder-0.5b", n_ctx=4096)
    alone = not (args.minions or args.half_chunks or args.instructed)
    results = trial(model, args.variant) if args.variant or alone else {}
    if args.half_chunks:
        results.update(minions_trial(model, None))
    if args.minions:  # one llama.cpp model at a time: the LLM writes, then the SLM applies
        llm_path = cached_path(CATALOG["qwen2.5-coder-1.5b"], cache_dir() / "models")
        llm = LlamaCppModel(llm_path, name="qwen2.5-coder-1.5b", n_ctx=4096)
        results.update(minions_trial(model, llm))
        del llm
    if args.instructed:
        llm_path = cached_path(CATALOG["qwen2.5-coder-1.5b"], cache_dir() / "models")
        llm = LlamaCppModel(llm_path, name="qwen2.5-coder-1.5b", n_ctx=4096)
        results.update(minions_trial(model, llm, half=False))
        del llm
    del model
    run = {
        "command": "python -m tierflow.evals.summary_prompts " + " ".join(sys.argv[1:]),
        "model": "qwen2.5-coder-0.5b, greedy",
    }
    data = {"run": run, "variants": results}

    def save() -> None:
        args.out.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")

    save()  # the summaries are kept before the judge runs: a judge that fails loses none of them
    if args.judge:
        judge_path = cached_path(CATALOG["qwen2.5-coder-1.5b"], cache_dir() / "models")
        judge(results, LlamaCppModel(judge_path, name="qwen2.5-coder-1.5b", n_ctx=4096))
        save()
    for name, result in results.items():
        print(name, {k: v for k, v in result.items() if k != "lines"})


if __name__ == "__main__":
    main()
