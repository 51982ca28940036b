"""Polling's parameters: what the OpenAPI document says is what the server reads.

Schemathesis found the server refusing patterns the document allowed and
reading numbers it forbade; each case below was one of those disagreements.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from polyport.core.events import CURSOR_EXPRESSION, MAX_PATTERNS, PATTERN_EXPRESSION
from polyport.testing import RunningNode


@pytest.fixture
def client(demo: RunningNode) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=demo.url, timeout=30) as c:
        yield c


@pytest.fixture
def parameters(client: httpx.Client) -> dict[str, Any]:
    document = client.get("/openapi.json").json()
    return {p["name"]: p for p in document["paths"]["/v1/events"]["get"]["parameters"]}


def test_the_document_states_the_readers_own_expressions(parameters: dict[str, Any]) -> None:
    """Channel patterns and cursors are described by the expressions the parsers use."""
    channel = parameters["channel"]["schema"]
    assert channel["items"]["pattern"] == PATTERN_EXPRESSION
    assert channel["maxItems"] == MAX_PATTERNS
    after = parameters["after"]["schema"]["pattern"]
    assert re.fullmatch(after, "") and re.fullmatch(after, "now")
    assert re.fullmatch(CURSOR_EXPRESSION, "ab3:17") and not re.fullmatch(after, "garbage")


@pytest.mark.parametrize(
    "pattern", ["orders/+", "orders/#", "#", "+/created", "a.b:c~d@e=f/g_h-i", "+/+/#"]
)
def test_every_pattern_the_document_allows_is_read(client: httpx.Client, pattern: str) -> None:
    """Wildcards where the expression puts them are accepted."""
    assert re.fullmatch(PATTERN_EXPRESSION, pattern)
    response = client.get("/v1/events", params={"channel": pattern})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "params",
    [
        {"channel": "a", "limit": "5.5"},  # read as int(5.5) == 5 before
        {"channel": "a", "limit": "1e1.5"},
        {"channel": "a", "wait": " 0"},  # float() strips blanks; the document's number does not
        {"channel": "a", "wait": "0_0"},  # float() reads digit separators
        {"channel": "a\n"},  # Python's $ matched before a final newline
        {"channel": "a", "after": "ab3:17\n"},
        {"channel": ["a"] * (MAX_PATTERNS + 1)},  # counted after removing repeats before
    ],
)
def test_what_the_document_forbids_is_refused(client: httpx.Client, params: Any) -> None:
    """Each of these was answered 200 although the document forbids it."""
    response = client.get("/v1/events", params=params)
    assert response.status_code == 422, response.text


def test_an_empty_cursor_means_from_the_start(client: httpx.Client) -> None:
    """``after=`` is documented (and read) as not given."""
    assert client.get("/v1/events", params={"channel": "a", "after": ""}).status_code == 200
    assert client.get("/v1/events", params={"channel": "a", "limit": "5.0"}).status_code == 200
