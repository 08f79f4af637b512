"""The large-job harness: a derived corpus made of real passages, and a job run, sampled,
killed and resumed as `tierflow eval large-job` does (on scripted tiers)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tierflow.evals.batch_corpus import CORPUS_DIR
from tierflow.evals.large_job import derived_corpus, large_job, large_job_markdown, process_tree_mib

ORIGINALS = sorted(p for p in CORPUS_DIR.iterdir() if p.suffix in {".txt", ".md"})[:3]


def test_the_derived_corpus_is_the_originals_and_real_passages_of_them(tmp_path: Path) -> None:
    files = derived_corpus(tmp_path / "a", ORIGINALS, count=12, seed=3)
    again = derived_corpus(tmp_path / "b", ORIGINALS, count=12, seed=3)
    assert len(files) == 12 and [p.name for p in files] == [p.name for p in again]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(files, again, strict=True))
    originals = "\n".join(p.read_text(encoding="utf-8") for p in ORIGINALS)
    for derived in files[len(ORIGINALS) :]:
        first = derived.read_text(encoding="utf-8").split("\n\n")[0].strip()
        assert first in originals  # a real paragraph, not an invented one
        assert derived.stat().st_size >= 1500 or first  # passages of a few chunks


def test_memory_of_a_process_tree_is_read_from_proc() -> None:
    assert process_tree_mib(os.getpid()) > 10


def test_a_job_is_sampled_killed_and_resumed(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    derived_corpus(corpus, ORIGINALS, count=10, seed=1)
    command = [sys.executable, "-m", "tests.large_job_run"]
    run = large_job(corpus, tmp_path / "work", command=command, kill_after=3, interval=0.2)
    assert run["exit_code"] == 0, run["error"]
    assert run["documents"] == 10 and run["succeeded"] == 10
    assert run["killed_after"] >= 3 and run["resume_seconds_to_next_document"] > 0
    assert run["database_mib"] > 0 and run["memory"]["peak_mib"] > 10
    assert run["samples"] and all(len(sample) == 3 for sample in run["samples"])
    table = large_job_markdown({"documents": 10, "runs": {"local": run}})
    assert "| local | 10 | 10 |" in table and "killed after" in table
