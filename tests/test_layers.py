"""The floors of the import graph (STYLE.md, "Layers") as import-linter checks them in
``make lint``: the house keeps its contracts, and a new cycle or an upward import breaks them."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def installed_layout(where: Path, extra: dict[str, str] | None = None) -> Path:
    """The package as it installs (``tierflow/agents/...``), as symlinks into the checkout
    (``.ci/typecheck-tree``'s layout), with ``extra`` modules added under their dotted names."""
    root = where / "tierflow"
    root.mkdir(parents=True)
    mapping = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"][
        "package-dir"
    ]
    folders = {folder for folder in mapping.values() if folder != "core"}  # each subpackage's folder
    for entry in (REPO / "core").iterdir():
        if entry.name != "__pycache__":
            (root / entry.name).symlink_to(entry)
    for folder in folders:
        (root / folder).symlink_to(REPO / folder)
    for dotted, source in (extra or {}).items():
        *packages, module = dotted.split(".")[1:]
        package = root.joinpath(*packages)
        if package.is_symlink():  # a real folder of symlinks, so the extra module goes in it alone
            target = package.resolve()
            package.unlink()
            package.mkdir()
            for entry in target.iterdir():
                (package / entry.name).symlink_to(entry)
        (package / f"{module}.py").write_text(source)
    return where


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", str(REPO / "pyproject.toml")],
        cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_house_keeps_its_contracts(tmp_path: Path) -> None:
    done = lint_imports(installed_layout(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


@pytest.mark.parametrize(
    ("modules", "broken"),
    [
        (  # two graph modules that import each other
            {
                "tierflow.graphs.probe_a": "from tierflow.graphs import probe_b\n",
                "tierflow.graphs.probe_b": "def f():\n    from tierflow.graphs import probe_a\n",
            },
            "No import cycles, at any depth",
        ),
        (  # a model tier reaching up for the app's defaults, inside a function
            {"tierflow.agents.probe": "def f():\n    from tierflow.app import App\n"},
            "Each floor imports only from the floors below it",
        ),
        (  # the console importing an evaluation
            {"tierflow.ui.probe": "import tierflow.evals.bench\n"},
            "Product code never imports the evaluations",
        ),
    ],
)
def test_a_new_cycle_or_upward_import_fails_the_lint(
    tmp_path: Path, modules: dict[str, str], broken: str
) -> None:
    done = lint_imports(installed_layout(tmp_path, modules))
    assert done.returncode != 0
    report = done.stdout.split("Broken contracts", 1)[-1]
    assert broken in report and "probe" in report
