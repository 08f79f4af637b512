"""The documentation site's pages (docs/) hold only code that works.

* Every ```python block runs, on scripted tiers: the blocks of one page share a namespace
  and run in order, in a temporary working directory with their own data directory. A
  block meant to be shown but not run uses another fence (```py title="needs the models").
* Every name a code block takes from tierflow (``from tierflow import X``, ``tierflow.X``)
  is in ``tierflow.__all__``: the docs show the front door only.
* The API page documents every public name.
* The site builds with ``mkdocs build --strict`` (skipped where mkdocs is not installed).
"""

from __future__ import annotations

import ast
import importlib.util
import re
import subprocess
import sys
import textwrap
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import tierflow

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^\n`]*)$")
PYTHON_INFOS = {"python", "py", "python3"}
# Pages whose code searches the document memory need the offline MiniLM embeddings (the same
# model the suite's memory tests use; pulled into the user cache once when missing).
USES_EMBEDDINGS = re.compile(r"\b(retrieve|cited_answer|build_qa_graph|DocumentMemory)\b|\.documents\b")


@dataclass(frozen=True)
class Block:
    page: str  # relative to docs/, e.g. "concepts/policy.md"
    index: int  # among the page's runnable blocks
    line: int  # where its fence opens, 1-based
    info: str  # the fence's info string: "python", 'py title="needs the models"', ...
    code: str

    @property
    def runs(self) -> bool:
        return self.info == "python"


def code_blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown page whose language is Python, in order (runnable
    ones numbered from 0); blocks inside admonitions are dedented."""
    page = path.relative_to(DOCS).as_posix()
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    runnable = 0
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        indent, fence, info = opening["indent"], opening["fence"], opening["info"].strip()
        closing = re.compile(rf"^{re.escape(indent)}{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        end = next((j for j in range(i + 1, len(lines)) if closing.match(lines[j])), len(lines))
        body = "\n".join(line[len(indent) :] for line in lines[i + 1 : end])
        if info.split(" ", 1)[0] in PYTHON_INFOS:
            number = runnable if info == "python" else -1
            blocks.append(Block(page, number, i + 1, info, textwrap.dedent(body) + "\n"))
            runnable += info == "python"
        i = end + 1
    return blocks


def pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


ALL_BLOCKS = [block for path in pages() for block in code_blocks(path)]
RUNNABLE = [block for block in ALL_BLOCKS if block.runs]


# Running the examples ---------------------------------------------------------------------------
@dataclass
class PageRun:
    """The module one page's blocks run in, its folder, and how many blocks have run. The
    blocks run as the code of a real module (in ``sys.modules``), as a reader's script
    would: LangGraph and pydantic look up a class's annotations in its module."""

    folder: Path
    module: types.ModuleType
    done: int = 0
    failed: bool = False

    @classmethod
    def start(cls, page: str, folder: Path) -> PageRun:
        name = "docs_example_" + re.sub(r"\W", "_", page.removesuffix(".md"))
        module = sys.modules[name] = types.ModuleType(name)
        return cls(folder, module)


_RUNS: dict[str, PageRun] = {}


@pytest.fixture(scope="module", autouse=True)
def forget_example_modules() -> Iterator[None]:
    """The pages' modules leave ``sys.modules`` when this file's tests are done."""
    yield
    for run in _RUNS.values():
        sys.modules.pop(run.module.__name__, None)
    _RUNS.clear()


def _execute(block: Block, run: PageRun) -> None:
    where = f"docs/{block.page} (block {block.index}, line {block.line})"
    # dont_inherit: the examples get no __future__ flags of this file, as in a script of their own
    compiled = compile(block.code, where, "exec", dont_inherit=True)
    exec(compiled, run.module.__dict__)  # noqa: S102 - the docs' own examples, run as the docs say


@pytest.mark.parametrize(
    "block", RUNNABLE, ids=[f"{block.page}#{block.index}" for block in RUNNABLE]
)  # fmt: skip
def test_python_blocks_run(
    block: Block,
    isolated_env: Path,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    """Blocks of one page run in order in one namespace; a block run alone (``-k``) first
    runs the ones before it on its page."""
    run = _RUNS.get(block.page)
    if run is None or run.failed or run.done != block.index:
        folder = tmp_path_factory.mktemp("docs-" + block.page.replace("/", "-").removesuffix(".md"))
        run = _RUNS[block.page] = PageRun.start(block.page, folder)
    work, data = run.folder / "work", run.folder / "data"
    work.mkdir(exist_ok=True)
    monkeypatch.chdir(work)
    monkeypatch.setenv("TIERFLOW_DATA_DIR", str(data))
    page_code = "".join(b.code for b in RUNNABLE if b.page == block.page)
    if USES_EMBEDDINGS.search(page_code):
        request.getfixturevalue("model_dir")  # the offline embeddings, in the user cache
    earlier = [b for b in RUNNABLE if b.page == block.page and run.done <= b.index < block.index]
    for before in earlier:
        try:
            _execute(before, run)
        except Exception as exc:
            run.failed = True
            pytest.fail(f"docs/{block.page}: block {before.index} (line {before.line}) failed first: {exc!r}")
        run.done += 1
    try:
        _execute(block, run)
    except BaseException:
        run.failed = True
        raise
    run.done += 1


# The names the examples use ----------------------------------------------------------------------
def tierflow_names(code: str) -> list[tuple[str, int]]:
    """(name, line) of each name a block takes from tierflow: ``from tierflow import X``,
    ``tierflow.X`` (under whatever name ``import tierflow`` bound), and, as the dotted
    path, any import of a module below ``tierflow``."""
    tree = ast.parse(code)
    aliases = {"tierflow"}
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "tierflow":
                    aliases.add(alias.asname or "tierflow")
                elif alias.name.startswith("tierflow."):
                    found.append((alias.name, node.lineno))
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            if node.module == "tierflow":
                found += [(alias.name, node.lineno) for alias in node.names]
            elif node.module.startswith("tierflow."):
                found += [(f"{node.module}.{alias.name}", node.lineno) for alias in node.names]
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            found.append((node.attr, node.lineno))
    return found


@pytest.mark.parametrize(
    "block", ALL_BLOCKS, ids=[f"{block.page}:{block.line}" for block in ALL_BLOCKS]
)  # fmt: skip
def test_code_blocks_use_only_public_names(block: Block) -> None:
    public = set(tierflow.__all__)
    wrong = [
        f"line {block.line + line}: {name}" for name, line in tierflow_names(block.code) if name not in public
    ]
    assert not wrong, (
        f"docs/{block.page}, the block at line {block.line} uses names that are not in "
        f"tierflow.__all__ (the docs show the front door only): {', '.join(wrong)}"
    )


def test_the_api_page_documents_every_public_name() -> None:
    text = (DOCS / "api.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^::: tierflow\.(\w+)\s*$", text, flags=re.MULTILINE))
    missing = [name for name in tierflow.__all__ if name not in documented]
    unknown = sorted(documented - set(tierflow.__all__))
    assert not missing, f"docs/api.md lacks ::: tierflow.NAME for: {', '.join(missing)}"
    assert not unknown, f"docs/api.md documents names that are not public: {', '.join(unknown)}"


def test_every_page_has_code_only_in_known_fences() -> None:
    """A block marked ```python is run; the extractor must have found every such fence."""
    for path in pages():
        text = path.read_text(encoding="utf-8")
        opened = len(re.findall(r"^[ \t]*```python[ \t]*$", text, flags=re.MULTILINE))
        found = sum(block.runs for block in code_blocks(path))
        assert opened == found, f"docs/{path.relative_to(DOCS)}: {opened} python fences, {found} read"


# The site builds ---------------------------------------------------------------------------------
MKDOCS_MISSING = [
    name for name in ("mkdocs", "material", "mkdocstrings") if importlib.util.find_spec(name) is None
]


@pytest.mark.skipif(
    bool(MKDOCS_MISSING),
    reason=f"the docs tools are not installed ({', '.join(MKDOCS_MISSING)}): "
    "pip install 'mkdocs>=1.6' 'mkdocs-material>=9.5' 'mkdocstrings[python]>=0.27'",
)
def test_the_site_builds_strictly(tmp_path: Path) -> None:
    tree = subprocess.run(
        [str(ROOT / ".ci" / "typecheck-tree")], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert tree.returncode == 0, tree.stderr
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "-f",
            "mkdocs.yml",
            "-d",
            str(tmp_path / "site"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert built.returncode == 0, built.stderr[-4000:]
    for page in ("settings", "cli", "api"):
        html = (tmp_path / "site" / page / "index.html").read_text(encoding="utf-8")
        assert "TIERFLOW_" in html or "tierflow" in html
    assert "TIERFLOW_POLICY__DEFAULT" in (tmp_path / "site" / "settings" / "index.html").read_text()
    assert "--max-llm-tokens" in (tmp_path / "site" / "cli" / "index.html").read_text()
    assert 'id="tierflow.run_graph"' in (tmp_path / "site" / "api" / "index.html").read_text()
