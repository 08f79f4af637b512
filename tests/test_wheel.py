"""The package as a user installs it: the wheel built from this checkout, installed with no
extras into a fresh virtualenv (its dependencies come from the package registry), runs a
task on a real OpenAI-compatible server (llama.cpp's, started from the development
environment) with no llama.cpp, chromadb or Streamlit installed and no model downloaded;
the parts it lacks say which extra to install."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from tierflow.agents.server import EmbeddedServer

from tests.conftest import catalog_model_path

pytestmark = pytest.mark.real_llm

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DATA = (
    "tierflow/agents/prompts/plan.system.j2",
    "tierflow/agents/data/",
    "tierflow/evals/data/memory/questions.json",
    "tierflow/evals/data/batch/sources.json",
    "tierflow/graphs/examples/support_docs/billing.md",
    "tierflow/ui/app.py",
    "tierflow/ui/screens/memory.py",
    "tierflow/py.typed",
)
OPTIONAL = ("llama_cpp", "chromadb", "onnxruntime", "streamlit", "pandas", "pypdf", "ray", "sklearn")


def run(command: list[str], **options: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=False, **options)  # type: ignore[call-overload,no-any-return]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    built = run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(ROOT)],
        timeout=600,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (path,) = dist.glob("tierflow-*.whl")
    return path


@pytest.fixture(scope="module")
def fresh(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtualenv with the wheel and its base dependencies only."""
    venv = tmp_path_factory.mktemp("fresh") / "venv"
    assert run([sys.executable, "-m", "venv", str(venv)]).returncode == 0
    installed = run([str(venv / "bin" / "pip"), "install", "--quiet", str(wheel)], timeout=900)
    assert installed.returncode == 0, (
        "installing the wheel's dependencies from the package registry failed:\n" + installed.stderr[-3000:]
    )
    return venv


@pytest.fixture(scope="module")
def llm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    log = tmp_path_factory.mktemp("server") / "server.log"
    model = catalog_model_path("qwen2.5-coder-1.5b")
    with EmbeddedServer(model, alias="remote-llm", log_path=log, n_ctx=4096, n_threads=2) as running:
        yield running


def test_the_wheel_holds_the_package_data_and_the_licence(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    for expected in PACKAGE_DATA:
        assert any(name.startswith(expected) for name in names), expected
    assert any(name.endswith("licenses/LICENSE") for name in names)
    assert not any(name.startswith("tierflow/evals/results/") for name in names)  # results are the user's


def test_the_base_install_runs_a_task_on_a_remote_llm_without_local_models(
    fresh: Path, llm_server: EmbeddedServer, tmp_path: Path
) -> None:
    python, tierflow = str(fresh / "bin" / "python"), str(fresh / "bin" / "tierflow")
    probe = f"import importlib.util as u; print([m for m in {OPTIONAL!r} if u.find_spec(m)])"
    assert run([python, "-c", probe]).stdout.strip() == "[]"  # no extra came with the base package
    assert run([tierflow, "--version"]).stdout.startswith("tierflow ")

    models = tmp_path / "models"
    env = {key: value for key, value in os.environ.items() if not key.startswith(("TIERFLOW_", "OPENAI_"))}
    env.update(
        TIERFLOW_DATA_DIR=str(tmp_path / "data"),
        TIERFLOW_MODELS_DIR=str(models),
        TIERFLOW_LLM_BASE_URL=llm_server.base_url,
        TIERFLOW_LLM_MODEL="remote-llm",
        TIERFLOW_LLM_RESPONSE_FORMAT="llamacpp",
        XDG_CONFIG_HOME=str(tmp_path / "config"),
    )
    result = run([tierflow, "run", "What is 17 * 23 + 4?", "--policy", "llm", "--json"], env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    output = json.loads(result.stdout)
    assert output["status"] == "succeeded" and "395" in output["answer"]
    assert output["stats"]["slm_calls"] == 0
    assert not models.exists() or not any(models.iterdir())  # no model was fetched
    assert "pip install 'tierflow[memory]'" in result.stderr  # the decisions memory said why it is off

    tiered = run([tierflow, "run", "What is 2 + 2?", "--policy", "tiered"], env=env, timeout=300)
    assert tiered.returncode == 1 and "pip install 'tierflow[local]'" in tiered.stderr
    console = run([tierflow, "ui"], env=env, timeout=60)
    assert console.returncode == 1 and "pip install 'tierflow[ui]'" in console.stderr
    batch = run([tierflow, "summarize", str(tmp_path)], env=env, timeout=60)
    assert batch.returncode == 1 and "pip install 'tierflow[batch]'" in batch.stderr
    for text in (tiered.stderr, console.stderr, batch.stderr):
        assert "Traceback" not in text
