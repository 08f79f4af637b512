"""The batch job's benchmark (part of ``make bench``): the 22-document corpus
(``evals/batch_corpus.py``) summarized side by side in one run, each configuration as a
fresh job in its own data directory (nothing reused between them):

* ``tiered`` on 1 local worker (this process, the SLM on every core), on 2 local worker
  processes and on 2 Ray actors (a local cluster started before the clock starts, as an
  existing cluster would be), one SLM per worker with its share of the cores;
* ``tiered`` on 1 local worker with the watch off (SLM summaries run to their token limit
  before the checks reject them): the time the watch saves, side by side;
* ``llm``: every document on the LLM (1 worker), the baseline for LLM tokens and quality.

Times are wall clock for the documents (no cross-document report, which is one LLM call
in every configuration), model loading and the LLM server's start included. Parallel
efficiency is documents per minute with 2 workers over twice that with 1.

Quality, against the all-LLM summaries, judged by the LLM: **coverage** is the share of
the all-LLM summary's sentences (its key facts, at most 8) that the tiered summary states;
**faithfulness** is the share of a summary's sentences the document supports (judged
against the document in parts of at most ``JUDGE_CHARS`` characters, a sentence counting
as supported when any part supports it), for the tiered and the all-LLM summaries alike.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tierflow.agents.fitting import split_to_fit
from tierflow.agents.policy import TierPolicy
from tierflow.batch.job import JobRequest, run_job
from tierflow.batch.worker import SummaryOptions
from tierflow.errors import TierflowError
from tierflow.evals.batch_corpus import CORPUS_DIR, load_manifest
from tierflow.evals.documents import Document, digest
from tierflow.evals.key_sentences import compare
from tierflow.evals.report import markdown_table, read_results, write_results
from tierflow.evals.summaries import judge_coverage, judge_faithfulness, sentences
from tierflow.tools.readers import read_document

if TYPE_CHECKING:
    from tierflow.agents.protocol import ChatModel
    from tierflow.settings import Settings

__all__ = [
    "ALL_LLM",
    "CONFIGURATIONS",
    "TIERED",
    "batch_runs",
    "batch_quality",
    "batch_markdown",
    "batch_table",
]

JUDGE_CHARS = 6000
MAX_FACTS = 8
TIERED, ALL_LLM = "tiered, 1 worker", "all on the LLM, 1 worker"
"""The two runs whose summaries the quality figures compare."""
CONFIGURATIONS: tuple[tuple[str, str, int, str], ...] = (
    # label, policy, workers, backend
    (TIERED, "tiered", 1, "local"),
    ("tiered, 1 worker, no watch", "tiered", 1, "local"),
    ("tiered, 2 local workers", "tiered", 2, "local"),
    ("tiered, 2 Ray workers", "tiered", 2, "ray"),
    (ALL_LLM, "llm", 1, "local"),
)
UNWATCHED = "tiered, 1 worker, no watch"
Progress = Callable[[str], None]


def _run(
    settings: Settings, label: str, policy: str, workers: int, backend: str, scratch: Path
) -> dict[str, Any]:
    from tierflow.app import App

    data_dir = scratch / label.replace(" ", "_").replace(",", "")
    conf = settings.model_copy(update={"data_dir": data_dir})
    request = JobRequest(
        inputs=[str(CORPUS_DIR)],
        options=SummaryOptions(policy=TierPolicy.preset(policy), watch=label != UNWATCHED),
        workers=workers,
        backend="ray" if backend == "ray" else "local",
        synthesis=False,
    )
    with App(conf) as app:
        started = time.perf_counter()
        report = run_job(request, app)
        seconds = time.perf_counter() - started
    t = report.totals
    return {
        "label": label,
        "policy": policy,
        "workers": workers,
        "backend": backend,
        "documents": t.documents,
        "succeeded": t.succeeded,
        "failed": t.failed,
        "seconds": round(seconds, 1),
        "documents_per_minute": round(t.succeeded / seconds * 60, 2),
        "slm_share": t.slm_share,
        "slm_calls": t.slm_calls,
        "llm_calls": t.llm_calls,
        "llm_tokens": t.llm_tokens,
        "chunks": sum(d.chunks for d in report.documents),
        "slm_seconds": round(sum(d.slm_seconds for d in report.documents), 1),
        "llm_seconds": round(sum(d.llm_seconds for d in report.documents), 1),
        "escalations": dict(sum((Counter(d.escalations) for d in report.documents), Counter()).most_common()),
        "escalated_documents": sum(d.llm_calls > 0 for d in report.documents),
        "failures": {d.name: d.reason for d in report.documents if d.status == "failed"},
        "summaries": {d.name: d.summary for d in report.documents if d.summary},
    }


def _supported(llm: ChatModel, name: str, text: str, claims: list[str]) -> list[bool]:
    """Per claim: does any part of the document support it?"""
    supported = [False] * len(claims)
    parts = split_to_fit(None, text, JUDGE_CHARS // 3)  # no tokenizer: 3 characters a token
    for index, part in enumerate(parts):
        verdicts = judge_faithfulness(llm, Document(f"{name}#{index}", name, part, None), claims)
        supported = [a or b for a, b in zip(supported, verdicts, strict=True)]
    return supported


MAX_CLAIMS = 10


def _judged(name: str, judge: Callable[[], float | None], problems: list[str]) -> float | None:
    """One judgement, or ``None`` with the reason kept when the judge's reply is unusable."""
    try:
        return judge()
    except TierflowError as exc:
        problems.append(f"{name}: {exc.message}")
        return None


