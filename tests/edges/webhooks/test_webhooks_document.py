"""The subscriptions API: what the OpenAPI document says is what the server reads.

Each case was a disagreement schemathesis found once the webhook targets
resolved: null accepted where the document said string, ``0`` taken for a
boolean, refusals the document could not foresee (filters, an empty recovery
window, a disabled endpoint), a cursor documented as any string.
"""

from __future__ import annotations

import re
from typing import Any

import httpx

from polyport.edges.webhooks.endpoints import compile_filters
from polyport.testing import RunningNode

from .conftest import subscribe

URL = "http://127.0.0.1:9/hook"


def _operation(document: dict[str, Any], path: str, verb: str) -> dict[str, Any]:
    found: dict[str, Any] = document["paths"][path][verb]
    return found


def _body(document: dict[str, Any], path: str, verb: str) -> dict[str, Any]:
    content = _operation(document, path, verb)["requestBody"]["content"]
    schema: dict[str, Any] = content["application/json"]["schema"]
    return schema


def test_filters_are_the_enum_of_those_that_match_an_event_type(node: RunningNode) -> None:
    """Every listed filter matches some event type, and one that matches none is not listed
    (it is the 422 the server answers)."""
    document = httpx.get(f"{node.url}/openapi.json").json()
    listed = _body(document, "/v1/webhooks", "post")["properties"]["event_types"]["items"]["enum"]
    assert {"#", "*", "orders.+", "orders.#", "*.created"} <= set(listed)
    edge: Any = next(e for e in node.node.edges if e.name == "webhooks")
    names = list(edge.rights.events)  # the contract's, and webhooks.endpoint.disabled
    for pattern in listed:
        matcher = compile_filters([pattern])
        assert matcher is not None and any(matcher.match(n) for n in names), pattern
    assert "nothing.here" not in listed
    refused = httpx.post(
        f"{node.url}/v1/webhooks", json={"url": URL, "event_types": ["nothing.here"]}
    )
    assert refused.status_code == 422


def test_null_where_the_models_take_none_and_strict_types(node: RunningNode) -> None:
    """Null is documented where it is read as absent; 0 is no boolean, true no time."""
    document = httpx.get(f"{node.url}/openapi.json").json()
    create = _body(document, "/v1/webhooks", "post")["properties"]
    assert "null" in create["secret"]["type"] and create["enabled"]["type"] == "boolean"
    patch = _body(document, "/v1/webhooks/{id}", "patch")["properties"]
    assert all("null" in schema["type"] for schema in patch.values())
    recover = _body(document, "/v1/webhooks/{id}/recover", "post")["properties"]
    assert {"type": "null"} in recover["until"]["anyOf"]
    seconds = {"type": "number", "minimum": 0, "maximum": 253_402_300_799}
    assert seconds in recover["since"]["anyOf"]  # Unix seconds, as read: up to the year 9999
    assert (
        httpx.post(f"{node.url}/v1/webhooks", json={"url": URL, "secret": None}).status_code == 201
    )
    assert httpx.post(f"{node.url}/v1/webhooks", json={"url": URL, "enabled": 0}).status_code == 422
    endpoint = subscribe(node, URL)
    recover_url = f"{node.url}/v1/webhooks/{endpoint['id']}/recover"
    since = "2000-01-01T00:00:00Z"
    assert httpx.post(recover_url, json={"since": since, "until": True}).status_code == 422
    # Numbers are seconds: the document's whole range is taken, nothing beyond it, and a
    # large one is not read as milliseconds (pydantic's guess made 1e11 a time in 1973).
    for seconds_ok in (0, 1_700_000_000, 1e11, 253_402_300_799):
        assert httpx.post(recover_url, json={"since": seconds_ok}).status_code == 202
    for beyond in (-1, -3.48551890414034e16, 253_402_300_800, 1e12):
        answer = httpx.post(recover_url, json={"since": beyond})
        assert answer.status_code == 422 and "Unix seconds" in answer.text, beyond


def test_the_secret_pattern_is_what_the_signer_reads(node: RunningNode) -> None:
    """``whsec_`` and 24 to 64 bytes of base64: a shorter key is refused by both."""
    document = httpx.get(f"{node.url}/openapi.json").json()
    pattern = _body(document, "/v1/webhooks", "post")["properties"]["secret"]["pattern"]
    good = "whsec_" + "A" * 32
    short = "whsec_c2hvcnQ="
    assert re.fullmatch(pattern, good) and not re.fullmatch(pattern, short)
    assert (
        httpx.post(f"{node.url}/v1/webhooks", json={"url": URL, "secret": good}).status_code == 201
    )
    assert (
        httpx.post(f"{node.url}/v1/webhooks", json={"url": URL, "secret": short}).status_code == 422
    )


def test_refusals_of_state_are_conflicts_and_an_empty_window_is_empty(node: RunningNode) -> None:
    """A disabled endpoint cannot be tested or recovered (409: its state, not the request);
    a recovery window that ends before it starts recovers nothing (was a 422)."""
    endpoint = subscribe(node, URL)
    base = f"{node.url}/v1/webhooks/{endpoint['id']}"
    window = {"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}
    empty = httpx.post(f"{base}/recover", json=window)
    assert empty.status_code == 202 and empty.json()["recovered"] == 0
    httpx.post(f"{base}/disable")
    assert httpx.post(f"{base}/test", json={}).status_code == 409
    assert httpx.post(f"{base}/recover", json={"since": window["since"]}).status_code == 409


def test_the_log_cursor_and_empty_values(node: RunningNode) -> None:
    """``before`` is a delivery's ``seq`` as documented (the ``{created}~{event_id}`` of
    older nodes is refused like any other stranger); empty values are refused as the
    document says (they were read as absent)."""
    endpoint = subscribe(node, URL)
    document = httpx.get(f"{node.url}/openapi.json").json()
    listing = _operation(document, "/v1/webhooks/{id}/deliveries", "get")["parameters"]
    pattern = next(p for p in listing if p["name"] == "before")["schema"]["pattern"]
    url = f"{node.url}/v1/webhooks/{endpoint['id']}/deliveries"
    cases = (("15", 200), ("nope", 422), ("1.5~ev", 422), (" 1", 422), ("-1", 422), ("1.5", 422))
    for before, status in cases:
        assert bool(re.fullmatch(pattern, before)) == (status == 200), before
        assert httpx.get(url, params={"before": before}).status_code == status, before
    for query in ({"limit": ""}, {"status": ""}, {"before": ""}, {"limit": "²"}):
        assert httpx.get(url, params=query).status_code == 422, query


def test_unix_seconds_are_read_as_seconds() -> None:
    """1e11 is the year 5138 in seconds; pydantic alone reads it as milliseconds (1973)."""
    from polyport.edges.webhooks.api import RecoverIn

    assert RecoverIn.model_validate({"since": 1e11}).since.year == 5138
