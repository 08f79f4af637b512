"""Malformed input at the CLI gets one clear error line and a hint, never a traceback."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.test_cli import no_traceback, tierflow


def files(tmp_path: Path) -> dict[str, Path]:
    made = {
        "bad.toml": b'slm_model = "x\n[[[',
        "binary.toml": bytes(range(256)) * 4,
        "afile": b"",
        "not-a-db.db": b"this is not SQLite" * 100,
    }
    for name, data in made.items():
        (tmp_path / name).write_bytes(data)
    return {name: tmp_path / name for name in made}


CASES = [
    # (arguments, environment, what the error says)
    (["--config", "{bad.toml}", "config"], {}, "is not valid TOML"),
    (["--config", "{binary.toml}", "config"], {}, "is not valid TOML"),
    (["--config", "{missing.toml}", "config"], {}, "does not exist"),
    (["config"], {"TIERFLOW_POLICY": "{bad"}, "TIERFLOW_POLICY take JSON"),
    (["config"], {"TIERFLOW_POLICY": "[1, 2]"}, "invalid settings: policy"),
    (["config"], {"TIERFLOW_MAX_STEPS": "lots"}, "max_steps"),
    (["runs", "list"], {"TIERFLOW_DATABASE_URL": "sqlite:////proc/nope/x.db"}, "cannot create the database"),
    (["runs", "list"], {"TIERFLOW_DATABASE_URL": "nonsense"}, "is not valid"),
    (["runs", "list"], {"TIERFLOW_DATABASE_URL": "mysql://u:p@127.0.0.1:1/x"}, "driver"),
    (["runs", "list"], {"TIERFLOW_DATABASE_URL": "postgresql+psycopg://u:p@127.0.0.1:1/x"}, "cannot open"),
    (
        ["runs", "list"],
        {"TIERFLOW_DATABASE_URL": "sqlite:///{not-a-db.db}"},
        "cannot open the trace database",
    ),
    (["runs", "list"], {"TIERFLOW_DATA_DIR": "{afile}"}, "cannot create the database's folder"),
    (["runs", "list"], {"TIERFLOW_DATA_DIR": "/proc/nope"}, "cannot create the database's folder"),
    (["run", "\udcff\udcfe task", "--policy", "llm"], {}, "not valid UTF-8"),
    (["run", "   ", "--policy", "llm"], {}, "the task is empty"),
    (["runs", "show", "no-such-run"], {}, "no-such-run"),
    (["resume", "no-such-run"], {}, "no run matches"),
]


@pytest.mark.parametrize(("arguments", "environment", "says"), CASES, ids=[c[2] for c in CASES])
def test_malformed_input_gets_a_clear_error(
    tmp_path: Path, arguments: list[str], environment: dict[str, str], says: str, tally: Any
) -> None:
    tally(inputs_tried=1)
    paths = {name: str(path) for name, path in files(tmp_path).items()}
    paths["missing.toml"] = str(tmp_path / "missing.toml")

    def fill(text: str) -> str:
        for name, path in paths.items():
            text = text.replace("{" + name + "}", path)
        return text

    env = {key: fill(value) for key, value in environment.items()}
    result = tierflow(*[fill(a) for a in arguments], env=env)  # a lone surrogate goes out as raw bytes
    no_traceback(result)
    assert result.returncode != 0
    assert says in result.stderr, result.stderr
    assert "error" in result.stderr


def test_a_misspelled_variable_is_named_with_its_likely_meaning() -> None:
    result = tierflow("config", env={"TIERFLOW_POLCY": "llm", "TIERFLOW_POLICY__ANSWER": "llm"})
    assert result.returncode == 0
    assert "TIERFLOW_POLCY is not a setting (did you mean TIERFLOW_POLICY?)" in result.stderr
    assert "POLICY__ANSWER" not in result.stderr  # a node override is a setting
    assert os.environ.get("TIERFLOW_POLCY") is None
