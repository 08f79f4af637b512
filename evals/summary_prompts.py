"""Issue 27's prompt trial for the SLM's chunk summaries, on a development set: the 10 Python
HOWTOs of ``evals/data/documents`` (not the batch corpus, not the memory questions).

Each document is cut into the batch job's chunks (``chunk_budget``, counted with the SLM's
tokenizer), and every chunk is summarized by the SLM once per prompt variant, under the
batch job's watch (``GenerationWatch``: copying, looping, sentence budget) and its checks by
code (numbers, names, figures attributed, concise). Recorded per variant: how many replies the
watch stopped and why, how many passed every check (what ``tiered`` would keep on the SLM),
the SLM's seconds and tokens. The variants differ only in the prompt; sampling stays greedy.

Run: ``python -m tierflow.evals.summary_prompts [--out FILE]`` (one llama.cpp process, ~15 min
on 2 cores).
"""

from __future__ import annotations

import argparse
import json
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
    product's until this trial), after it (the product's since), and after it with the reply
    begun for the model."""
    after = render_messages(
        "step_summarize", instructions=CHUNK_INSTRUCTIONS, max_sentences=SENTENCES, text=text
    )
    system, user = after
    lead = ' Begin with "This part" and say what it explains.'
    begun: list[Message] = [system, {"role": user["role"], "content": user["content"] + lead}]
    return {
        "instruction before the text": [
            {"role": "system", "content": _BEFORE.format(instructions=CHUNK_INSTRUCTIONS, n=SENTENCES)},
            {"role": "user", "content": text},
        ],
        "instruction after the text": after,
        "after the text, begun for it": begun,
    }


def _check(summary: str, source: str) -> str | None:
    try:
        CHUNK_CHECKS(summary, source)
    except Rejected as rejection:
        return rejection.code
    return None


def trial(model: Any) -> dict[str, Any]:
    chunks = [
        (path.name, chunk)
        for path in sorted(DOCUMENTS.glob("*.txt"))
        for chunk in split_to_fit(
            model, path.read_text(encoding="utf-8"), chunk_budget(model, BatchContext.chunk_tokens)
        )
    ]
    results: dict[str, Any] = {}
    for name in variants(""):
        lines = []
        for number, (document, chunk) in enumerate(chunks, start=1):
            messages = variants(chunk)[name]
            with watching(GenerationWatch(source=chunk, max_sentences=SENTENCES)):
                started = time.perf_counter()
                got = model.complete(messages, max_tokens=CHUNK_SUMMARY_TOKENS)
                seconds = time.perf_counter() - started
            problem = got.stopped or ("truncated" if got.truncated else None) or _check(got.text, chunk)
            lines.append(
                {
                    "document": document,
                    "stopped": got.stopped,
                    "problem": problem,
                    "seconds": round(seconds, 2),
                    "completion_tokens": got.completion_tokens,
                    "text": got.text,
                }
            )
            print(f"{name} {number}/{len(chunks)} {document}: {problem or 'kept'} {seconds:.1f}s", flush=True)
        results[name] = {
            "chunks": len(lines),
            "kept": sum(line["problem"] is None for line in lines),
            "problems": dict(Counter(line["problem"] for line in lines if line["problem"])),
            "seconds": round(sum(line["seconds"] for line in lines), 1),
            "completion_tokens": sum(line["completion_tokens"] for line in lines),
            "lines": lines,
        }
    return results


def main() -> None:
    from tierflow.agents.catalog import CATALOG, cached_path
    from tierflow.agents.slm import LlamaCppModel
    from tierflow.paths import cache_dir

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("summary_prompts.json"))
    args = parser.parse_args()
    path = cached_path(CATALOG["qwen2.5-coder-0.5b"], cache_dir() / "models")
    model = LlamaCppModel(path, name="qwen2.5-coder-0.5b", n_ctx=4096)
    results = trial(model)
    run = {"command": "python -m tierflow.evals.summary_prompts", "model": model.name + ", greedy"}
    data = {"run": run, "variants": results}
    args.out.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    for name, result in results.items():
        print(name, {k: v for k, v in result.items() if k != "lines"})


if __name__ == "__main__":
    main()