def _coverage(llm: ChatModel, facts: list[str], summary: str) -> float | None:
    covered = judge_coverage(llm, facts, summary) if facts else []
    return sum(covered) / len(covered) if covered else None


def _faithfulness(llm: ChatModel, name: str, text: str, summary: str) -> float | None:
    claims = sentences(summary)[:MAX_CLAIMS]
    verdicts = _supported(llm, name, text, claims) if claims else []
    return sum(verdicts) / len(verdicts) if verdicts else None


def _quality(
    llm: ChatModel, tiered: dict[str, str], reference: dict[str, str], progress: Progress
) -> dict[str, Any]:
    texts = _corpus_texts()
    per_document: list[dict[str, Any]] = []
    problems: list[str] = []
    for name in sorted(set(tiered) & set(reference)):
        progress(f"judging {name}")
        facts = sentences(reference[name])[:MAX_FACTS]
        per_document.append(
            {
                "document": name,
                "text_sha256_16": digest(texts[name]),
                "facts": len(facts),
                "coverage": _judged(name, partial(_coverage, llm, facts, tiered[name]), problems),
                "faithfulness_tiered": _judged(
                    name, partial(_faithfulness, llm, name, texts[name], tiered[name]), problems
                ),
                "faithfulness_llm": _judged(
                    name, partial(_faithfulness, llm, name, texts[name], reference[name]), problems
                ),
            }
        )

    def mean(key: str) -> float | None:
        values = [row[key] for row in per_document if row[key] is not None]
        return round(statistics.fmean(values), 3) if values else None

    return {
        "documents": len(per_document),
        "by_code": compare(texts, tiered, reference),
        "coverage_of_llm_facts": mean("coverage"),
        "faithfulness_tiered": mean("faithfulness_tiered"),
        "faithfulness_llm": mean("faithfulness_llm"),
        "unjudged": problems,
        "per_document": per_document,
    }


def batch_runs(settings: Settings, progress: Progress) -> dict[str, Any]:
    """Every configuration on the corpus: the runs and the figures drawn from them."""
    import ray

    runs = []
    with tempfile.TemporaryDirectory(prefix="tierflow-batch-bench-") as scratch:
        for label, policy, workers, backend in CONFIGURATIONS:
            progress(label)
            if backend == "ray":
                ray.init(
                    num_cpus=workers, include_dashboard=False, log_to_driver=False, configure_logging=False
                )
            try:
                runs.append(_run(settings, label, policy, workers, backend, Path(scratch)))
            finally:
                if backend == "ray":
                    ray.shutdown()
    by_label = {run["label"]: run for run in runs}
    one, two = by_label[TIERED], by_label["tiered, 2 local workers"]
    llm_run = by_label[ALL_LLM]
    manifest = load_manifest()
    return {
        "corpus": {
            "documents": len(manifest),
            "characters": sum(int(entry["chars"]) for entry in manifest),
            "formats": sorted({entry["format"] for entry in manifest}),
        },
        "runs": runs,
        "parallel_efficiency": {
            "local_2_workers": round(two["documents_per_minute"] / (2 * one["documents_per_minute"]), 3),
            "ray_2_workers": round(
                by_label["tiered, 2 Ray workers"]["documents_per_minute"] / (2 * one["documents_per_minute"]),
                3,
            ),
        },
        "watch_saves": {
            "seconds": round(by_label[UNWATCHED]["seconds"] - one["seconds"], 1),
            "slm_seconds": round(by_label[UNWATCHED]["slm_seconds"] - one["slm_seconds"], 1),
        },
        "llm_tokens_vs_all_llm": round(one["llm_tokens"] / llm_run["llm_tokens"], 3)
        if llm_run["llm_tokens"]
        else None,
        "quality": None,
    }


def _corpus_texts() -> dict[str, str]:
    """Each corpus document's text, by file name."""
    return {entry["file"]: read_document(CORPUS_DIR / entry["file"]).text for entry in load_manifest()}


