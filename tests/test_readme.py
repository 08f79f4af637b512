"""The README's Python example runs as written, on the real default models."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_example() -> str:
    text = README.read_text()
    start = text.index("```python\n") + len("```python\n")
    return text[start : text.index("```", start)]


def test_the_python_example_is_a_complete_graph_of_about_30_lines() -> None:
    lines = [line for line in python_example().splitlines() if line.strip()]
    assert 25 <= len(lines) <= 40
    assert "import tierflow" in python_example() and "from tierflow." not in python_example()


@pytest.mark.real_slm
@pytest.mark.real_llm
def test_python_example_runs(tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(python_example())
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
        check=False,
        env=dict(os.environ),
    )
    assert result.returncode == 0, result.stderr
    status, category = result.stdout.split()[:2]
    assert status == "succeeded" and category in {"travel", "meals", "software", "other"}
    assert "tierflow runs show" in result.stdout


def test_readme_starts_with_the_two_commands() -> None:
    head = README.read_text().split("\n## ", 1)[0]
    assert "make run" in head and "make test" in head


def test_the_readme_is_short_and_its_links_lead_somewhere() -> None:
    """The README is the pitch, the two commands, one example per kind of user and the
    headline results; the rest is on the documentation site, and every link to it resolves."""
    import re

    text = README.read_text()
    assert len(text) < 12_000
    links = re.findall(r"\]\(((?:docs|evals)/[^)#]+)", text)
    assert len(links) >= 10
    for link in links:
        assert (README.parent / link).exists(), link
