"""The live demo pages on a node that requires credentials (not development mode).

EventSource and WebSocket cannot send an Authorization header, so the pages
trade the credentials of their panel for a ticket (POST /auth/ticket, an
HttpOnly cookie) before each connection; the token never appears in a URL.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from polyport.settings import Settings
from polyport.testing import RunningNode, serve_in_thread

ORDER = {"user_id": 1, "items": [{"product_id": 1, "quantity": 1}]}
AGENT_KEY = "agent-key-0123456789"  # may chat
SHOPPER_KEY = "shopper-key-0123456789"  # may not


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningNode]:
    """The demo shop with credentials required (overrides the development-mode node)."""
    from polyport.demo.shop import shop

    settings = Settings.model_validate(
        {
            "database": str(tmp_path_factory.mktemp("secure") / "db.sqlite3"),
            "auth": {
                "api_keys": [
                    {"key": AGENT_KEY, "subject": "agent", "scopes": ["chat"]},
                    {"key": SHOPPER_KEY, "subject": "shopper"},
                ]
            },
        }
    )
    with serve_in_thread(shop, settings) as server:
        yield server


def _expect() -> Any:
    from playwright.sync_api import expect

    return expect


def _open_with_key(watch: Any, site: RunningNode, path: str, key: str | None) -> Any:
    """Open ``path`` with ``key`` in the credentials panel (as a visitor would type it)."""
    page = watch.page
    page.goto(site.url + path)
    page.wait_for_selector("body[data-ready=true]")
    if key is not None:
        page.locator(".credentials > summary").click()
        page.locator(".credentials input[name=apiKey]").fill(key)
    return page


def test_anonymous_visitors_are_told_why_they_cannot_chat(page: Any, site: RunningNode) -> None:
    """Without credentials the chat page keeps retrying and says the node wants them."""
    expect = _expect()
    chat = _open_with_key(page, site, "/demo/chat", None)
    expect(chat.locator("#socket-status")).to_have_attribute("data-state", "reconnecting")
    expect(chat.locator("#chat-notice")).to_contain_text("401")
    expect(chat.locator("#send-form button[type=submit]")).to_be_disabled()


def test_chat_authenticates_its_websocket_with_a_ticket(page: Any, site: RunningNode) -> None:
    """With an API key that may chat, the page gets a ticket, joins and sends."""
    expect = _expect()
    tickets: list[Any] = []
    sockets: list[str] = []
    page.page.on("request", lambda r: tickets.append(r) if r.url.endswith("/auth/ticket") else None)
    page.page.on("websocket", lambda ws: sockets.append(ws.url))
    chat = _open_with_key(page, site, "/demo/chat", AGENT_KEY)
    chat.locator("#join-form button[type=submit]").click()  # join again, now with the key
    expect(chat.locator("#socket-status")).to_have_attribute("data-state", "open")
    chat.locator("#message-text").fill("signed in")
    chat.locator("#send-form button[type=submit]").click()
    expect(chat.locator("#messages li .chat-text")).to_have_text("signed in")
    assert tickets
    assert tickets[-1].header_value("x-api-key") == AGENT_KEY
    assert sockets
    assert all(AGENT_KEY not in url and "access_token" not in url for url in sockets)


def test_chat_refusal_is_shown(page: Any, site: RunningNode) -> None:
    """An API key without the chat scope is refused, and the page says so."""
    expect = _expect()
    chat = _open_with_key(page, site, "/demo/chat", SHOPPER_KEY)
    chat.locator("#join-form button[type=submit]").click()
    expect(chat.locator("#chat-notice")).to_contain_text("403")
    expect(chat.locator("#socket-status")).to_have_attribute("data-state", "reconnecting")


def test_orders_stream_is_authenticated_with_a_ticket(page: Any, site: RunningNode) -> None:
    """With an API key, the orders page's EventSource opens and follows new orders."""
    expect = _expect()
    orders = _open_with_key(page, site, "/demo/orders", None)
    expect(orders.locator("#stream-notice")).to_contain_text("401")
    orders.locator(".credentials > summary").click()
    orders.locator(".credentials input[name=apiKey]").fill(SHOPPER_KEY)
    # The page picks the key up at its next attempt (backoff: at most a few seconds here).
    expect(orders.locator("#stream-status")).to_have_attribute("data-state", "open", timeout=15_000)
    response = httpx.post(
        f"{site.url}/v1/orders", json=ORDER, headers={"x-api-key": SHOPPER_KEY}, timeout=10
    )
    assert response.status_code == 201
    order_id = response.json()["id"]
    expect(orders.locator(f'#order-rows tr[data-order="{order_id}"]')).to_have_attribute(
        "data-status", "pending"
    )
