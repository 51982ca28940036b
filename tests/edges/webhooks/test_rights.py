"""Read rights of webhook subscriptions: at registration, at fan-out, at every attempt.

A subscription must not deliver what its owner could not read by polling: a
key holding only ``webhooks:admin`` once subscribed to ``chat.*`` and was sent
the chat messages it got 403 for on ``GET /v1/events``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel

from polyport import Service, Settings
from polyport.testing import RunningNode, serve_in_thread

from .conftest import Receiver, overwrite_stored_endpoint, wait_until

svc = Service("rights", description="Event types with and without scopes.")


class Chat(BaseModel):
    text: str


class Order(BaseModel):
    id: int


ChatMessage = svc.event("chat.message", Chat, channel="chat", scopes=["chat"])
OrderCreated = svc.event("orders.created", Order, channel="orders")
News = svc.event("news.posted", Chat, channel="news", public=True)

KEY = "bXktMzItYnl0ZS1rZXktZm9yLXRoZS10ZXN0cy0hISE="  # 32 bytes, URL-safe base64
OPS = {"x-api-key": "ops-key"}  # webhooks:admin only
CHAT_OPS = {"x-api-key": "chat-ops-key"}  # webhooks:admin and chat


def settings(
    tmp_path: Path, *, chat_ops_scopes: list[str] | None = None, dev: bool = False
) -> Settings:
    scopes = ["webhooks:admin", "chat"] if chat_ops_scopes is None else chat_ops_scopes
    return Settings.model_validate(
        {
            "dev": dev,
            "database": str(tmp_path / "db.sqlite3"),
            "webhooks": {
                "allow_private": ["127.0.0.1/32"],
                "retry_schedule": [0.0],
                "poll_interval": 0.05,
                "timeout": 2.0,
                "lease_margin": 0.5,
                "secret_keys": [KEY],  # secure mode stores secrets encrypted
            },
            "auth": {
                "api_keys": [
                    {"key": "ops-key", "subject": "ops", "scopes": ["webhooks:admin"]},
                    {"key": "chat-ops-key", "subject": "chat-ops", "scopes": scopes},
                ]
            },
        }
    )


@contextmanager
def running(config: Settings) -> Iterator[RunningNode]:
    with serve_in_thread(svc, config, edges=["rest", "webhooks"]) as node:
        yield node


def publish_all(node: RunningNode) -> dict[str, str]:
    """One event of each type; their ids by type."""
    return {
        "chat.message": str(node.call(svc.publish(ChatMessage, {"text": "secret"})).id),
        "orders.created": str(node.call(svc.publish(OrderCreated, {"id": 1})).id),
        "news.posted": str(node.call(svc.publish(News, {"text": "hello"})).id),
    }


def subscribe(node: RunningNode, headers: dict[str, str], **fields: Any) -> httpx.Response:
    return httpx.post(f"{node.url}/v1/webhooks", json=fields, headers=headers)


def received_types(receiver: Receiver, count: int) -> list[str]:
    receiver.wait_count(count)
    time.sleep(0.3)  # anything else owed would have arrived by now
    return sorted(r.json()["type"] for r in receiver.requests)


def test_filters_are_checked_against_the_callers_read_rights(
    tmp_path: Path, receiver: Receiver
) -> None:
    """Unreadable types: 403; unknown types: 422; readable ones: 201 with the caller as owner."""
    with running(settings(tmp_path)) as node:
        for filters in (["chat.*"], ["chat.message"], ["chat.#"]):
            refused = subscribe(node, OPS, url=receiver.url, event_types=filters)
            assert refused.status_code == 403, (filters, refused.text)
            assert refused.json()["code"] == "PERMISSION_DENIED"
        for filters in (["nope.*"], ["orders.created", "orders.nope"]):
            unknown = subscribe(node, OPS, url=receiver.url, event_types=filters)
            assert unknown.status_code == 422, (filters, unknown.text)
            field = f"event_types.{len(filters) - 1}"
            assert field in [e["field"] for e in unknown.json()["errors"]]
        allowed = subscribe(node, CHAT_OPS, url=receiver.url, event_types=["chat.*"])
        assert allowed.status_code == 201 and allowed.json()["owner"] == "chat-ops"


def test_a_wildcard_delivers_only_what_the_owner_may_read(
    tmp_path: Path, receiver: Receiver
) -> None:
    """'*' from a key without 'chat': orders and news are sent, chat messages are not."""
    with running(settings(tmp_path)) as node:
        assert subscribe(node, OPS, url=receiver.url, event_types=["*"]).status_code == 201
        assert subscribe(node, OPS, url=receiver.url).status_code == 201  # no filter: the same
        publish_all(node)
        assert received_types(receiver, 4) == ["news.posted"] * 2 + ["orders.created"] * 2


def test_re_aiming_a_subscription_needs_the_rights_too(tmp_path: Path, receiver: Receiver) -> None:
    """Changing url or event_types checks the caller and makes them the owner; the rest does not."""
    with running(settings(tmp_path)) as node:
        created = subscribe(node, CHAT_OPS, url=receiver.url, event_types=["chat.*"]).json()
        one = f"{node.url}/v1/webhooks/{created['id']}"
        stolen = httpx.patch(one, json={"url": receiver.url + "/mine"}, headers=OPS)
        assert stolen.status_code == 403
        described = httpx.patch(one, json={"description": "ops was here"}, headers=OPS)
        assert described.status_code == 200 and described.json()["owner"] == "chat-ops"
        widened = httpx.patch(one, json={"event_types": ["*"]}, headers=OPS)
        assert widened.status_code == 200 and widened.json()["owner"] == "ops"
        publish_all(node)
        assert received_types(receiver, 2) == ["news.posted", "orders.created"]


def test_rights_are_read_again_at_delivery(tmp_path: Path, receiver: Receiver) -> None:
    """The key loses 'chat' in a new configuration: no more chat messages, not even a replay."""
    with running(settings(tmp_path)) as node:
        endpoint = subscribe(node, CHAT_OPS, url=receiver.url).json()
        first = publish_all(node)
        assert received_types(receiver, 3) == ["chat.message", "news.posted", "orders.created"]
    receiver.requests.clear()
    with running(settings(tmp_path, chat_ops_scopes=["webhooks:admin"])) as node:
        publish_all(node)
        assert received_types(receiver, 2) == ["news.posted", "orders.created"]
        replay = (
            f"{node.url}/v1/webhooks/{endpoint['id']}/deliveries/{first['chat.message']}/replay"
        )
        assert httpx.post(replay, headers=CHAT_OPS).status_code == 202

        def refused() -> bool:
            found = deliveries_as(node, endpoint["id"], CHAT_OPS)
            chat = [d for d in found if d["event_id"] == first["chat.message"]]
            return bool(chat) and chat[0]["status"] == "failed"

        wait_until(refused)
        [chat] = [
            d
            for d in deliveries_as(node, endpoint["id"], CHAT_OPS)
            if d["event_id"] == first["chat.message"]
        ]
        assert "may no longer read chat.message" in chat["error"]
        assert len(receiver.requests) == 2  # the replay sent nothing


def test_anonymous_and_unrecorded_owners_lose_their_rights_outside_development(
    tmp_path: Path, receiver: Receiver
) -> None:
    """Made in development mode (anonymous holds '*'), then served securely: public types only."""
    with running(settings(tmp_path, dev=True)) as node:
        anonymous = subscribe(node, {}, url=receiver.url).json()
        older = subscribe(node, {}, url=receiver.url).json()
        assert anonymous["owner"] == "anonymous"
    # As written before owners existed.
    overwrite_stored_endpoint(tmp_path / "db.sqlite3", older["id"], owner=None)
    with running(settings(tmp_path)) as node:
        publish_all(node)
        assert received_types(receiver, 2) == ["news.posted", "news.posted"]


def deliveries_as(
    node: RunningNode, endpoint_id: str, headers: dict[str, str]
) -> list[dict[str, Any]]:
    response = httpx.get(f"{node.url}/v1/webhooks/{endpoint_id}/deliveries", headers=headers)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items
