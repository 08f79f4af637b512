"""Shared fixtures. Tests never touch the user's data: every run gets its own data dir, and
TIERFLOW_* variables from the caller's environment are removed. Real-model tests use the
catalog's default models from the user cache (``make models`` puts them there); a missing
model fails the test with the command that fixes it instead of skipping it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tierflow.agents.catalog import CATALOG, cached_path, is_pulled
from tierflow.memory import TraceStore
from tierflow.memory.documents import DocumentMemory
from tierflow.memory.embeddings import OfflineEmbeddings, embedding_model_dir, pull_embedding_model
from tierflow.paths import cache_dir

MODELS_DIR = cache_dir() / "models"
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")  # before chromadb imports onnxruntime


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for key in list(os.environ):
        if key.startswith(("TIERFLOW_", "OPENAI_", "OTEL_")):  # a developer's shell is not the test's
            monkeypatch.delenv(key)
    data = tmp_path / "data"
    monkeypatch.setenv("TIERFLOW_DATA_DIR", str(data))
    monkeypatch.setenv("TIERFLOW_MODELS_DIR", str(MODELS_DIR))
    monkeypatch.setenv("TIERFLOW_AUTO_PULL", "false")
    # shadow calls sample outputs at random: a test that wants them asks for them
    monkeypatch.setenv("TIERFLOW_SHADOW_RATE", "0")
    # the shipped priors are fitted for the default models; scripted tiers are another pair,
    # so a test of orchestration judges by validation alone unless it asks for the priors
    monkeypatch.setenv("TIERFLOW_STEP_PRIORS", "false")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return data


@pytest.fixture(autouse=True)
def real_models_only_when_marked(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A test that would load a GGUF or start the LLM server fails unless it is marked as a
    real-model test: unit tests must not depend on models (or pay for them) by accident."""
    from tierflow.agents.server import EmbeddedServer
    from tierflow.agents.slm import LlamaCppModel

    def refuse(marker: str) -> Any:
        def blocked(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError(f"this test reached a real model: mark it @pytest.mark.{marker}")

        return blocked

    if request.node.get_closest_marker("real_slm") is None:
        monkeypatch.setattr(LlamaCppModel, "_load_locked", refuse("real_slm"))
    if request.node.get_closest_marker("real_llm") is None:
        monkeypatch.setattr(EmbeddedServer, "start", refuse("real_llm"))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[TraceStore]:
    trace_store = TraceStore.from_url(f"sqlite:///{tmp_path / 'traces.db'}", secrets=["sk-test-SECRET-42"])
    yield trace_store
    trace_store.engine.dispose()


def catalog_model_path(name: str) -> Path:
    model = CATALOG[name]
    if not is_pulled(model, MODELS_DIR):
        pytest.fail(f"model {name} is not in {MODELS_DIR}: run `make models` first")
    return cached_path(model, MODELS_DIR)


@pytest.fixture(scope="session")
def slm_path() -> Path:
    return catalog_model_path("qwen2.5-coder-0.5b")


@pytest.fixture(scope="session")
def model_dir() -> Path:
    """The real model, pulled once into the user cache (a no-op when it is there)."""
    return pull_embedding_model(embedding_model_dir(MODELS_DIR))


@pytest.fixture(scope="session")
def embeddings(model_dir: Path) -> OfflineEmbeddings:
    return OfflineEmbeddings(model_dir)


@pytest.fixture
def help_centre(embeddings: OfflineEmbeddings) -> DocumentMemory:
    """An in-memory document memory holding the support FAQ example's sample help centre."""
    from tierflow.graphs.examples.support_faq import SAMPLE_DOCS

    documents = DocumentMemory.open(None, embeddings)
    documents.forget_all()  # the in-memory client is shared within the process
    for path in sorted(SAMPLE_DOCS.glob("*.md")):
        documents.add(path)
    return documents
