"""``tierflow eval large-job``: a thousand documents through ``tierflow summarize``, as a user
runs it, with its throughput, memory over time, database size, and the time to resume after
``kill -9``.

The documents are the 22 of the batch corpus (``evals/batch_corpus.py``) and passages of
them: each derived document is a run of consecutive paragraphs of one original (by default
1,500 to 9,000 characters, so one or two chunks; ``sizes`` sets the range), as ``.txt`` or
``.md``, chosen by a seeded generator (``derived_corpus``). Nothing is invented: every
sentence is a real document's. ``corpus_sizes`` measures what was written.

The job runs as its own process (``tierflow summarize DIR --json --out REPORT``) in a data
directory of its own. Every ``SAMPLE_S`` seconds the resident memory of that process and its
children (worker processes, the LLM server) is read from ``/proc``, beside the number of
documents finished, so memory can be plotted against the work done: flat is what a long job
must show. With ``kill_after`` the process is killed (SIGKILL) once that many documents have
finished, and ``--resume JOB`` started: the time until its first new document finishes is
the time to resume. With ``ray_address`` the job runs on an existing Ray cluster
(``--backend ray``), e.g. one started by ``ray_cluster``: a head and one more node process on
this machine, as a deployment would start them.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tierflow.records import OnProgress, Progress

__all__ = [
    "STATE",
    "SIZES",
    "derived_corpus",
    "corpus_sizes",
    "process_tree_mib",
    "process_tree_parts",
    "growth",
    "stretches",
    "large_job",
    "ray_cluster",
    "RAY_ENV",
    "large_job_markdown",
]

SAMPLE_S = 10.0
Sample = list[Any]
"""[seconds the job has run, MiB of its process tree, documents done, MiB by part]; samples
taken before 2026-12-06 have no parts."""
WARM_UP = 20
"""Documents a job's processes summarize after they start before their memory counts towards
its growth: the models load, and their buffers fill with the first long prompts."""
_PARAGRAPHS = re.compile(r"\n\s*\n")


SIZES = (1500, 9000)


def derived_corpus(
    out: Path,
    originals: Sequence[Path],
    count: int = 1000,
    seed: int = 0,
    sizes: tuple[int, int] = SIZES,
) -> list[Path]:
    """``count`` documents in ``out``: the originals, copied, and passages of them of about
    ``sizes`` characters (at least the shorter, unless the original is shorter; at most the
    longer plus the paragraph that reached it). The same arguments give the same files."""
    shortest, longest = sizes
    if not 0 < shortest <= longest:
        raise ValueError(f"passage sizes must be 0 < shortest <= longest, not {sizes}")
    from tierflow.tools.readers import read_document

    out.mkdir(parents=True, exist_ok=True)
    written = []
    texts = {}
    for path in originals:
        shutil.copyfile(path, out / path.name)
        written.append(out / path.name)
        texts[path.stem] = [p.strip() for p in _PARAGRAPHS.split(read_document(path).text) if p.strip()]
    rng = random.Random(seed)
    names = sorted(texts)
    for number in range(1, count - len(written) + 1):
        stem = rng.choice(names)
        paragraphs = texts[stem]
        target = rng.randint(shortest, longest)
        start = rng.randrange(len(paragraphs))
        passage: list[str] = []
        for paragraph in paragraphs[start:] + paragraphs[:start]:
            if sum(len(p) for p in passage) >= target:
                break
            passage.append(paragraph)
        suffix = rng.choice((".txt", ".md"))
        path = out / f"derived-{number:04d}-{stem}{suffix}"
        path.write_text("\n\n".join(passage) + "\n", encoding="utf-8")
        written.append(path)
    return written


def corpus_sizes(corpus: Path) -> dict[str, int]:
    """The characters of text in ``corpus``: all of them, and the shortest and the longest
    derived passage."""
    from tierflow.tools.readers import read_document

    lengths = {path.name: len(read_document(path).text) for path in sorted(corpus.iterdir())}
    derived = [n for name, n in lengths.items() if name.startswith("derived-")] or [0]
    return {
        "characters": sum(lengths.values()),
        "shortest_passage": min(derived),
        "longest_passage": max(derived),
    }


def _children(pid: int) -> list[int]:
    """The child processes of ``pid``: of every one of its threads, since a child started from
    a thread other than the main one (an embedded server, a worker pool) is listed only under
    that thread's ``/proc/PID/task/TID/children``."""
    found: list[int] = []
    try:
        threads = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return []
    for thread in threads:
        try:
            found += [int(child) for child in (thread / "children").read_text().split()]
        except OSError:
            continue
    return found


