"""The batch benchmark's corpus is what its manifest says: each file's hash, and text that
tierflow's readers get back at the recorded length."""

import hashlib

import pytest
from tierflow.evals.batch_corpus import CORPUS_DIR, load_manifest
from tierflow.tools.readers import read_document

MANIFEST = load_manifest()


def test_the_corpus_is_mixed_and_large_enough() -> None:
    assert len(MANIFEST) >= 20
    assert {entry["format"] for entry in MANIFEST} == {"txt", "md", "html", "pdf", "docx"}
    assert all(entry["source"] and entry["licence"] for entry in MANIFEST)


@pytest.mark.parametrize("entry", MANIFEST, ids=lambda entry: entry["file"])
def test_each_file_matches_its_manifest_entry(entry: dict[str, object]) -> None:
    path = CORPUS_DIR / str(entry["file"])
    assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
    text = read_document(path).text
    assert abs(len(text) - int(str(entry["chars"]))) <= 0.05 * int(str(entry["chars"]))
