"""Users' documents in the long-term memory, on a real chromadb store with the offline
MiniLM embeddings: chunks that the embedding model reads whole, idempotent ingest,
replaced and forgotten sources, local-only collections, a persistent store that survives
a restart, and no download or write outside the configured folders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tierflow.evals.batch_corpus import CORPUS_DIR
from tierflow.memory.documents import CHUNK_TOKENS, CollectionNameError, DocumentMemory
from tierflow.memory.embeddings import OfflineEmbeddings
from tierflow.memory.lexical import LEXICAL_WEIGHT, Bm25, words

FAQ = CORPUS_DIR / "man-db-faq.txt"
BUGS = CORPUS_DIR / "python-dealing-with-bugs.txt"


@pytest.fixture
def memory(embeddings: OfflineEmbeddings) -> DocumentMemory:
    documents = DocumentMemory.open(None, embeddings)
    documents.forget_all()  # the in-memory client is shared within the process
    return documents


@pytest.fixture
def files(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    for source in (FAQ, BUGS):
        (folder / source.name).write_bytes(source.read_bytes())
    return folder


def test_chunks_fit_the_embedding_model_and_keep_their_place(memory: DocumentMemory, files: Path) -> None:
    text = (files / FAQ.name).read_text()
    chunks = memory.chunks_of(text)
    assert len(chunks) > 3
    counter = memory._counter
    assert counter is not None
    for start, piece in chunks:
        assert counter.count_tokens(piece) <= CHUNK_TOKENS
        assert text[start:].startswith(piece.split()[0])
    assert [start for start, _ in chunks] == sorted(start for start, _ in chunks)


def test_adding_is_idempotent_and_a_changed_file_replaces_its_chunks(
    memory: DocumentMemory, files: Path
) -> None:
    first = memory.add(files / FAQ.name)
    assert first.status == "added" and first.chunks > 3
    assert memory.add(files / FAQ.name).status == "unchanged"
    assert sum(s.chunks for s in memory.sources()) == first.chunks

    (files / FAQ.name).write_text("The manual database is rebuilt by mandb every night at 3 o'clock.")
    changed = memory.add(files / FAQ.name)
    assert changed.status == "replaced" and changed.chunks == 1
    (source,) = memory.sources()
    assert source.chunks == 1
    (hit,) = memory.search("when is the manual database rebuilt?", k=1)
    assert "every night" in hit.chunk.text and hit.chunk.position == 0


def test_search_finds_the_chunk_that_answers(memory: DocumentMemory, files: Path) -> None:
    memory.add_all([files / FAQ.name, files / BUGS.name])
    hits = memory.search("How do I report a bug in Python?", k=3)
    assert hits and hits[0].chunk.source.endswith(BUGS.name)
    assert [hit.ranking for hit in hits] == sorted((hit.ranking for hit in hits), reverse=True)


def test_the_ranking_adds_scaled_word_matches_to_similarity(memory: DocumentMemory, files: Path) -> None:
    memory.add_all([files / FAQ.name, files / BUGS.name])
    hits = memory.search("mandb whatis database", k=10)
    assert hits[0].chunk.source.endswith(FAQ.name)
    lexical = [(hit.ranking - hit.similarity) / LEXICAL_WEIGHT for hit in hits]
    assert max(lexical) == pytest.approx(1.0)  # the best word match, scaled to 1
    assert all(0.0 <= share <= 1.0 + 1e-9 for share in lexical)
    assert any(share == pytest.approx(0.0) for share in lexical)  # a chunk sharing no word


def test_a_word_match_outside_the_nearest_chunks_is_still_ranked(
    memory: DocumentMemory, files: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    memory.add(files / FAQ.name)
    query = "catgets"  # a word in one chunk, which its meaning alone does not rank first
    every = memory.search(query, k=40)
    dense = {hit.chunk.id: hit.similarity for hit in every}
    assert query not in max(every, key=lambda hit: hit.similarity).chunk.text.lower()
    monkeypatch.setattr("tierflow.memory.documents.CANDIDATES", 1)
    hits = memory.search(query, k=1)  # one chunk by meaning, one by words
    assert query in hits[0].chunk.text.lower() and hits[0].ranking > hits[0].similarity
    assert hits[0].similarity == pytest.approx(dense[hits[0].chunk.id], abs=1e-4)


def test_a_file_added_by_another_process_is_matched_by_its_words(
    memory: DocumentMemory, embeddings: OfflineEmbeddings, files: Path
) -> None:
    memory.add(files / BUGS.name)
    assert memory.search("catgets", k=1)[0].ranking == pytest.approx(
        memory.search("catgets", k=1)[0].similarity
    )
    other = DocumentMemory(memory._client, embeddings)  # another process's view of the store
    other.add(files / FAQ.name)
    (hit,) = memory.search("catgets", k=1)
    assert hit.chunk.source.endswith(FAQ.name) and hit.ranking > hit.similarity
    other.forget(str(files / FAQ.name))
    assert all(h.ranking == pytest.approx(h.similarity) for h in memory.search("catgets", k=3))


def test_forget_removes_every_chunk_of_a_source(memory: DocumentMemory, files: Path) -> None:
    memory.add_all([files / FAQ.name, files / BUGS.name])
    memory.add(files / FAQ.name, collection="other")
    removed = memory.forget(str(files / FAQ.name))
    assert removed > 3
    assert all(not s.source.endswith(FAQ.name) for s in memory.sources())
    assert all(not h.chunk.source.endswith(FAQ.name) for h in memory.search("man-db", k=20))
    assert memory.forget_all() > 0 and memory.sources() == []


def test_a_local_only_collection_keeps_its_flag(memory: DocumentMemory, files: Path) -> None:
    memory.add(files / BUGS.name, collection="private", local_only=True)
    assert memory.is_local_only("private")
    assert memory.add(files / FAQ.name, collection="private").status == "added"  # as it is
    with pytest.raises(CollectionNameError, match="is local-only"):
        memory.add(files / FAQ.name, collection="private", local_only=False)
    assert all(hit.chunk.local_only for hit in memory.search("bug", collections=["private"]))
    with pytest.raises(CollectionNameError, match="not a collection name"):
        memory.add(files / FAQ.name, collection="../escape")


def test_an_unreadable_file_is_reported_and_the_rest_added(memory: DocumentMemory, files: Path) -> None:
    (files / "broken.pdf").write_bytes(b"%PDF-1.7 truncated")
    results = memory.add_all(sorted(files.iterdir()))
    status = {Path(r.source).name: r for r in results}
    assert status["broken.pdf"].status == "failed" and (status["broken.pdf"].reason or "").startswith(
        "corrupt:"
    )
    assert status[FAQ.name].status == "added" and status[BUGS.name].status == "added"


def tierflow(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tierflow", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )


def test_the_store_survives_a_restart_offline_writing_only_its_folders(
    files: Path, tmp_path: Path, model_dir: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = {
        **os.environ,
        "HOME": str(home),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / ".local"),
        "TIERFLOW_DATA_DIR": str(tmp_path / "data"),
        "TIERFLOW_MODELS_DIR": str(model_dir.parent),
        "TIERFLOW_AUTO_PULL": "false",
        "HTTPS_PROXY": "http://127.0.0.1:9",  # any download would fail loudly
        "HTTP_PROXY": "http://127.0.0.1:9",
        "HF_HUB_OFFLINE": "1",
    }
    models_before = sorted((p, p.stat().st_mtime) for p in model_dir.rglob("*"))
    added = tierflow("memory", "add", str(files), "--json", env=env)  # one process
    assert added.returncode == 0, added.stderr
    assert {r["status"] for r in json.loads(added.stdout)} == {"added"}
    found = tierflow("memory", "search", "How do I report a bug?", "--json", env=env)  # another
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)[0]["source"].endswith(BUGS.name)
    listed = tierflow("memory", "list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    assert sorted(Path(s["source"]).name for s in json.loads(listed.stdout)) == sorted([BUGS.name, FAQ.name])
    for query, message in (("  ", "the query is empty"), ("x" * 2001, "at most 2,000")):
        refused = tierflow("memory", "search", query, env=env)
        assert refused.returncode == 2 and message in refused.stderr, refused.stderr
    for command in ("search", "ask"):  # bytes of another encoding (Latin-1 "café")
        latin = subprocess.run(
            [sys.executable, "-m", "tierflow", "memory", command, b"caf\xe9"],
            capture_output=True,
            env=env,
            check=False,
        )
        assert latin.returncode == 2 and b"not valid UTF-8" in latin.stderr, latin.stderr[-400:]
    forgot = tierflow("memory", "forget", str(files / BUGS.name), env=env)
    assert forgot.returncode == 0, forgot.stderr
    listed = tierflow("memory", "list", "--json", env=env)
    assert [Path(s["source"]).name for s in json.loads(listed.stdout)] == [FAQ.name]
    assert [p for p in home.rglob("*") if p.is_file()] == []  # nothing written outside its folders
    assert sorted((p, p.stat().st_mtime) for p in model_dir.rglob("*")) == models_before
    assert (tmp_path / "data" / "memory" / "documents").is_dir()


def test_bm25_weighs_rare_words_and_ignores_stop_words() -> None:
    assert words("What is the --frobnicate option of Git 2.39?") == ["frobnicate", "option", "git", "39"]
    index = Bm25(["a", "b", "c"], ["git option one", "git option two", "git frobnicate"])
    scores = index.scores("the git frobnicate option")
    assert index.top("the git frobnicate option", 1) == [("c", scores["c"])]
    assert scores["a"] == pytest.approx(scores["b"]) and scores["c"] > scores["a"] > 0
    assert index.scores("what is the") == {} and Bm25([], []).top("git", 3) == []


def test_a_file_whose_name_is_not_utf8_fails_alone(memory: DocumentMemory, files: Path) -> None:
    """At 4569ff0 such a name crashed `memory add` (chromadb refuses the surrogates)."""
    latin = files / os.fsdecode(b"caf\xe9.md")
    latin.write_text((files / FAQ.name).read_text())
    results = {Path(r.source).name: r for r in memory.add_all([latin, files / FAQ.name])}
    assert results["caf\\xe9.md"].status == "failed" and "name_not_utf8" in (
        results["caf\\xe9.md"].reason or ""
    )
    assert results[FAQ.name].status == "added"
