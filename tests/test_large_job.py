"""The large-job harness: a derived corpus made of real passages, and a job run, sampled,
killed and resumed as `tierflow eval large-job` does (on scripted tiers)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tierflow.evals.batch_corpus import CORPUS_DIR
from tierflow.evals.large_job import (
    STATE,
    derived_corpus,
    growth,
    kept_environment,
    large_job,
    large_job_markdown,
    memory_over_time,
    process_part,
    process_tree_mib,
    process_tree_parts,
    stretches,
)
from tierflow.records import Progress

ORIGINALS = sorted(p for p in CORPUS_DIR.iterdir() if p.suffix in {".txt", ".md"})[:3]


def test_the_derived_corpus_is_the_originals_and_real_passages_of_them(tmp_path: Path) -> None:
    files = derived_corpus(tmp_path / "a", ORIGINALS, count=12, seed=3)
    again = derived_corpus(tmp_path / "b", ORIGINALS, count=12, seed=3)
    assert len(files) == 12 and [p.name for p in files] == [p.name for p in again]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(files, again, strict=True))
    originals = "\n".join(p.read_text(encoding="utf-8") for p in ORIGINALS)
    for derived in files[len(ORIGINALS) :]:
        paragraphs = derived.read_text(encoding="utf-8").strip().split("\n\n")
        assert all(p.strip() in originals for p in paragraphs)  # real paragraphs, not invented ones


def test_passages_are_cut_to_the_sizes_asked_and_measured(tmp_path: Path) -> None:
    from tierflow.evals.large_job import corpus_sizes

    files = derived_corpus(tmp_path, ORIGINALS, count=40, seed=2, sizes=(600, 1200))
    for derived in files[len(ORIGINALS) :]:
        paragraphs = [p.strip() for p in derived.read_text(encoding="utf-8").split("\n\n")]
        before_last = sum(len(p) for p in paragraphs[:-1])
        assert before_last < 1200 and before_last + len(paragraphs[-1]) >= 600
    sizes = corpus_sizes(tmp_path)
    assert 600 <= sizes["shortest_passage"] <= sizes["longest_passage"]
    assert sizes["characters"] > sum(p.stat().st_size for p in files[len(ORIGINALS) :]) // 2
    table = large_job_markdown({"documents": 40, "sizes": sizes, "runs": {}})
    assert f"passages of them ({sizes['shortest_passage']:,} to" in table
    with pytest.raises(ValueError, match="shortest <= longest"):
        derived_corpus(tmp_path / "bad", ORIGINALS, count=5, sizes=(900, 800))


def test_memory_of_a_process_tree_is_read_from_proc() -> None:
    assert process_tree_mib(os.getpid()) > 10


def test_a_child_started_from_another_thread_is_counted(tmp_path: Path) -> None:
    """An embedded server is started from a worker thread, and /proc lists such a child under
    that thread only: the tree's memory must still hold it (it once missed a 2 GB LLM server)."""
    holder = "import time; block = b'x' * (200 * 2**20); time.sleep(60)"
    script = (
        "import subprocess, sys, threading, time\n"
        "children = []\n"
        f"start = lambda: children.append(subprocess.Popen([sys.executable, '-c', {holder!r}]))\n"
        "thread = threading.Thread(target=start); thread.start(); thread.join()\n"
        "print(children[0].pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and process_tree_mib(child) < 200:
            time.sleep(0.2)
        assert process_tree_mib(child) >= 200
        assert process_tree_mib(parent.pid) >= process_tree_mib(child) + 5  # the parent and its child
        parts = process_tree_parts(parent.pid)
        assert set(parts) == {"driver", "other"} and parts["other"] >= 200  # which of them holds it
    finally:
        parent.kill()
        parent.wait()
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)


