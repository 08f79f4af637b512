"""Scripted tiers for batch job tests: deterministic summaries that quote the text they are
given, so a test can tell which document and chunk each came from. Module-level, so worker
processes and Ray actors can build them by name."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from tierflow.agents.protocol import Message
from tierflow.agents.scripted import ScriptedModel
from tierflow.agents.tiers import Tiers
from tierflow.app import App
from tierflow.settings import Settings

REPLIES = 10_000


def text_of(messages: Sequence[Message]) -> str:
    """The text a summary prompt quotes (between its triple quotes), or its whole last message."""
    content = messages[-1]["content"]
    quoted = re.search(r'"""\n(.*)\n"""', content, re.DOTALL)
    return quoted.group(1) if quoted else content


def gist(messages: Sequence[Message]) -> str:
    """The first six words of the prompt's text, as a sentence."""
    words = text_of(messages).split()
    return " ".join(words[:6]).rstrip(".") + "."


def scripted_tiers(settings: Settings) -> Tiers:
    return Tiers(
        ScriptedModel([gist] * REPLIES, name="scripted-slm"),
        ScriptedModel([gist] * REPLIES, tier="llm", name="scripted-llm"),
    )


def _dies_once(messages: Sequence[Message]) -> str:
    """Kills its own process the first time it sees a text marked DIE (a worker that dies)."""
    flag = Path(os.environ["TIERFLOW_TEST_DIE_FLAG"])
    if "DIE" in messages[-1]["content"] and not flag.exists():
        flag.write_text(str(os.getpid()))
        os._exit(9)
    return gist(messages)


def dying_tiers(settings: Settings) -> Tiers:
    return Tiers(
        ScriptedModel([_dies_once] * REPLIES, name="scripted-slm"),
        ScriptedModel([gist] * REPLIES, tier="llm", name="scripted-llm"),
    )


def _names_its_process(messages: Sequence[Message]) -> str:
    """Writes down which process answers (in the file TIERFLOW_TEST_PIDS names)."""
    with Path(os.environ["TIERFLOW_TEST_PIDS"]).open("a", encoding="utf-8") as pids:
        pids.write(f"{os.getpid()}\n")
    return gist(messages)


def pid_tiers(settings: Settings) -> Tiers:
    return Tiers(
        ScriptedModel([_names_its_process] * REPLIES, name="scripted-slm"),
        ScriptedModel([gist] * REPLIES, tier="llm", name="scripted-llm"),
    )


def _slow(messages: Sequence[Message]) -> str:
    """Signals, then hangs, on a text marked SLOW (a document to be killed inside)."""
    if "SLOW" in messages[-1]["content"]:
        Path(os.environ["TIERFLOW_TEST_INSIDE_FLAG"]).write_text("inside")
        time.sleep(120)
    return gist(messages)


def slow_tiers(settings: Settings) -> Tiers:
    return Tiers(
        ScriptedModel([_slow] * REPLIES, name="scripted-slm"),
        ScriptedModel([gist] * REPLIES, tier="llm", name="scripted-llm"),
    )


def paragraphs(topic: str, count: int) -> str:
    """A document of ``count`` numbered paragraphs on ``topic``."""
    return "\n\n".join(
        f"{topic} paragraph {i} reports figure {i * 7} for {topic}. " * 3 for i in range(count)
    )


def write_reports(folder: Path) -> Path:
    """Three reports in three formats, one long enough for several chunks of 80 tokens."""
    folder.mkdir()
    (folder / "a_long.txt").write_text(paragraphs("alpha", 12))
    (folder / "b_short.md").write_text("# Beta\n\nBeta sold 3 units in May.")
    (folder / "c_page.html").write_text(
        "<html><body><h1>Gamma</h1><p>Gamma grew 12 percent.</p></body></html>"
    )
    return folder


@contextmanager
def scripted_app(data_dir: Path) -> Iterator[App]:
    """An ``App`` on ``data_dir`` with the scripted tiers."""
    settings = Settings(data_dir=data_dir)
    with App(settings, tiers=scripted_tiers(settings)) as app:
        yield app
