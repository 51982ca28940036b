"""Fixtures for the node's own pages: a running demo node and Debian's Chromium."""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from polyport.settings import Settings
from polyport.testing import RunningNode, serve_in_thread

CHROMIUM = Path("/usr/bin/chromium")
# Playwright's own browser download cannot work offline; it drives the
# distribution's Chromium instead, with everything that phones home turned off.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningNode]:
    """The demo shop in development mode, shared by the tests of one module."""
    from polyport.demo.shop import shop

    database = tmp_path_factory.mktemp("web") / "db.sqlite3"
    with serve_in_thread(shop, Settings(dev=True, database=str(database))) as server:
        yield server


def _browser_missing() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed (pip install -e '.[dev]')"
    if not CHROMIUM.exists():
        return f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium; skips without it, fails when POLYPORT_REQUIRE_SERVICES=1."""
    missing = _browser_missing()
    if missing:
        if os.environ.get("POLYPORT_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{missing} (POLYPORT_REQUIRE_SERVICES=1)")
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


class PageWatch:
    """What a page did besides rendering: every request it made, every script error."""

    def __init__(self, page: Any, origin: str) -> None:
        self.page = page
        self.origin = urlsplit(origin).netloc
        self.requests: list[str] = []
        self.errors: list[str] = []
        page.on("request", lambda request: self.requests.append(request.url))
        page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))
        page.on("console", self._console)

    def _console(self, message: Any) -> None:
        # A failed fetch is also logged by Chromium as a console error; those
        # are the point of some tests, so only script errors count here.
        if message.type == "error" and "Failed to load resource" not in message.text:
            self.errors.append(message.text)

    def foreign_requests(self) -> list[str]:
        """Requests to anywhere but the test server (data: and blob: URLs are local)."""
        return [
            url
            for url in self.requests
            if urlsplit(url).scheme not in ("data", "blob", "about")
            and urlsplit(url).netloc != self.origin
        ]


@contextlib.contextmanager
def watched_page(browser: Any, site: RunningNode, width: int, height: int) -> Iterator[PageWatch]:
    """A fresh page (own context: own storage) that must stay on the test server."""
    context = browser.new_context(viewport={"width": width, "height": height})
    context.set_default_timeout(10_000)
    watch = PageWatch(context.new_page(), site.url)
    try:
        yield watch
    finally:
        # Closing the context ends the dashboard's long poll before the node stops.
        context.close()
    assert watch.foreign_requests() == [], "the page contacted another host"
    assert watch.errors == [], "the page logged errors"


@pytest.fixture
def page(browser: Any, site: RunningNode) -> Iterator[PageWatch]:
    """A page in a 1400 by 1000 window."""
    with watched_page(browser, site, 1400, 1000) as watch:
        yield watch


@pytest.fixture
def wide_page(browser: Any, site: RunningNode) -> Iterator[PageWatch]:
    """A page in a 1920 by 1080 window (a common desktop screen)."""
    with watched_page(browser, site, 1920, 1080) as watch:
        yield watch