def test_a_job_is_sampled_killed_and_resumed(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    derived_corpus(corpus, ORIGINALS, count=10, seed=1)
    command = [sys.executable, "-m", "tests.large_job_run"]
    reports: list[Progress] = []
    run = large_job(
        corpus, tmp_path / "work", command=command, kill_after=3, interval=0.2, on_progress=reports.append
    )
    assert run["exit_code"] == 0, run["error"]
    # each finished document once, in order, killed and resumed or not
    assert [(r.done, r.total, r.outcome) for r in reports] == [(n, 10, "finished") for n in range(1, 11)]
    assert run["documents"] == 10 and run["succeeded"] == 10
    assert run["killed_after"] >= 3 and run["resume_seconds_to_next_document"] > 0
    assert run["database_mib"] > 0 and run["memory"]["peak_mib"] > 10
    assert run["samples"] and all(len(sample) == 4 and "driver" in sample[3] for sample in run["samples"])
    assert len(run["starts"]) == 2 and run["starts"][0] == 0  # begun, then resumed after the kill
    table = large_job_markdown({"documents": 10, "runs": {"local": run}})
    assert "| local | 10 | 10 |" in table and "killed after" in table


def test_memory_over_time_is_the_peak_of_each_span_of_documents() -> None:
    # [seconds, MiB, documents done]: loading (0 done), then a step up after 12 documents
    samples = [[0.0, 10.0, 0], [1.0, 900.0, 3], [2.0, 950.0, 10], [3.0, 940.0, 11], [4.0, 1200.0, 20]]
    assert memory_over_time(samples, parts=2) == [(10, 950.0), (20, 1200.0)]
    # a span with no sample is absent, not zero; fewer documents than spans: a span a document
    assert memory_over_time([[0.0, 5.0, 1], [1.0, 7.0, 3]], parts=10) == [(1, 5.0), (3, 7.0)]
    assert memory_over_time([]) == []
    run = {"documents": 20, "succeeded": 20, "seconds": 60.0, "documents_per_minute": 20.0,
           "database_mib": 1.0, "memory": {"peak_mib": 1200.0, "mib_per_100_documents": 0.0},
           "samples": samples}  # fmt: skip
    table = large_job_markdown({"documents": 20, "runs": {"local": run}})
    assert "Peak memory of local by documents done: 2: 10, 4: 900, 10: 950, 12: 940, 20: 1,200 MiB." in table


def test_growth_is_measured_while_the_processes_run_not_across_their_restarts() -> None:
    """Memory that grows 10 MiB per 100 documents in each run of the processes, each restart
    freeing it: a slope across the restarts would read it as flat."""

    def stretch(first: int, count: int, seconds: float) -> list[list[object]]:
        return [
            [seconds + d, 1000.0 + 0.1 * d, first + d, {"driver": 400.0 + 0.1 * d, "server x": 600.0}]
            for d in range(0, count, 5)
        ]

    samples = [[0.0, 50.0, 0, {"driver": 50.0}], *stretch(0, 200, 1.0), [300.0, 60.0, 200, {"driver": 60.0}]]
    samples += stretch(200, 200, 301.0)
    starts = [0, 41]
    assert [len(s) for s in stretches(samples, starts)] == [41, 41]
    assert growth(samples, starts) == pytest.approx(10.0)
    assert growth(samples, starts, "driver") == pytest.approx(10.0)
    assert growth(samples, starts, "server x") == pytest.approx(0.0)
    assert stretches(samples) == stretches(samples, starts)  # found again from the drop, if not kept
    assert growth(samples[:3]) is None  # nothing past the warm-up
    server = ["python", "-m", "llama_cpp.server", "--model", "/m/qwen-1.5b.gguf"]
    assert process_part(server) == "server qwen-1.5b"
    worker = ["python", "-c", "from multiprocessing.spawn import spawn_main"]
    assert process_part(worker) == "worker processes"
    # samples of totals alone (an older harness) before the ones by process: the text says
    # which documents the growth by process covers
    older = [[1.0 + d, 900.0, d, {"driver": 900.0}] for d in range(0, 200, 5)]
    run = {
        "documents": 400,
        "succeeded": 400,
        "seconds": 600.0,
        "documents_per_minute": 40.0,
        "database_mib": 1.0,
        "samples": older + stretch(200, 200, 301.0),
        "memory": {
            "peak_mib": 1020.0,
            "mib_per_100_documents": 10.0,
            "by_part": {"driver": 10.0, "other": -0.01},
        },
    }
    table = large_job_markdown({"documents": 400, "runs": {"local": run}})
    assert (
        "Growth of local by process (documents 200 to 395, sampled by process): driver +10.0, other +0.0"
        in table
    )


def test_a_stopped_evaluation_goes_on_where_its_job_was(tmp_path: Path) -> None:
    """The evaluation itself killed with its job (a session that ends, a machine that
    restarts): called again on its work directory, it resumes the job and counts on from the
    time the job had run."""
    corpus, work = tmp_path / "corpus", tmp_path / "work"
    derived_corpus(corpus, ORIGINALS, count=10, seed=1)
    command = [sys.executable, "-m", "tests.large_job_run"]
    script = (
        "import sys; from pathlib import Path; from tierflow.evals.large_job import large_job; "
        f"large_job(Path({str(corpus)!r}), Path({str(work)!r}), command={command!r}, interval=0.2)"
    )
    environment = {**os.environ, "LARGE_JOB_CALL_SECONDS": "0.3"}
    harness = subprocess.Popen([sys.executable, "-c", script], env=environment, start_new_session=True)
    state = work / STATE
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and harness.poll() is None:
        samples = json.loads(state.read_text(encoding="utf-8"))["samples"] if state.exists() else []
        if samples and samples[-1][2] >= 2:
            break
        time.sleep(0.2)
    os.killpg(harness.pid, signal.SIGKILL)  # the harness and its job, as a machine's end does
    harness.wait()
    before = json.loads(state.read_text(encoding="utf-8"))["samples"]
    assert before and before[-1][2] < 10, "the job finished before it could be stopped"

    run = large_job(corpus, work, command=command, interval=0.2)
    assert run["exit_code"] == 0, run["error"]
    assert run["succeeded"] == 10 and run["evaluation_resumed"] == 1
    assert run["samples"][: len(before)] == before
    times = [sample[0] for sample in run["samples"]]
    assert times == sorted(times) and run["seconds"] >= before[-1][0]
    assert "went on 1 time " in large_job_markdown({"documents": 10, "runs": {"local": run}})


def test_an_evaluation_keeps_the_code_it_began_with_and_records_each_resume(tmp_path: Path) -> None:
    began = {"created_at": "2026-12-05T20:46:44+00:00", "git_commit": "a" * 40, "git_dirty": False}
    assert kept_environment(tmp_path, began) == began
    later = {"created_at": "2026-12-05T21:46:59+00:00", "git_commit": "b" * 40, "git_dirty": True, "x": 1}
    env = kept_environment(tmp_path, later)
    assert env["git_commit"] == "a" * 40
    assert env["resumed"] == [{"created_at": later["created_at"], "git_commit": "b" * 40, "git_dirty": True}]
    env = kept_environment(tmp_path, later)
    assert len(env["resumed"]) == 2  # kept on disk
    table = large_job_markdown({"documents": 10, "runs": {}, "environment": env})
    assert "It went on at commit bbbbbbb (2026-12-05 21:46 UTC), bbbbbbb (2026-12-05 21:46 UTC), " in table
    assert "after it began at aaaaaaa." in table and "Ray's processes" not in table
    ray = {"command": ["tierflow", "summarize", "--backend", "ray"], "documents": 1, "succeeded": 1,
           "seconds": 6.0, "documents_per_minute": 10.0, "database_mib": 0.1,
           "memory": {"peak_mib": 10.0, "mib_per_100_documents": 0.0}}  # fmt: skip
    table = large_job_markdown({"documents": 1, "runs": {"Ray, 2 nodes": ray}})
    assert "In Ray, 2 nodes, the workers are Ray's processes" in table


def test_resuming_a_large_job_evaluation_that_never_ran_exits_2(tmp_path: Path) -> None:
    from tierflow.cli import app
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, ["eval", "large-job", "--resume", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "no stopped large-job evaluation" in result.output


def test_a_large_job_with_passages_shorter_than_longest_is_refused(tmp_path: Path) -> None:
    from tierflow.cli import app
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, ["eval", "large-job", "--shortest", "900", "--longest", "800"])
    assert result.exit_code == 2 and "--shortest 900 is longer than --longest 800" in result.output


def test_a_ray_start_that_fails_says_what_ray_said_and_what_to_do() -> None:
    from tierflow.errors import TierflowError
    from tierflow.evals.large_job import _ray_start

    refused = [
        sys.executable,
        "-c",
        "import sys; sys.stderr.write('port 6390 is already in use\\n'); sys.exit(1)",
    ]
    with pytest.raises(
        TierflowError, match="could not start the Ray head: port 6390 is already in use"
    ) as error:
        _ray_start(refused, "the Ray head")
    assert "ray stop" in (error.value.hint or "") and "--resume" in (error.value.hint or "")


def test_the_two_node_cluster_starts_with_a_token_and_a_job_joins_it() -> None:
    """`ray start` twice, as a deployment starts a cluster. Ray turns token authentication on
    for a head wherever a token file exists (ray.init writes one), and then refused a second
    node that did not say RAY_AUTH_MODE=token: the eval's Ray run could never start."""
    from tierflow.evals.large_job import RAY_ENV, ray_cluster

    pytest.importorskip("ray")
    script = (
        "import sys, ray; ray.init(address=sys.argv[1], logging_level='ERROR'); "
        "print(sum(1 for node in ray.nodes() if node['Alive'])); ray.shutdown()"
    )
    with ray_cluster() as address:
        joined = subprocess.run(
            [sys.executable, "-c", script, address],
            env={**os.environ, **RAY_ENV},
            capture_output=True,
            text=True,
            timeout=180,
        )
    assert joined.returncode == 0, joined.stderr[-2000:]
    assert joined.stdout.strip().splitlines()[-1] == "2"
