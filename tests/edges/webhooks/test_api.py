"""The subscriptions API: CRUD, validation as problems, authorization, OpenAPI."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from polyport import Settings
from polyport.testing import RunningNode

from .conftest import Receiver, running, settings_for, subscribe

URL = "http://127.0.0.1:9/hook"
KEY = "bXktMzItYnl0ZS1rZXktZm9yLXRoZS10ZXN0cy0hISE="  # 32 bytes, URL-safe base64


def test_create_get_list_update_delete(node: RunningNode) -> None:
    """The lifecycle of a subscription; the secret appears only on creation."""
    with httpx.Client(base_url=node.url) as c:
        created = c.post(
            "/v1/webhooks",
            json={"url": URL, "event_types": ["orders.*"], "description": "shop"},
        )
        assert created.status_code == 201
        body = created.json()
        assert created.headers["location"] == f"/v1/webhooks/{body['id']}"
        assert body["secret"].startswith("whsec_") and body["enabled"] is True
        got = c.get(f"/v1/webhooks/{body['id']}").json()
        assert "secret" not in got and got["event_types"] == ["orders.*"]
        assert got["description"] == "shop"
        others = [subscribe(node, URL)["id"] for _ in range(2)]
        first = c.get("/v1/webhooks", params={"limit": 2}).json()
        assert len(first["items"]) == 2 and first["next_cursor"]
        rest = c.get("/v1/webhooks", params={"limit": 2, "cursor": first["next_cursor"]}).json()
        ids = [i["id"] for i in first["items"] + rest["items"]]
        assert sorted(ids) == sorted([body["id"], *others]) and rest["next_cursor"] is None
        patched = c.patch(
            f"/v1/webhooks/{body['id']}", json={"event_types": ["notes.+"], "description": "x"}
        )
        assert patched.status_code == 200
        assert patched.json()["event_types"] == ["notes.+"] and patched.json()["url"] == URL
        off = c.post(f"/v1/webhooks/{body['id']}/disable").json()
        assert off["enabled"] is False and off["disabled_reason"] == "disabled through the API"
        on = c.post(f"/v1/webhooks/{body['id']}/enable").json()
        assert on["enabled"] is True and on["disabled_reason"] is None
        assert c.delete(f"/v1/webhooks/{body['id']}").status_code == 204
        missing = c.get(f"/v1/webhooks/{body['id']}")
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/problem+json"
        assert missing.json()["code"] == "NOT_FOUND"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "url"),
        ({"url": "ftp://example.com/x"}, "url"),
        ({"url": "http://user:pw@127.0.0.1/x"}, "url"),
        ({"url": URL, "event_types": ["orders.#.x"]}, "event_types.0"),
        ({"url": URL, "event_types": ["Orders"]}, "event_types.0"),
        ({"url": URL, "secret": "not-a-secret"}, "secret"),
        ({"url": URL, "secret": "whsec_c2hvcnQ="}, "secret"),
        ({"url": URL, "colour": "red"}, "colour"),
        ({"url": URL, "event_types": "orders.created"}, "event_types"),
    ],
)
def test_bad_input_is_a_422_problem(node: RunningNode, body: dict, field: str) -> None:  # type: ignore[type-arg]
    """Each mistake is named by its field in an RFC 9457 problem."""
    response = httpx.post(f"{node.url}/v1/webhooks", json=body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["code"] == "INVALID_ARGUMENT" and problem["status"] == 422
    assert field in [e["field"] for e in problem["errors"]]


def test_unparseable_and_wrong_media_type(node: RunningNode) -> None:
    """Not JSON: 400; not declared as JSON: 415."""
    bad = httpx.post(
        f"{node.url}/v1/webhooks", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert bad.status_code == 400 and bad.json()["code"] == "INVALID_ARGUMENT"
    text = httpx.post(
        f"{node.url}/v1/webhooks", content=b"url=x", headers={"content-type": "text/plain"}
    )
    assert text.status_code == 415


def test_delivery_log_query_checks(node: RunningNode) -> None:
    """Unknown status, out-of-range limit and a garbled cursor are 422s."""
    endpoint = subscribe(node, URL)
    base = f"{node.url}/v1/webhooks/{endpoint['id']}/deliveries"
    for query in ({"status": "lost"}, {"limit": "0"}, {"limit": "x"}, {"before": "nope"}):
        assert httpx.get(base, params=query).status_code == 422, query
    assert httpx.get(base).json() == {
        "endpoint_id": endpoint["id"],
        "items": [],
        "next_cursor": None,
    }
    assert (
        httpx.post(f"{node.url}/v1/webhooks/{endpoint['id']}/recover", json={}).status_code == 422
    )


@pytest.fixture
def secure(tmp_path: Path, receiver: Receiver) -> Iterator[RunningNode]:
    settings = Settings.model_validate(
        {
            "database": str(tmp_path / "db.sqlite3"),
            # Outside development mode secrets are stored encrypted: a key is needed.
            "webhooks": {**settings_for(tmp_path).webhooks.model_dump(), "secret_keys": [KEY]},
            "auth": {
                "api_keys": [
                    {"key": "user-key", "subject": "user"},
                    {"key": "ops-key", "subject": "ops", "scopes": ["webhooks:admin"]},
                ]
            },
        }
    )
    with running(settings) as node:
        yield node


def test_secure_mode_needs_the_admin_scope(secure: RunningNode, receiver: Receiver) -> None:
    """Anonymous: 401; signed in without webhooks:admin: 403; with it: allowed."""
    with httpx.Client(base_url=secure.url) as c:
        anonymous = c.post("/v1/webhooks", json={"url": receiver.url})
        assert anonymous.status_code == 401 and "www-authenticate" in anonymous.headers
        assert c.get("/v1/webhooks").status_code == 401
        user = c.post("/v1/webhooks", json={"url": receiver.url}, headers={"x-api-key": "user-key"})
        assert user.status_code == 403 and "webhooks:admin" in user.json()["detail"]
        ops = {"x-api-key": "ops-key"}
        created = c.post("/v1/webhooks", json={"url": receiver.url}, headers=ops)
        assert created.status_code == 201
        endpoint_id = created.json()["id"]
        assert c.get(f"/v1/webhooks/{endpoint_id}/deliveries").status_code == 401
        assert c.get(f"/v1/webhooks/{endpoint_id}/deliveries", headers=ops).status_code == 200


def test_the_api_is_in_the_openapi_document(node: RunningNode) -> None:
    """Every route is described, with the schemas it refers to."""
    document = httpx.get(f"{node.url}/openapi.json").json()
    paths = document["paths"]
    assert set(paths["/v1/webhooks"]) == {"get", "post"}
    assert set(paths["/v1/webhooks/{id}"]) == {"get", "patch", "delete"}
    for tail in ("rotate", "enable", "disable", "test", "recover"):
        assert "post" in paths[f"/v1/webhooks/{{id}}/{tail}"]
    assert "get" in paths["/v1/webhooks/{id}/deliveries/{event_id}"]
    assert "post" in paths["/v1/webhooks/{id}/deliveries/{event_id}/replay"]
    schemas = document["components"]["schemas"]
    assert {"WebhookEndpoint", "WebhookDelivery", "WebhookMessage"} <= set(schemas)