def process_tree_mib(pid: int) -> float:
    """The resident memory of process ``pid`` and all its descendants, in MiB (Linux)."""
    return sum(process_tree_parts(pid).values())


def process_tree_parts(pid: int) -> dict[str, float]:
    """The resident memory (MiB) of process ``pid`` and its descendants, by part
    (``process_part``): which process of a job grows, not only that the job does."""
    parts: dict[str, float] = {}
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            argv = Path(f"/proc/{current}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        kib = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
        part = "driver" if current == pid else process_part([a.decode("utf-8", "replace") for a in argv])
        parts[part] = parts.get(part, 0.0) + kib / 1024
        todo += _children(current)
    return parts


def process_part(argv: Sequence[str]) -> str:
    """What a process below a job's driver is, from its command line: a model server (named by
    its model file), a worker process (the file reader's among them), or another helper."""
    if "llama_cpp.server" in argv:
        model = argv[argv.index("--model") + 1] if "--model" in argv[:-1] else ""
        return f"server {Path(model).stem}".strip()
    if any("spawn_main" in arg for arg in argv):
        return "worker processes"
    return "other"


def _finished(database: Path) -> int:
    """Documents of the database's jobs that have finished (0 before the job is stored)."""
    if not database.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5) as connection:
            row = connection.execute(
                "SELECT count(*) FROM job_documents WHERE status IN ('succeeded', 'failed', 'skipped')"
            ).fetchone()
    except sqlite3.Error:
        return 0
    return int(row[0])


def _job_id(database: Path) -> str | None:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5) as connection:
        row = connection.execute("SELECT id FROM jobs ORDER BY created_at DESC LIMIT 1").fetchone()
    return str(row[0]) if row else None


class _Watch:
    """One job process, sampled every ``interval`` seconds: (seconds, MiB, documents done),
    each sample handed to ``on_sample`` (``_State.add`` keeps them where a stopped evaluation
    finds them)."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        database: Path,
        interval: float,
        t0: float,
        on_sample: Callable[[Sample], None],
    ) -> None:
        self.process, self.database, self.interval, self.t0 = process, database, interval, t0
        self.on_sample = on_sample
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set() and self.process.poll() is None:
            elapsed = round(time.monotonic() - self.t0, 1)
            parts = {part: round(mib, 1) for part, mib in process_tree_parts(self.process.pid).items()}
            self.on_sample([elapsed, round(sum(parts.values()), 1), _finished(self.database), parts])
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class _State:
    """What a large-job evaluation has seen of its job so far, in ``work/STATE``: rewritten with
    every sample, so that an evaluation that is itself stopped (the machine restarted, the
    session ended) goes on where it was, counting only the time its job ran."""

    def __init__(self, path: Path) -> None:
        self.path = path
        stored = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        self.samples: list[Sample] = stored.get("samples", [])
        self.starts: list[int] = stored.get("starts") or restarts(self.samples)
        """The index of the first sample of each start of the job's processes."""
        self.killed_after: int | None = stored.get("killed_after")
        self.resume_seconds: float | None = stored.get("resume_seconds_to_next_document")
        self.evaluation_resumed: int = stored.get("evaluation_resumed", 0)

    @property
    def seconds(self) -> float:
        """The time the job has run so far."""
        return self.samples[-1][0] if self.samples else 0.0

    def started(self) -> None:
        """The job's processes start (again): the next sample begins a stretch."""
        self.starts.append(len(self.samples))
        self.save()

    def add(self, sample: Sample) -> None:
        self.samples.append(sample)
        self.save()

    def save(self) -> None:
        data = {
            "samples": self.samples,
            "starts": self.starts,
            "killed_after": self.killed_after,
            "resume_seconds_to_next_document": self.resume_seconds,
            "evaluation_resumed": self.evaluation_resumed,
        }
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(data), encoding="utf-8")
        temporary.replace(self.path)


STATE = "large_job_state.json"

RESUMED = ("created_at", "git_commit", "git_dirty")
"""What an evaluation's environment records of each time it goes on: when, and on which code."""


def kept_environment(work: Path, now: dict[str, Any]) -> dict[str, Any]:
    """The environment an evaluation in ``work`` began with (``now`` if it begins now), kept
    across ``--resume`` in ``work/environment.json``, with ``resumed``: when each later start
    went on, and on which code (``now``'s)."""
    path = work / "environment.json"
    if path.exists():
        env: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        env.setdefault("resumed", []).append({key: now.get(key) for key in RESUMED})
    else:
        work.mkdir(parents=True, exist_ok=True)
        env = now
    path.write_text(json.dumps(env), encoding="utf-8")
    return env


