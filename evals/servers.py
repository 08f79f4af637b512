"""``tierflow eval servers``: what a shared SLM server buys, side by side in one run.

**Shared SLM against a copy per worker.** The first ``limit`` documents of the batch corpus
(``evals/batch_corpus.py``) are summarized through ``tierflow summarize``, as a user runs it,
all on the SLM (``--policy slm``: the LLM is not what differs), three ways, each a fresh job
in its own data directory:

* 1 worker in process (the reference);
* 2 worker processes, each loading its own SLM with half of the cores;
* 2 worker processes sharing one SLM server (``--shared-slm``: llama-cpp-python's server,
  with log-probabilities on, serving one request at a time on every core).

Throughput is documents per minute, model loading and server start included. Memory is the
peak resident memory of the job's process and all its descendants (workers, servers),
sampled every second from ``/proc`` (``evals/large_job.py``).

**What log-probabilities cost a server.** llama-cpp-python's server returns them only when it
keeps the logits of every prompt position (``--logits_all true``). The same prompt of a
tool-selection size is sent to a server with and without, ``PROMPTS`` times each after one
warm-up, and the mean latency compared, on the SLM and on the embedded LLM's model: the price
of the SLM's escalation signals on a server, and what the embedded LLM server (which never
asks for them) saves by going without.
"""

from __future__ import annotations

import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tierflow.evals.large_job import large_job
from tierflow.evals.report import markdown_table

__all__ = ["shared_slm_runs", "logits_cost", "servers_markdown", "CONFIGURATIONS"]

CONFIGURATIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("1 worker, SLM in process", ()),
    ("2 workers, an SLM each", ("--workers", "2")),
    ("2 workers, one shared SLM server", ("--workers", "2", "--shared-slm")),
)
PROMPTS = 4
Progress = Callable[[str], None]


def shared_slm_runs(originals: list[Path], work: Path, progress: Progress) -> list[dict[str, Any]]:
    """Each configuration on the same documents (copied to ``work/corpus``)."""
    corpus = work / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    for path in originals:
        shutil.copyfile(path, corpus / path.name)
    runs = []
    for label, options in CONFIGURATIONS:
        progress(label)
        data_dir = work / label.replace(" ", "_").replace(",", "")
        run = large_job(corpus, data_dir, options=["--policy", "slm", *options], interval=1.0)
        run.pop("samples")
        runs.append({"label": label, **run})
    return runs


def logits_cost(
    model_path: Path, work: Path, progress: Progress, n_threads: int | None = None
) -> dict[str, Any]:
    """Mean latency of the same prompt on a server with and without ``logits_all``."""
    import openai
    from tierflow.agents.server import EmbeddedServer

    tools = "\n".join(f"- tool_{i}: does task number {i} on a file, a date or a number" for i in range(40))
    prompt = f"Pick the tool for the request.\nTools:\n{tools}\nRequest: convert 5 km to miles."
    measured: dict[str, Any] = {}
    for logits_all in (False, True):
        label = "with logits_all" if logits_all else "without logits_all"
        progress(label)
        server = EmbeddedServer(
            model_path,
            alias="bench",
            log_path=work / "logits-server.log",
            n_threads=n_threads,
            logits_all=logits_all,
            role="SLM",
        )
        with server:
            client = openai.OpenAI(base_url=server.base_url, api_key="bench", max_retries=0)
            ask: dict[str, Any] = {"logprobs": True, "top_logprobs": 10} if logits_all else {}
            seconds = []
            for index in range(PROMPTS + 1):
                started = time.perf_counter()
                response = client.chat.completions.create(
                    model="bench",
                    messages=[{"role": "user", "content": f"({index}) {prompt}"}],  # no prompt cache hit
                    max_tokens=8,
                    temperature=0,
                    **ask,
                )
                if index:  # the first call warms the server up
                    seconds.append(time.perf_counter() - started)
            usage = response.usage
            measured[label] = {
                "mean_seconds": round(statistics.mean(seconds), 3),
                "prompt_tokens": usage.prompt_tokens if usage else None,
            }
    without, with_ = (
        measured["without logits_all"]["mean_seconds"],
        measured["with logits_all"]["mean_seconds"],
    )
    return {"model": model_path.name, "prompts": PROMPTS, **measured, "ratio": round(with_ / without, 2)}


def servers_markdown(data: dict[str, Any]) -> str:
    rows = [
        [
            run["label"],
            f"{run['succeeded']}/{run['documents']}",
            f"{run['seconds']:.0f} s",
            f"{run['documents_per_minute']:.2f}",
            f"{run['memory'].get('peak_mib', 0):,.0f} MiB",
        ]
        for run in data["runs"]
    ]
    lines = [
        f"# A shared SLM server ({data['documents']} documents, policy slm)",
        "",
        markdown_table(["configuration", "summarized", "time", "documents/min", "peak memory"], rows),
        "",
    ]
    for cost in data.get("logits_cost") or []:
        lines += [
            f"## What log-probabilities cost a server ({cost['model']}, {cost['prompts']} prompts of "
            f"{cost['without logits_all']['prompt_tokens']} tokens)",
            "",
            f"- without logits_all: {cost['without logits_all']['mean_seconds']:.2f} s a call",
            f"- with logits_all (and top_logprobs=10): "
            f"{cost['with logits_all']['mean_seconds']:.2f} s a call ({cost['ratio']:.2f}x)",
            "",
        ]
    return "\n".join(lines)