def _compared(data: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """The summaries the quality figures compare: the tiered run's, and the all-LLM run's."""
    by_label = {run["label"]: run for run in data["runs"]}
    return by_label[TIERED]["summaries"], by_label[ALL_LLM]["summaries"]


def batch_quality(settings: Settings, data: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """The tiered (1 worker) summaries of ``batch_runs``' data judged against the all-LLM ones."""
    from tierflow.app import build_llm

    judge = build_llm(settings)
    try:
        return _quality(judge, *_compared(data), progress)
    finally:
        close = getattr(judge, "close", None)
        if callable(close):
            close()


def _saved(seconds: float) -> str:
    return f"{seconds:.0f} s saved" if seconds >= 0 else f"{-seconds:.0f} s more"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def batch_table(data: dict[str, Any]) -> str:
    """The runs as a Markdown table and the lines under it (batch.md and the README)."""
    rows = [
        [
            run["label"],
            f"{run.get('succeeded', run.get('done'))}/{run['documents']}",
            f"{run['seconds']:.0f} s",
            f"{run['documents_per_minute']:.2f}",
            _pct(run["slm_share"]),
            f"{run['llm_tokens']:,}",
            str(run["escalated_documents"]),
            f"{run['slm_seconds']:.0f} s / {run['llm_seconds']:.0f} s" if "slm_seconds" in run else "–",
        ]
        for run in data["runs"]
    ]
    quality = data["quality"] or {}
    efficiency = data["parallel_efficiency"]
    table = markdown_table(
        [
            "configuration",
            "succeeded",
            "time",
            "documents/min",
            "SLM share",
            "LLM tokens",
            "escalated docs",
            "SLM / LLM seconds",
        ],  # fmt: skip
        rows,
    )
    return "\n".join(
        [
            table.rstrip("\n"),
            "",
            f"Parallel efficiency with 2 workers: local {_pct(efficiency['local_2_workers'])}, "
            f"Ray {_pct(efficiency['ray_2_workers'])}. LLM tokens of tiered against all on the LLM: "
            f"{_pct(data['llm_tokens_vs_all_llm'])}. Quality of the tiered summaries, judged by the LLM: "
            f"coverage of the all-LLM summaries' key facts {_pct(quality.get('coverage_of_llm_facts'))}; "
            f"faithfulness to the document {_pct(quality.get('faithfulness_tiered'))} "
            f"(all-LLM: {_pct(quality.get('faithfulness_llm'))}).",
            *(
                [
                    "Checked by code, with no model judging (`evals/key_sentences.py`): the tiered summaries "
                    f"cover {_pct(by_code['key_sentences_covered_tiered'])} of the documents' key sentences, "
                    f"the all-LLM ones {_pct(by_code['key_sentences_covered_llm'])} "
                    f"(tiered at {_pct(by_code['tiered_against_llm'])} of all-LLM); they draw on "
                    f"{_pct(by_code['parts_drawn_on_tiered'])} and {_pct(by_code['parts_drawn_on_llm'])} "
                    "of the documents' parts."
                ]
                if (by_code := quality.get("by_code"))
                else []
            ),
            *(
                [
                    "The watch (stopping an SLM summary that copies, loops or runs over while it is "
                    f"written), against the same run with it off: {_saved(saves['seconds'])} of wall time "
                    f"and {_saved(saves['slm_seconds'])} of SLM time."
                ]
                if (saves := data.get("watch_saves"))
                else []
            ),
            "",
        ]
    )


def batch_markdown(data: dict[str, Any]) -> str:
    corpus = data["corpus"]
    return "\n".join(
        [
            "# Batch summarization benchmark",
            "",
            f"{corpus['documents']} real documents ({', '.join(corpus['formats'])}; "
            f"{corpus['characters']:,} characters; `evals/data/batch/sources.json`), each configuration "
            "a fresh job. Wall clock for the documents, model loading included; quality judged on "
            "the 1-worker tiered run (see `evals/batch_bench.py`).",
            "",
            batch_table(data),
        ]
    )


def rescore_batch(path: Path) -> dict[str, Any]:
    """Add the code's reading to a batch benchmark's results (``batch.json``), keeping the
    judge's: no model runs, so an earlier run's summaries can be read again."""
    data = read_results(path)
    if not data.get("runs"):
        raise TierflowError(f"no runs in {path} to read", hint="Run `tierflow eval batch` first.")
    by_code = compare(_corpus_texts(), *_compared(data))
    data["quality"] = {**(data.get("quality") or {}), "by_code": by_code}
    write_results(path, data, batch_markdown(data))
    return by_code


def main() -> None:
    parser = argparse.ArgumentParser(description=rescore_batch.__doc__)
    parser.add_argument("results", type=Path, nargs="?", default=Path("evals/results/batch.json"))
    by_code = rescore_batch(parser.parse_args().results)
    print(json.dumps({k: v for k, v in by_code.items() if k != "per_document"}, indent=1))


if __name__ == "__main__":
    main()