def large_job(
    corpus: Path,
    work: Path,
    *,
    command: Sequence[str] | None = None,
    options: Sequence[str] = (),
    kill_after: int | None = None,
    env: dict[str, str] | None = None,
    interval: float = SAMPLE_S,
    on_progress: OnProgress | None = None,
    stage: str = "large job",
) -> dict[str, Any]:
    """Summarize ``corpus`` as one job in data directory ``work`` (see the module).
    ``command``: the job's command line before its inputs (default: this Python's
    ``tierflow summarize``); ``options``: more of its options (``--policy slm``, ``--backend ray``).
    Called again on a ``work`` whose evaluation was stopped, it resumes that job (``--resume``)
    and goes on counting from the time the job had run. ``on_progress`` hears of each finished
    document (``stage``, done of the corpus's), as the samples find them."""
    base = list(command or [sys.executable, "-m", "tierflow", "summarize"])
    work.mkdir(parents=True, exist_ok=True)
    report = work / "report.json"
    database = work / "tierflow.db"
    state = _State(work / STATE)
    total = sum(1 for _ in corpus.iterdir())
    reported = int(state.samples[-1][2]) if state.samples else 0

    def sample(values: Sample) -> None:
        nonlocal reported
        state.add(values)
        if on_progress is not None:
            for done in range(reported + 1, int(values[2]) + 1):
                on_progress(Progress(stage, done, total, outcome="finished"))
        reported = max(reported, int(values[2]))

    environment = {**os.environ, **(env or {}), "TIERFLOW_DATA_DIR": str(work)}
    outputs = ["--json", "--out", str(report)]

    def resumed(job: str | None) -> list[str]:
        return [*base, "--resume", str(job), *outputs, *options]

    job = _job_id(database) if database.exists() else None
    if job is None:
        argv = [*base, str(corpus), *outputs, "--no-synthesis", *options]
    else:  # an evaluation stopped part-way: its job goes on
        argv = resumed(job)
        state.evaluation_resumed += 1
    t0 = time.monotonic() - state.seconds
    state.started()
    process = subprocess.Popen(argv, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    watch = _Watch(process, database, interval, t0, sample)
    result: dict[str, Any] = {"command": [Path(argv[0]).name, *argv[1:]]}
    if kill_after is not None and state.killed_after is None:
        while process.poll() is None and _finished(database) < kill_after:
            time.sleep(0.2)
        done_before = _finished(database)
        process.send_signal(signal.SIGKILL)
        process.wait()
        watch.stop()
        state.killed_after = done_before
        state.save()
        restarted = time.monotonic()
        argv = resumed(_job_id(database))
        state.started()
        process = subprocess.Popen(argv, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        watch = _Watch(process, database, interval, t0, sample)
        while process.poll() is None and _finished(database) <= done_before:
            time.sleep(0.1)
        state.resume_seconds = round(time.monotonic() - restarted, 1)
        state.save()
    _, errors = process.communicate()
    seconds = time.monotonic() - t0
    watch.stop()
    data = json.loads(report.read_text(encoding="utf-8")) if report.exists() else {}
    totals = data.get("totals", {})
    result.update(
        {
            "killed_after": state.killed_after,
            "resume_seconds_to_next_document": state.resume_seconds,
            "evaluation_resumed": state.evaluation_resumed,
            "exit_code": process.returncode,
            "error": errors.decode("utf-8", "replace")[-2000:] if process.returncode else None,
            "documents": totals.get("documents", 0),
            "succeeded": totals.get("succeeded", 0),
            "failed": totals.get("failed", 0),
            "seconds": round(seconds, 1),
            "documents_per_minute": round(60 * totals.get("succeeded", 0) / seconds, 2) if seconds else 0.0,
            "slm_share": totals.get("slm_share"),
            "llm_tokens": totals.get("llm_tokens", 0),
            "database_mib": round(_database_bytes(database) / 2**20, 3),
            "memory": _memory(state.samples, state.starts),
            "samples": state.samples,
            "starts": state.starts,
        }
    )
    return result


def _database_bytes(database: Path) -> int:
    """The trace database's size on disk, its write-ahead log included."""
    files = [database, database.with_name(database.name + "-wal")]
    return sum(path.stat().st_size for path in files if path.exists())


def _memory(samples: list[Sample], starts: Sequence[int] | None = None) -> dict[str, Any]:
    """Peak memory, and its growth per 100 documents (``growth``), of the whole tree and of
    each part sampled."""
    if not samples:
        return {"peak_mib": None, "mib_per_100_documents": None, "by_part": {}}
    parts = sorted({part for sample in samples if len(sample) > 3 for part in sample[3]})
    by_part = {part: growth(samples, starts, part) for part in parts}
    return {
        "peak_mib": max(s[1] for s in samples),
        "mib_per_100_documents": growth(samples, starts),
        "by_part": {part: slope for part, slope in by_part.items() if slope is not None},
    }


def restarts(samples: Sequence[Sample]) -> list[int]:
    """Where the job's processes started again, for samples recorded before the starts were
    kept: the first sample, and each one under half the memory of the one before it (a
    process just started has not loaded its models)."""
    if not samples:
        return []
    return [0, *(i for i in range(1, len(samples)) if samples[i][1] < samples[i - 1][1] / 2)]


def stretches(samples: Sequence[Sample], starts: Sequence[int] | None = None) -> list[list[Sample]]:
    """The samples of each time the job's processes ran without a restart."""
    bounds = sorted({0, *(starts if starts is not None else restarts(samples))} | {len(samples)})
    return [list(samples[a:b]) for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


def growth(
    samples: Sequence[Sample], starts: Sequence[int] | None = None, part: str | None = None
) -> float | None:
    """MiB per 100 documents that the memory (of ``part``, or of the whole tree) grows while the
    job's processes run: the least-squares slope on documents done within each stretch
    (``stretches``) after its first ``WARM_UP`` documents, the stretches pooled. A restart
    frees what a process held, so a slope across restarts would hide growth; None without
    enough samples."""
    covariance = variance = 0.0
    for stretch in stretches(samples, starts):
        first = stretch[0][2]
        points = [
            (float(s[2]), float(s[1] if part is None else s[3][part]))
            for s in stretch
            if s[2] >= first + WARM_UP and (part is None or (len(s) > 3 and part in s[3]))
        ]
        if len(points) < 2:
            continue
        mean_x = sum(x for x, _ in points) / len(points)
        mean_y = sum(y for _, y in points) / len(points)
        covariance += sum((x - mean_x) * (y - mean_y) for x, y in points)
        variance += sum((x - mean_x) ** 2 for x, _ in points)
    return round(100 * covariance / variance, 1) if variance else None


def memory_over_time(samples: list[Sample], parts: int = 10) -> list[tuple[int, float]]:
    """The peak memory (MiB) in each of ``parts`` equal spans of the documents done, as
    (documents done at the span's end, peak): memory over the job's course, flat or growing."""
    if not samples:
        return []
    total = int(samples[-1][2])
    step = max(1, -(-total // parts))
    spans: dict[int, float] = {}
    for _, mib, done, *_ in samples:
        end = min(total, step * max(1, -(-int(done) // step)))
        spans[end] = max(spans.get(end, 0.0), mib)
    return sorted(spans.items())


RAY_ENV = {"RAY_AUTH_MODE": "token"}
"""The environment of every process of ``ray_cluster``'s cluster, and of the job that joins it."""


@contextmanager
def ray_cluster(cpus_per_node: int = 1) -> Iterator[str]:
    """A Ray cluster of a head and one more node process on this machine, started with
    ``ray start`` as a deployment starts them, with token authentication (``RAY_ENV``; the
    token in ``~/.ray/auth_token``, made if there is none); its address. Stopped on leaving.

    Ray (2.59 on) turns token authentication on for a head wherever a token file exists, and a
    node that joins without ``RAY_AUTH_MODE=token`` is then refused: every process here, and the
    job (``large_job(env=RAY_ENV)``), says it."""
    port = 6390
    ray = [sys.executable, "-m", "ray.scripts.scripts"]
    env = {**os.environ, **RAY_ENV}
    # prints the token: captured, never shown
    subprocess.run(
        [*ray, "get-auth-token", "--generate"], capture_output=True, env=env, timeout=180, check=False
    )
    head = [
        *ray,
        "start",
        "--head",
        f"--port={port}",
        f"--num-cpus={cpus_per_node}",
        "--include-dashboard=false",
    ]
    _ray_start(head, f"the Ray head on port {port}", env)
    try:
        address = f"127.0.0.1:{port}"
        node = [*ray, "start", f"--address={address}", f"--num-cpus={cpus_per_node}"]
        _ray_start(node, f"a second Ray node joining {address}", env)
        yield address
    finally:
        subprocess.run([*ray, "stop", "--force"], capture_output=True, env=env, timeout=180, check=False)


def _ray_start(argv: list[str], what: str, env: dict[str, str] | None = None) -> None:
    """``ray start``, or an error saying what Ray said (a cluster left running by an evaluation
    that was killed holds the port)."""
    from tierflow.errors import TierflowError

    done = subprocess.run(argv, capture_output=True, env=env, timeout=180, check=False)
    if done.returncode != 0:
        said = (done.stderr or done.stdout).decode("utf-8", "replace").strip().splitlines()[-3:]
        raise TierflowError(
            f"`ray start` could not start {what}: {' / '.join(said) or f'exit {done.returncode}'}",
            hint="If a Ray cluster is still running here (an evaluation killed during its Ray run "
            "leaves one), `ray stop` stops it; then go on with --resume.",
        )


def _parts_span(samples: Sequence[Sample]) -> str:
    """Which documents the by-process samples cover, where the first samples held only totals."""
    done = [int(sample[2]) for sample in samples if len(sample) > 3 and len(sample[3]) > 1]
    if not done or done[0] == min(int(sample[2]) for sample in samples):
        return ""
    return f" (documents {done[0]:,} to {done[-1]:,}, sampled by process)"


def large_job_markdown(data: dict[str, Any]) -> str:
    rows = [
        "| run | documents | succeeded | time | documents/min | peak memory | memory growth | database "
        "| resume |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, run in data["runs"].items():
        memory = run["memory"]
        resume = (
            f"{run['resume_seconds_to_next_document']:.0f} s (killed after {run['killed_after']})"
            if run.get("killed_after") is not None
            else "–"
        )
        rows.append(
            f"| {label} | {run['documents']} | {run['succeeded']} | {run['seconds'] / 60:.0f} min | "
            f"{run['documents_per_minute']:.2f} | {memory['peak_mib'] or 0:,.0f} MiB | "
            f"{memory['mib_per_100_documents'] or 0:+.1f} MiB per 100 documents | "
            f"{run['database_mib']:.2f} MiB | {resume} |"
        )
    by_part = "".join(
        f"\n\nGrowth of {label} by process{_parts_span(run['samples'])}: "
        + ", ".join(
            f"{part} {round(slope, 1) or 0.0:+.1f}" for part, slope in run["memory"]["by_part"].items()
        )
        + " MiB per 100 documents."
        for label, run in data["runs"].items()
        if run["memory"].get("by_part")
    )
    over_time = "".join(
        f"\n\nPeak memory of {label} by documents done: "
        + ", ".join(f"{done:,}: {mib:,.0f}" for done, mib in memory_over_time(run["samples"]))
        + " MiB."
        for label, run in data["runs"].items()
        if run.get("samples")
    )
    resumed = {
        label: run["evaluation_resumed"]
        for label, run in data["runs"].items()
        if run.get("evaluation_resumed")
    }
    stops = "".join(
        f" The evaluation of {label} was itself stopped and went on {count} time{'s' * (count != 1)} "
        "(`--resume`): its time "
        "is the time the job ran."
        for label, count in resumed.items()
    )
    goes_on = data.get("environment", {}).get("resumed") or []
    code = (
        " It went on at commit "
        + ", ".join(
            f"{(r['git_commit'] or '?')[:7]} ({r['created_at'][:16].replace('T', ' ')} UTC)" for r in goes_on
        )
        + f", after it began at {(data['environment'].get('git_commit') or '?')[:7]}."
        if goes_on
        else ""
    )
    sizes = data.get("sizes")
    made = (
        f"The batch corpus's 22 documents and passages of them ({sizes['shortest_passage']:,} to "
        f"{sizes['longest_passage']:,} characters), {sizes['characters']:,} characters in all. "
        if sizes
        else ""
    )
    on_ray = [label for label, run in data["runs"].items() if "ray" in run.get("command", [])]
    ray_memory = "".join(
        f" In {label}, the workers are Ray's processes, started by its nodes and not by the job: its "
        "memory is the driver's and the embedded LLM server's."
        for label in on_ray
    )
    return (
        f"# A large job: {data['documents']} documents through `tierflow summarize`\n\n"
        f"{made}Memory is the job's process and its children, sampled every "
        f"{data.get('sample_s', SAMPLE_S):g} s (`evals/large_job.py`). Its growth is the slope of "
        f"memory on documents done while the processes run, after their first {WARM_UP} documents "
        f"(a restart frees what they held).{ray_memory}{stops}{code}\n\n"
        + "\n".join(rows)
        + by_part
        + over_time
        + "\n"
    )
