"""The Memory page under Streamlit's AppTest, on a real chromadb store in tmp_path with the
offline MiniLM embeddings: listing, adding, searching and forgetting the users' documents."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from tierflow.app import App
from tierflow.settings import load_settings

from tests.test_ui_pages import page, texts

MEMORY = "screens/memory.py"
BUGS = "To report a bug in Python, open an issue on the tracker with a short example that fails."
PARCELS = "The warehouse ships parcels every Monday; deliveries in March were two days late."
INJECTION = "Minutes <script>alert('memory')</script> <b>bold</b> of the meeting."


@pytest.fixture
def app(tmp_path: Path, model_dir: Path) -> App:
    return App(load_settings(workspace=tmp_path))  # the memory: TIERFLOW_DATA_DIR/memory in tmp_path


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "bugs.txt").write_text(BUGS)
    (folder / "parcels.md").write_text(PARCELS)
    return folder


def click(at: AppTest, label: str) -> AppTest:
    next(b for b in at.button if b.label == label).click()
    at.run()
    assert not at.exception, at.exception
    return at


def add(at: AppTest, paths: str, *, collection: str = "default", local_only: bool = False) -> AppTest:
    at.text_area(key="memory_paths").input(paths)
    at.text_input(key="memory_collection").input(collection)
    at.checkbox(key="memory_local_only").set_value(local_only)
    return click(at, "Add")


def search(at: AppTest, query: str, k: int = 5) -> AppTest:
    at.text_input(key="memory_query").input(query)
    at.number_input(key="memory_k").set_value(k)
    return click(at, "Search")


def outcomes(at: AppTest) -> dict[str, str]:
    frame = at.dataframe[1].value  # the first is the listing
    return dict(zip(frame["file"], frame["status"], strict=True))


def test_an_empty_memory_shows_how_to_add_documents(app: App) -> None:
    at = page(app, MEMORY)
    assert "No documents in the memory yet" in at.info[0].value
    assert "tierflow memory add PATH" in [c.value for c in at.code]
    assert not at.dataframe and not at.error


def test_adding_a_folder_lists_its_files_and_adding_again_changes_nothing(app: App, docs: Path) -> None:
    at = add(page(app, MEMORY), str(docs))
    assert at.progress[0].value == 100
    assert "2 file(s) in the collection 'default', 0 failed" in at.success[0].value
    assert outcomes(at) == {"bugs.txt": "added", "parcels.md": "added"}
    listing = at.dataframe[0].value  # drawn after the add, in the same run
    assert list(listing["file"]) == ["bugs.txt", "parcels.md"]
    assert set(listing["collection"]) == {"default"} and list(listing["chunks"]) == [1, 1]
    assert not listing["local only"].any()
    assert "2 file(s), 2 chunk(s) in 1 collection(s)" in [c.value for c in at.caption]

    at = add(at, f"{docs / 'bugs.txt'},\n{docs / 'parcels.md'}")  # commas and lines, named one by one
    assert outcomes(at) == {"bugs.txt": "unchanged", "parcels.md": "unchanged"}
    assert len(at.dataframe[0].value) == 2


def test_search_finds_the_file_that_answers_first(app: App, docs: Path) -> None:
    at = add(page(app, MEMORY), str(docs))
    at = search(at, "How do I report a bug?", k=2)
    assert at.code[0].value == BUGS  # the best chunk first, its text whole
    assert at.text[0].value.startswith("bugs.txt") and at.code[1].value == PARCELS
    (first, _) = [m.value for m in at.markdown if "similarity" in m.value]
    assert re.search(r"ranking \d\.\d\d\*\* \(similarity \d\.\d\d\) · part 1 · collection `default`", first)
    assert "local only" not in first


def test_a_local_only_collection_is_marked(app: App, docs: Path) -> None:
    at = add(page(app, MEMORY), str(docs / "bugs.txt"), collection="private", local_only=True)
    assert outcomes(at) == {"bugs.txt": "added"}
    assert at.dataframe[0].value["local only"].tolist() == [True]
    at = search(at, "bug report")
    assert any("collection `private`" in m.value and "local only" in m.value for m in at.markdown)
    at = add(at, str(docs / "parcels.md"), collection="private", local_only=False)  # as it is
    assert outcomes(at) == {"parcels.md": "added"}


def test_forget_a_file_then_everything(app: App, docs: Path) -> None:
    at = add(page(app, MEMORY), str(docs))
    at.selectbox(key="memory_forget_source").set_value(str(docs / "bugs.txt"))
    at = click(at, "Forget this file")
    assert at.success[0].value == "1 chunk(s) removed"
    assert list(at.dataframe[0].value["file"]) == ["parcels.md"]
    assert all(not hit.startswith("bugs.txt") for hit in [t.value for t in at.text])
    assert at.selectbox(key="memory_forget_source").options == [
        f"parcels.md · 1 chunk(s) · {docs}/parcels.md"
    ]

    assert next(b for b in at.button if b.label == "Forget everything").disabled
    at.checkbox(key="memory_forget_confirm").check()
    at.run()
    at = click(at, "Forget everything")
    assert at.success[0].value == "1 chunk(s) removed"
    assert "No documents in the memory yet" in at.info[0].value
    assert app.documents.sources() == []
    at = add(at, str(docs))
    assert not at.checkbox(key="memory_forget_confirm").value  # asks again next time


def test_document_text_is_never_rendered_as_html(app: App, tmp_path: Path) -> None:
    (tmp_path / "minutes.txt").write_text(INJECTION)
    at = add(page(app, MEMORY), str(tmp_path / "minutes.txt"))
    at = search(at, "meeting minutes")
    assert INJECTION in [c.value for c in at.code]  # shown as text, tags and all
    assert not any("alert" in m.value or "<b>" in m.value for m in at.markdown)
    assert not any(m.proto.allow_html for m in at.markdown)
    assert "unsafe_allow_html" not in (Path(__file__).parents[1] / "ui" / MEMORY).read_text()


def test_bad_paths_and_names_are_messages_not_tracebacks(app: App, docs: Path, tmp_path: Path) -> None:
    at = add(page(app, MEMORY), str(tmp_path / "nowhere"))
    assert at.error and "matches no document to read" in at.error[0].value
    assert any("Check the path" in c.value for c in at.caption)
    at = add(at, " , \n")
    assert "No input files were given" in at.error[0].value
    at = add(at, str(docs), collection="Bad Name")
    assert "not a collection name" in at.error[0].value
    at = add(at, str(docs))
    at = add(at, str(docs), local_only=True)  # "default" exists, and is not local-only
    assert "the collection 'default' is not local" in at.error[0].value
    (docs / "broken.pdf").write_bytes(b"%PDF-1.7 truncated")
    at = add(at, str(docs))
    assert "2 file(s) in the collection 'default', 1 failed" in at.warning[0].value
    frame = at.dataframe[1].value
    assert frame.loc[frame["file"] == "broken.pdf", "reason"].item().startswith("corrupt:")
    assert "No input files" not in texts(at)


def test_a_memory_that_cannot_be_opened_is_a_message(tmp_path: Path, model_dir: Path) -> None:
    (tmp_path / "memory").write_text("a file where the memory folder should be")
    app = App(load_settings(workspace=tmp_path, memory_dir=tmp_path / "memory"))
    at = page(app, MEMORY)
    assert "cannot be opened" in at.error[0].value
    assert any("TIERFLOW_MEMORY_DIR" in c.value for c in at.caption)
    assert not at.text_area  # no form on a memory that is not there


def test_run_detail_shows_the_retrieved_and_cited_chunks(tmp_path: Path, model_dir: Path, docs: Path) -> None:
    import json

    from tierflow.agents.scripted import ScriptedModel
    from tierflow.agents.tiers import Tiers
    from tierflow.graphs.citing import build_qa_graph

    (docs / "notes.md").write_text(INJECTION)
    reply = {"found": True, "sources": [1], "answer": "Parcels ship every Monday."}
    tiers = Tiers(ScriptedModel([json.dumps(reply)], tier="slm"), ScriptedModel(tier="llm"))
    app = App(load_settings(workspace=tmp_path), tiers=tiers)
    for path in sorted(docs.iterdir()):
        app.documents.add(path)
    result = app.run_graph(build_qa_graph(app.documents, k=3), {"question": "When do parcels ship?"})
    assert result.ok, result.error
    at = page(app, "screens/run_detail.py", run=result.run_id)
    assert not at.exception, at.exception
    retrieved, answered = at.dataframe[0].value, at.dataframe[1].value
    assert list(retrieved["chunk"])[0] == "parcels.md, part 1" and len(retrieved) == 3
    cited = answered[answered["cited"]]
    assert list(cited["chunk"]) == ["parcels.md, part 1"] and list(cited["shown to"]) == ["SLM"]
    assert "<script>" not in "".join(m.value for m in at.markdown)  # chunks are shown as data
