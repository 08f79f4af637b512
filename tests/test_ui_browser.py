"""The console end to end: `tierflow ui` serving the real models, driven in headless Chromium
(Debian's ``chromium``; ``make browser`` installs it). Screenshots of every page go to a
temporary folder, or to ``TIERFLOW_SCREENSHOTS`` when set: ``make screenshots`` refreshes the
committed ones in ``evals/results/console/`` that way, so a test run never dirties a checkout."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from tierflow.agents.server import free_port
from tierflow.memory import TraceStore

from tests.conftest import MODELS_DIR

pytestmark = [pytest.mark.real_slm, pytest.mark.real_llm]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
RUN_TIMEOUT_MS = 420_000


@dataclass(frozen=True)
class Console:
    url: str
    data_dir: Path


@contextmanager
def serve_console(home: Path, *options: str, **env_vars: str) -> Iterator[str]:
    """`tierflow ui OPTIONS` in its own data dir under ``home``; its URL once it is healthy."""
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is not installed: run `make browser` (apt-get install chromium)")
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("TIERFLOW_")}
    env.update(
        TIERFLOW_DATA_DIR=str(home / "data"),
        TIERFLOW_MODELS_DIR=str(MODELS_DIR),
        TIERFLOW_AUTO_PULL="false",
        XDG_CONFIG_HOME=str(home / "config"),
        **env_vars,
    )
    log = home / "server.log"
    with log.open("wb") as sink:
        server = subprocess.Popen(
            [sys.executable, "-m", "tierflow", "ui", "--port", str(port), *options],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                    if response.read() == b"ok":
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the console did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


@pytest.fixture(scope="module")
def console(slm_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    del slm_path  # only to fail early, with the fix, when the model is missing
    home = tmp_path_factory.mktemp("console")
    with serve_console(home) as url:
        yield Console(url, home / "data")


def submit(page: object, url: str, task: str) -> None:
    page.goto(url)  # type: ignore[attr-defined]
    page.locator("textarea").first.fill(task)  # type: ignore[attr-defined]
    page.get_by_role("button", name="Run").click()  # type: ignore[attr-defined]


def finished(page: object) -> None:
    """Wait for the run's status line, then require that it succeeded."""
    status = page.get_by_text(re.compile(r"^Run \w+ (succeeded|failed|interrupted)")).first  # type: ignore[attr-defined]
    status.wait_for(timeout=RUN_TIMEOUT_MS)
    assert "succeeded" in status.inner_text(), status.inner_text()


def test_a_task_through_the_console_in_chromium(console: Console, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    SHOTS = Path(os.environ.get("TIERFLOW_SCREENSHOTS") or tmp_path / "console")  # noqa: N806
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 2000})
        submit(page, console.url, "What is 17 * 23 + 4?")
        finished(page)
        page.get_by_text("395").first.wait_for()
        page.screenshot(path=SHOTS / "run-a-task.png", full_page=True)

        page.get_by_role("button", name="Open the run's detail").click()
        page.get_by_role("heading", name="Run detail").wait_for()
        call = page.locator("details").filter(has_text="select_tool · SLM").first
        call.locator("summary").click()  # expand a model call
        call.get_by_text("Prompt (exact messages)").wait_for()
        call.get_by_text("Choose the tool", exact=False).first.wait_for()  # the exact system prompt
        page.screenshot(path=SHOTS / "run-detail.png", full_page=True)

        add_help_centre(console)
        for title, name in (
            ("Runs", "runs"),
            ("Cost", "cost"),
            ("Compare runs", "compare"),
            ("Memory", "memory"),
            ("Evaluations", "evals"),
            ("Calibration", "calibration"),
        ):
            page.get_by_role("link", name=title).first.click()
            page.get_by_role("heading", name=title).wait_for()
            page.wait_for_timeout(1500)  # charts draw after the page's script ends
            page.screenshot(path=SHOTS / f"{name}.png", full_page=True)
        browser.close()
    for name in ("run-a-task", "run-detail", "runs", "cost", "compare", "memory", "evals", "calibration"):
        assert (SHOTS / f"{name}.png").stat().st_size > 10_000


def add_help_centre(console: Console) -> None:
    """The support example's help centre in the console's memory (for the Memory page)."""
    from tierflow.graphs.examples.support_faq import SAMPLE_DOCS

    env = {key: value for key, value in os.environ.items() if not key.startswith("TIERFLOW_")}
    env.update(TIERFLOW_DATA_DIR=str(console.data_dir), TIERFLOW_MODELS_DIR=str(MODELS_DIR))
    added = subprocess.run(
        [sys.executable, "-m", "tierflow", "memory", "add", str(SAMPLE_DOCS), "--collection", "support"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert added.returncode == 0, added.stderr


def test_two_sessions_run_tasks_at_the_same_time(console: Console) -> None:
    from playwright.sync_api import sync_playwright

    tasks = {"What is 12 * 12?": "144", "What is 1000 - 58?": "942"}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        pages = [browser.new_context().new_page() for _ in tasks]
        for page, task in zip(pages, tasks, strict=True):
            submit(page, console.url, task)  # the second starts while the first runs
        for page, answer in zip(pages, tasks.values(), strict=True):
            finished(page)
            page.get_by_text(answer).first.wait_for()
        browser.close()
    store = TraceStore.from_url(f"sqlite:///{console.data_dir / 'tierflow.db'}")
    runs = {run.task: run for run in store.list_runs(limit=10)}
    for task, answer in tasks.items():
        trace = store.get_run(runs[task].id)
        assert trace.status == "succeeded" and answer in (trace.answer or "")
        tool_calls = [call for step in trace.steps for call in step.tool_calls]
        assert tool_calls and all(answer in (call.result or "") for call in tool_calls)
    store.engine.dispose()
