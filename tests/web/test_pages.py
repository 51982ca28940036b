"""The node's pages over plain HTTP: served, typed right, and fully offline."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from polyport.testing import RunningNode

PAGES = ["/docs", "/"]

CONTENT_TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".html": "text/html",
}

# Places where a page or asset makes the browser load something. A URL there
# must stay on the node: no scheme, no protocol-relative "//host".
REFERENCE_PATTERNS = [
    re.compile(r"""\b(?:src|href|action|poster)\s*[=:]\s*["'`]?([^"'`\s>]+)""", re.I),
    re.compile(r"""url\(\s*["']?([^"')\s]+)""", re.I),
    re.compile(r"""@import\s+(?:url\()?\s*["']([^"']+)""", re.I),
    re.compile(r"""\bimport\s*(?:[\w*{}\s,]+\s*from\s*)?\(?\s*["'`]([^"'`]+)["'`]"""),
    re.compile(
        r"""\b(?:fetch|EventSource|WebSocket|Worker|importScripts|open)\(\s*["'`]([^"'`]+)"""
    ),
]
OFF_ORIGIN = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|//|\\\\)", re.I)
LOCAL_SCHEMES = ("data:", "blob:", "#", "javascript:void")


class _References(HTMLParser):
    """The src/href of every element that makes the browser fetch something."""

    def __init__(self) -> None:
        super().__init__()
        self.assets: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag in ("script", "img") and values.get("src"):
            self.assets.append(values["src"] or "")
        elif tag == "link" and values.get("href"):
            self.assets.append(values["href"] or "")
        elif tag == "a" and values.get("href"):
            self.links.append(values["href"] or "")


STATIC_IMPORT = re.compile(
    r"""^\s*(?:import|export)\s+(?:[\w*{}\s,]+?\s+from\s+)?["']([^"']+)["']""", re.M
)
DYNAMIC_IMPORT = re.compile(r"""\bimport\(\s*["']([^"']+)["']""")


def _module_imports(source: str) -> list[str]:
    """The specifiers of static and dynamic ES module imports in a script."""
    return STATIC_IMPORT.findall(source) + DYNAMIC_IMPORT.findall(source)


def _crawl(client: httpx.Client, base: str) -> dict[str, httpx.Response]:
    """Every page and every asset they load, following ES imports and CSS url()s."""
    seen: dict[str, httpx.Response] = {}
    queue = list(PAGES)
    while queue:
        path = queue.pop()
        if path in seen:
            continue
        response = client.get(base + path)
        seen[path] = response
        body = response.text
        found: list[str] = []
        if path in PAGES:
            parser = _References()
            parser.feed(body)
            found = parser.assets
        elif path.endswith(".js"):
            found = _module_imports(body)
        elif path.endswith(".css"):
            found = re.findall(r"""url\(\s*["']?([^"')\s]+)""", body)
        for reference in found:
            if OFF_ORIGIN.match(reference) or reference.startswith(LOCAL_SCHEMES):
                continue  # reported by the off-origin test, not fetched here
            queue.append(urlsplit(urljoin(base + path, reference)).path)
    return seen


@pytest.fixture(scope="module")
def crawled(site: RunningNode) -> dict[str, httpx.Response]:
    with httpx.Client(timeout=10) as client:
        return _crawl(client, site.url)


@pytest.mark.parametrize("path", PAGES)
def test_pages_are_html(site: RunningNode, path: str) -> None:
    """/docs and / answer 200 with an HTML document."""
    response = httpx.get(site.url + path, timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.text.lstrip().lower().startswith("<!doctype html>")


def test_pages_load_their_own_assets(crawled: dict[str, httpx.Response]) -> None:
    """Each page loads a stylesheet and a module script, both from /static."""
    for page in PAGES:
        parser = _References()
        parser.feed(crawled[page].text)
        assert any(a.endswith(".css") for a in parser.assets), page
        assert any(a.endswith(".js") for a in parser.assets), page
        assert all(a.startswith("/static/") for a in parser.assets), parser.assets


def test_every_referenced_asset_is_served_with_its_type(
    crawled: dict[str, httpx.Response],
) -> None:
    """Every asset the pages reference (transitively) is served with the right content type."""
    assets = {path: r for path, r in crawled.items() if path not in PAGES}
    assert {"/static/docs.js", "/static/dashboard.js", "/static/polyport.css"} <= set(assets)
    for path, response in assets.items():
        assert path.startswith("/static/"), path
        assert response.status_code == 200, path
        suffix = path[path.rfind(".") :]
        assert response.headers["content-type"].split(";")[0] == CONTENT_TYPES[suffix], path


def test_nothing_references_another_origin(crawled: dict[str, httpx.Response]) -> None:
    """No page or asset loads anything from another host: the pages work offline."""
    offenders = []
    for path, response in crawled.items():
        for pattern in REFERENCE_PATTERNS:
            for reference in pattern.findall(response.text):
                if OFF_ORIGIN.match(reference) and not reference.startswith(LOCAL_SCHEMES):
                    offenders.append(f"{path}: {reference}")
    assert offenders == []


def test_reference_check_catches_external_urls() -> None:
    """The off-origin check itself flags CDN-style references (so a pass means something)."""
    samples = [
        '<script src="https://cdn.example.com/x.js"></script>',
        "<link href=//fonts.example.com/css>",
        'body { background: url("http://example.com/a.png") }',
        'import x from "https://esm.example.com/y.js";',
        'fetch("//api.example.com/data")',
        'h("a", {href: "https://example.com/"})',
    ]
    for sample in samples:
        found = [ref for p in REFERENCE_PATTERNS for ref in p.findall(sample)]
        assert any(OFF_ORIGIN.match(ref) for ref in found), sample
    assert not [
        ref
        for p in REFERENCE_PATTERNS
        for ref in p.findall('import {h} from "./dom.js";')
        if OFF_ORIGIN.match(ref)
    ]


@pytest.mark.parametrize("name", ["missing.js", ".hidden.css", "docs.py", "x.exe"])
def test_unknown_static_names_are_not_found(site: RunningNode, name: str) -> None:
    """/static serves only known asset types that exist, as a 404 problem otherwise."""
    response = httpx.get(f"{site.url}/static/{name}", timeout=10)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


def test_catalog_names_the_grpc_port_actually_bound(site: RunningNode) -> None:
    """/catalog.json is written once listeners are bound: gRPC's real port, not 0 or 50051."""
    assert site.grpc_address is not None and not site.grpc_address.endswith(":0")
    catalog = httpx.get(f"{site.url}/catalog.json").json()
    dialled = [e["address"] for e in catalog["endpoints"] if e["address"].startswith("grpc ")]
    assert dialled
    assert all(address.startswith(f"grpc {site.grpc_address} ") for address in dialled)
