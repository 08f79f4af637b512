"""`tierflow summarize` and `tierflow jobs` as a user runs them, on the inputs that must get
a clear error before any model loads (real models: tests/test_batch_real.py)."""

import json
from pathlib import Path

from tests.test_cli import no_traceback, tierflow


def test_summarize_with_nothing_to_read_is_a_usage_error(tmp_path: Path) -> None:
    result = tierflow("summarize")
    no_traceback(result)
    assert result.returncode == 2 and "nothing to summarize" in result.stderr

    missing = tierflow("summarize", str(tmp_path / "no-such-folder"))
    no_traceback(missing)
    assert missing.returncode == 2 and "no-such-folder" in missing.stderr and "matches no" in missing.stderr

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.xlsx").write_bytes(b"PK")  # only unsupported files
    none = tierflow("summarize", str(empty))
    no_traceback(none)
    assert none.returncode == 2 and "recursively" in none.stderr


def test_summarize_refuses_an_unknown_backend(tmp_path: Path) -> None:
    result = tierflow("summarize", str(tmp_path), "--backend", "spark")
    no_traceback(result)
    assert result.returncode == 2 and "--backend local or --backend ray" in result.stderr


def test_summarize_says_how_often_it_restarts_its_model_processes(tmp_path: Path) -> None:
    from tierflow.batch.job import RECYCLE_AFTER

    helped = tierflow("summarize", "--help", env={"COLUMNS": "300"})  # the option's help on one line
    assert "--recycle-after" in helped.stdout and f"(default {RECYCLE_AFTER})" in helped.stdout
    negative = tierflow("summarize", str(tmp_path), "--recycle-after", "-1")
    no_traceback(negative)
    assert negative.returncode == 2 and "--recycle-after" in negative.stderr


def test_jobs_list_and_show_without_jobs(tmp_path: Path) -> None:
    listed = tierflow("jobs", "list")
    no_traceback(listed)
    assert listed.returncode == 0 and "no batch jobs yet" in listed.stderr
    assert json.loads(tierflow("jobs", "list", "--json").stdout) == []
    shown = tierflow("jobs", "show", "abc123")
    no_traceback(shown)
    assert shown.returncode == 2 and "no job matches 'abc123'" in shown.stderr and "jobs list" in shown.stderr


def test_summarize_resume_of_an_unknown_job_is_clear() -> None:
    result = tierflow("summarize", "--resume", "feedbeef")
    no_traceback(result)
    assert result.returncode == 2 and "no job matches 'feedbeef'" in result.stderr
