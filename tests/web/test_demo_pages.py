"""The demo's live pages over plain HTTP: served with their assets, offline, linked.

The checks are test_pages.py's own (its patterns and parsers are loaded from
it, so the two cannot drift apart); here they run over /demo/orders,
/demo/chat and /demo/monitor.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from polyport import Service
from polyport.testing import RunningNode, serve_in_thread

DEMO_PAGES = ["/demo/orders", "/demo/chat", "/demo/monitor"]


def _page_checks() -> ModuleType:
    """test_pages.py as a module of its own (test modules are not importable packages)."""
    path = Path(__file__).with_name("test_pages.py")
    spec = importlib.util.spec_from_file_location("polyport_web_page_checks", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


checks = _page_checks()


def _crawl(client: httpx.Client, base: str, pages: list[str]) -> dict[str, httpx.Response]:
    """``pages`` and every asset they load, following ES imports and CSS url()s."""
    seen: dict[str, httpx.Response] = {}
    queue = list(pages)
    while queue:
        path = queue.pop()
        if path in seen:
            continue
        response = client.get(base + path)
        seen[path] = response
        found: list[str] = []
        if path in pages:
            parser = checks._References()
            parser.feed(response.text)
            found = parser.assets
        elif path.endswith(".js"):
            found = checks._module_imports(response.text)
        elif path.endswith(".css"):
            found = re.findall(r"""url\(\s*["']?([^"')\s]+)""", response.text)
        for reference in found:
            if checks.OFF_ORIGIN.match(reference) or reference.startswith(checks.LOCAL_SCHEMES):
                continue  # reported by the off-origin test, not fetched here
            queue.append(urlsplit(urljoin(base + path, reference)).path)
    return seen


@pytest.fixture(scope="module")
def crawled(site: RunningNode) -> dict[str, httpx.Response]:
    with httpx.Client(timeout=10) as client:
        return _crawl(client, site.url, DEMO_PAGES)


def _links(html: str) -> list[str]:
    parser = checks._References()
    parser.feed(html)
    return list(parser.links)


@pytest.mark.parametrize("path", DEMO_PAGES)
def test_demo_pages_are_html(site: RunningNode, path: str) -> None:
    """Each demo page answers 200 with an HTML document, revalidated by ETag."""
    response = httpx.get(site.url + path, timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.text.lstrip().lower().startswith("<!doctype html>")
    again = httpx.get(site.url + path, headers={"if-none-match": response.headers["etag"]})
    assert again.status_code == 304


def test_demo_pages_load_their_own_assets(crawled: dict[str, httpx.Response]) -> None:
    """Each demo page loads the shared stylesheet, its own, and its module, all from /static."""
    scripts = {
        "/demo/orders": "/static/orders.js",
        "/demo/chat": "/static/chat.js",
        "/demo/monitor": "/static/monitor.js",
    }
    for page in DEMO_PAGES:
        parser = checks._References()
        parser.feed(crawled[page].text)
        assert all(a.startswith("/static/") for a in parser.assets), parser.assets
        assert {"/static/polyport.css", "/static/demo.css", scripts[page]} <= set(parser.assets)


def test_every_demo_asset_is_served_with_its_type(crawled: dict[str, httpx.Response]) -> None:
    """Every asset the demo pages reference (transitively) is served with the right type."""
    assets = {path: r for path, r in crawled.items() if path not in DEMO_PAGES}
    # The pages share the dashboard's helpers rather than copying them.
    assert {"/static/live.js", "/static/dom.js", "/static/exchange.js"} <= set(assets)
    for path, response in assets.items():
        assert path.startswith("/static/"), path
        assert response.status_code == 200, path
        suffix = path[path.rfind(".") :]
        assert response.headers["content-type"].split(";")[0] == checks.CONTENT_TYPES[suffix]


def test_demo_pages_reference_no_other_origin(crawled: dict[str, httpx.Response]) -> None:
    """Nothing the demo pages load names another host: they work offline."""
    offenders = []
    for path, response in crawled.items():
        for pattern in checks.REFERENCE_PATTERNS:
            for reference in pattern.findall(response.text):
                if checks.OFF_ORIGIN.match(reference) and not reference.startswith(
                    checks.LOCAL_SCHEMES
                ):
                    offenders.append(f"{path}: {reference}")
    assert offenders == []


def test_demo_scripts_insert_text_never_html(crawled: dict[str, httpx.Response]) -> None:
    """Event data and frames reach the page as text: no HTML sinks in the demo scripts."""
    sinks = re.compile(
        r"\.(?:inner|outer)HTML\s*\+?=|insertAdjacentHTML\(|document\.write|\beval\("
    )
    scripts = [p for p in crawled if p.endswith(".js")]
    assert scripts
    assert [p for p in scripts if sinks.search(crawled[p].text)] == []


def test_demo_pages_link_each_other_and_the_dashboard(site: RunningNode) -> None:
    """The dashboard's header links every demo page; each links the others and the dashboard."""
    dashboard = httpx.get(site.url + "/", timeout=10).text
    assert set(DEMO_PAGES) <= set(_links(dashboard))
    for page in DEMO_PAGES:
        links = set(_links(httpx.get(site.url + page, timeout=10).text))
        assert {"/", *DEMO_PAGES} <= links, page


@pytest.fixture(scope="module")
def plain_site() -> Iterator[RunningNode]:
    """A service without the demo's events."""
    service = Service("plain", version=1)

    @service.method(public=True)
    async def echo(text: str) -> str:
        """Say it back."""
        return text

    with serve_in_thread(service) as server:
        yield server


@pytest.mark.parametrize("path", DEMO_PAGES)
def test_demo_pages_need_the_demo_events(plain_site: RunningNode, path: str) -> None:
    """A service that does not declare the events a demo page shows gets no such page."""
    assert httpx.get(plain_site.url + "/", timeout=10).status_code == 200
    assert httpx.get(plain_site.url + path, timeout=10).status_code == 404
