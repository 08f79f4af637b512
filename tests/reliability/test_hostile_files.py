"""A job over 20 good reports and every hostile file of ``hostile_files`` finishes within
its bound: each good file summarized, each hostile one refused alone with its reason; and
the CLI over the same corpus, as a user other than root, exits with a status the README
promises, with no traceback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from tierflow.batch.job import JobRequest, run_job
from tierflow.batch.worker import SummaryOptions

from tests.batch_support import scripted_app
from tests.fake_openai import Endpoint, fake_openai
from tests.reliability.hostile_files import HOSTILE_REASONS, Expected, make_corpus

JOB_BOUND_S = 120.0
"""A job over the corpus on scripted tiers must finish within this (it takes seconds)."""
CLI_BOUND_S = 240.0
ALLOWED_EXIT = {0, 1, 2, 130}


def _as_root(expected: dict[str, Expected]) -> dict[str, Expected]:
    """Root reads a file whose permissions say no one may: the test says so, not hides it."""
    if os.geteuid() == 0:
        return {**expected, "unreadable.txt": Expected(None, "unreadable.txt")}
    return expected


def test_a_job_of_good_and_hostile_files_refuses_each_hostile_one_alone(tmp_path: Path, tally: Any) -> None:
    expected = _as_root(make_corpus(tmp_path / "corpus"))
    hostile = [name for name, e in expected.items() if e.reason is not None]
    with scripted_app(tmp_path / "data") as app:
        started = time.monotonic()
        report = run_job(JobRequest(inputs=[str(tmp_path / "corpus")], options=SummaryOptions()), app)
        elapsed = time.monotonic() - started
    tally(inputs_tried=len(hostile), hangs=int(elapsed > JOB_BOUND_S))
    assert elapsed < JOB_BOUND_S, elapsed
    shown = {d.name: d for d in report.documents}
    assert set(shown) == {e.shown_as for e in expected.values()}
    for name, e in expected.items():
        document = shown[e.shown_as]
        if e.reason is None:
            assert document.status == "succeeded", (name, document.reason)
        else:
            assert document.status == "failed" and (document.reason or "").startswith(e.reason), (
                name,
                document.reason,
            )
    assert all("4417" not in (d.summary or "") for d in report.documents)  # the link out: unread
    assert {e.reason for e in expected.values()} - {None} <= HOSTILE_REASONS
    markdown = report.to_markdown()
    assert "\u202e" not in markdown and "\x07" not in markdown


NO_BYPASS = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]
"""Root without its permission-bypass capabilities: a file no one may read is unreadable to
it too. (Another user cannot be used here: the interpreter lives under /root, mode 700.)"""


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) is not installed")
def test_the_cli_over_the_corpus_exits_as_promised(tmp_path: Path, tally: Any) -> None:
    """`summarize` over the corpus, with the LLM on a fake endpoint and no permission bypass:
    status 1 (some files failed), each refusal in the report, no traceback."""
    make_corpus(tmp_path / "corpus")
    with fake_openai(Endpoint(reply="Sales rose in May.")) as server:
        env = {
            **os.environ,
            "TIERFLOW_DATA_DIR": str(tmp_path / "data"),
            "TIERFLOW_MODELS_DIR": str(tmp_path / "models"),
            "TIERFLOW_AUTO_PULL": "false",
            "TIERFLOW_LLM_BASE_URL": server.base_url,
            "TIERFLOW_LLM_MODEL": "served-model",
        }
        command = [sys.executable, "-m", "tierflow", "summarize", str(tmp_path / "corpus"), "--policy", "llm"]
        started = time.monotonic()
        done = subprocess.run(
            [*(NO_BYPASS if os.geteuid() == 0 else []), *command, "--json"],
            capture_output=True,
            text=True,
            env=env,
            timeout=CLI_BOUND_S + 60,
            check=False,
        )
        elapsed = time.monotonic() - started
    tally(
        inputs_tried=1,
        hangs=int(elapsed > CLI_BOUND_S),
        bad_exit_codes=int(done.returncode not in ALLOWED_EXIT),
    )
    assert "Traceback" not in done.stderr and done.returncode == 1, done.stderr[-1500:]
    report = json.loads(done.stdout)
    reasons = {Path(d["path"]).name: d.get("reason") or "" for d in report["documents"]}
    assert reasons["unreadable.txt"].startswith("unreadable") and "permission" in reasons["unreadable.txt"]
    assert reasons["link-out.txt"].startswith("link_outside")
    assert elapsed < CLI_BOUND_S
