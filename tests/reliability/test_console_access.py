"""The console stays on this machine unless told otherwise; shared on the network, every
browser session must give the access token first (a real `tierflow ui`, headless Chromium)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tierflow.agents.server import free_port

from tests.test_cli import no_traceback, tierflow
from tests.test_ui_browser import CHROMIUM, FLAGS, serve_console

TOKEN = "console-token-for-the-test-123"


def test_a_network_address_needs_the_explicit_flag() -> None:
    result = tierflow("ui", "--host", "0.0.0.0", "--port", str(free_port()), timeout=60)
    no_traceback(result)
    assert result.returncode == 2
    assert "would let other machines reach the console" in result.stderr and "--remote" in result.stderr


@pytest.fixture
def shared_console(tmp_path: Path) -> Iterator[str]:
    with serve_console(tmp_path, "--host", "0.0.0.0", "--remote", TIERFLOW_UI_TOKEN=TOKEN) as url:
        yield url
    assert TOKEN not in (tmp_path / "server.log").read_text()  # a token set by the user is never printed


def test_every_session_must_give_the_token(shared_console: str) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        stranger = browser.new_context().new_page()
        stranger.goto(shared_console)
        stranger.get_by_text("enter its access token").wait_for()
        assert stranger.get_by_text("Run a task").count() == 0  # no page ran
        stranger.get_by_label("Access token").fill("guess")
        stranger.get_by_role("button", name="Open the console").click()
        stranger.get_by_text("That token is not right.").wait_for()
        stranger.goto(f"{shared_console}/runs")  # a page's own address is gated too
        stranger.get_by_text("enter its access token").wait_for()

        member = browser.new_context().new_page()
        member.goto(f"{shared_console}/?token={TOKEN}")
        member.get_by_text("Run a task").first.wait_for()
        assert "token" not in member.url  # dropped from the address bar
        typed = browser.new_context().new_page()
        typed.goto(shared_console)
        typed.get_by_label("Access token").fill(TOKEN)
        typed.get_by_role("button", name="Open the console").click()
        typed.get_by_text("Run a task").first.wait_for()
        browser.close()
