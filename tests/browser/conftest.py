"""Browser-test fixtures: the walkthrough served by uvicorn on a free local port, driven by Debian's Chromium.

Playwright launches the system browser through ``executable_path`` (it never downloads one). Without
``/usr/bin/chromium`` these tests skip and say so; CI installs the package.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
#: How long an ``expect(...)`` assertion waits for its condition (Playwright's own default is 5 s): a
#: generous bound on a page that waits on the server, which on a loaded machine (a first model load,
#: other processes on the cores) can take more than 5 s. The condition ends the wait, not the bound.
EXPECT_TIMEOUT_MS = 60_000
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def walkthrough_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of a running walkthrough with the demo models registered; stopped after the session."""
    import uvicorn

    from attnlab.web.app import create_app
    from attnlab.web.demo import register_demo_models

    register_demo_models(tmp_path_factory.mktemp("browser-timeline"))
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the walkthrough server did not start within 30 s")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="session")
def chromium() -> Iterator[object]:
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium); CI installs it")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Page:
    """A fresh page that records console errors and uncaught exceptions, with a screenshot helper."""

    def __init__(self, page: object, base: str) -> None:
        self.page = page
        self.base = base
        self.errors: list[str] = []
        page.on("console", lambda m: self.errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))

    def open(self, hash_: str = "", model: str | None = None) -> None:
        self.page.goto(f"{self.base}/{hash_}")
        self.page.wait_for_selector("body[data-ready=true]")
        if model:
            self.page.select_option("#model", model)

    def screenshot(self, name: str) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


@pytest.fixture(autouse=True)
def _patient_expect() -> None:
    try:
        from playwright.sync_api import expect
    except ImportError:  # the chromium fixture skips these tests and says why
        return
    expect.set_options(timeout=EXPECT_TIMEOUT_MS)


@pytest.fixture
def ui(chromium: object, walkthrough_url: str) -> Iterator[Page]:
    context = chromium.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield Page(page, walkthrough_url)
    context.close()


@pytest.fixture
def make_ui(chromium: object, walkthrough_url: str) -> Iterator[object]:
    """A factory of pages with a given window size (``make_ui(1024, 768)``); closed after the test."""
    contexts = []

    def make(width: int, height: int) -> Page:
        context = chromium.new_context(viewport={"width": width, "height": height})
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(120_000)
        return Page(page, walkthrough_url)

    yield make
    for context in contexts:
        context.close()
