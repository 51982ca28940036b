"""SSE and WebSocket with the browser's own clients (Chromium's EventSource and WebSocket).

The pages under test are the demo's live pages: /demo/orders (EventSource) and
/demo/chat (WebSocket); raw clients in the page check the edges themselves.
Every event a client receives is compared with the node's own log, read over
polling, so "in order, exactly once" is checked against the source of truth.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from polyport.testing import RunningNode

ORDER = {"user_id": 1, "items": [{"product_id": 1, "quantity": 1}]}
ORDER_CHANNELS = {"channel": "orders/#"}


def _expect() -> Any:
    from playwright.sync_api import expect

    return expect


def _open(watch: Any, site: RunningNode, path: str) -> Any:
    page = watch.page
    page.goto(site.url + path)
    page.wait_for_selector("body[data-ready=true]")
    return page


def _cursor(site: RunningNode, channel: str) -> str:
    """Where the log of ``channel`` stands now."""
    response = httpx.get(
        f"{site.url}/v1/events",
        params={"channel": channel, "after": "now", "limit": 1},
        timeout=10,
    )
    response.raise_for_status()
    cursor: str = response.json()["next"]
    return cursor


def _log_after(site: RunningNode, channel: str, cursor: str) -> list[dict[str, Any]]:
    """The events of ``channel`` after ``cursor``, from the node's log (by polling)."""
    response = httpx.get(
        f"{site.url}/v1/events", params={"channel": channel, "after": cursor}, timeout=10
    )
    response.raise_for_status()
    events: list[dict[str, Any]] = response.json()["events"]
    return events


def _place_order(site: RunningNode) -> int:
    response = httpx.post(f"{site.url}/v1/orders", json=ORDER, timeout=10)
    assert response.status_code == 201, response.text
    order_id: int = response.json()["id"]
    return order_id


def _move_order(site: RunningNode, order_id: int, status: str) -> None:
    response = httpx.put(f"{site.url}/v1/orders/{order_id}", json={"status": status}, timeout=10)
    assert response.status_code == 200, response.text


def _edge(site: RunningNode, name: str) -> Any:
    return next(edge for edge in site.node.edges if edge.name == name)


def _drop_sse_streams(site: RunningNode) -> int:
    """End every SSE response from the server's side, as a restart or a proxy would."""
    edge = _edge(site, "sse")

    async def drop() -> int:
        streams = list(edge.streams)
        for stream in streams:
            stream.close()
        return len(streams)

    dropped: int = site.call(drop())
    return dropped


def _open_sse_streams(site: RunningNode) -> int:
    edge = _edge(site, "sse")

    async def count() -> int:
        return len(edge.streams)

    counted: int = site.call(count())
    return counted


def _drop_websockets(site: RunningNode) -> int:
    """Close every WebSocket from the server's side (1001 going away)."""
    edge = _edge(site, "ws")

    async def drop() -> int:
        sockets = list(edge.sockets)
        for ws in sockets:
            ws.shutdown()
        return len(sockets)

    dropped: int = site.call(drop())
    return dropped


# A recorder of one EventSource, installed in a page: what arrived, and how often
# the connection opened. It resolves once the stream is open (subscribed).
EVENT_SOURCE_RECORDER = """(url) => new Promise((resolve, reject) => {
    window.received = [];
    window.opens = 0;
    const source = new EventSource(url);
    window.recorder = source;
    for (const type of ["orders.created", "orders.updated", "orders.deleted"]) {
        source.addEventListener(type, (message) => window.received.push(
            {type: message.type, id: message.lastEventId, envelope: JSON.parse(message.data)}));
    }
    source.addEventListener("open", () => { window.opens += 1; resolve(); });
    setTimeout(() => reject(new Error("the stream did not open")), 8000);
})"""


def _wait_for_count(page: Any, expression: str, count: int) -> None:
    page.wait_for_function(f"({expression}) >= {count}", timeout=15_000)


# -- Server-Sent Events ---------------------------------------------------------------------


def test_event_source_receives_rest_events_in_order(page: Any, site: RunningNode) -> None:
    """EventSource on orders/# gets what REST publishes: every event, in the log's order."""
    browser_page = page.page
    browser_page.goto(site.url + "/healthz")  # any page of the node's origin
    cursor = _cursor(site, "orders/#")
    browser_page.evaluate(EVENT_SOURCE_RECORDER, "/v1/events/stream?channel=orders/%23")
    first, second = _place_order(site), _place_order(site)
    _move_order(site, first, "paid")
    _move_order(site, second, "cancelled")
    _wait_for_count(browser_page, "window.received.length", 4)
    received = browser_page.evaluate("window.received")
    expected = _log_after(site, "orders/#", cursor)
    assert [e["id"] for e in received] == [e["id"] for e in expected]
    orders = [(e["type"], e["envelope"]["data"]) for e in received]
    assert [(kind, data["id"], data["status"]) for kind, data in orders] == [
        ("orders.created", first, "pending"),
        ("orders.created", second, "pending"),
        ("orders.updated", first, "paid"),
        ("orders.updated", second, "cancelled"),
    ]
    # `id:` is the envelope's id: the cursor a reconnect resumes from.
    assert all(e["id"] == e["envelope"]["id"] for e in received)
    browser_page.evaluate("window.recorder.close()")


def test_event_source_resumes_after_the_server_drops_it(page: Any, site: RunningNode) -> None:
    """Streams closed by the server: EventSource reconnects with Last-Event-ID, nothing is
    lost or repeated — both on /demo/orders and for a bare EventSource in the same page."""
    expect = _expect()
    streams: list[Any] = []
    page.page.on("request", lambda r: streams.append(r) if "/events/stream" in r.url else None)
    demo = _open(page, site, "/demo/orders")
    status = demo.locator("#stream-status")
    expect(status).to_have_attribute("data-state", "open")
    cursor = _cursor(site, "orders/#")
    demo.evaluate(EVENT_SOURCE_RECORDER, "/v1/events/stream?channel=orders/%23")

    before = [_place_order(site), _place_order(site)]
    _wait_for_count(demo, "window.received.length", 2)
    last_before_drop = demo.evaluate("window.received.at(-1).id")
    expect(demo.locator("#last-event-id")).to_have_text(last_before_drop)

    assert _drop_sse_streams(site) >= 2
    expect(status).to_have_attribute("data-state", "reconnecting")
    # Most likely while nobody is connected: browsers wait `retry: 2000` ms to reconnect.
    during = [_place_order(site), _place_order(site)]
    _wait_for_count(demo, "window.opens", 2)
    expect(status).to_have_attribute("data-state", "open")
    after = [_place_order(site)]
    _move_order(site, before[0], "paid")
    _move_order(site, during[0], "cancelled")
    _wait_for_count(demo, "window.received.length", 7)

    expected = [e["id"] for e in _log_after(site, "orders/#", cursor)]
    assert len(expected) == 7
    received = [e["id"] for e in demo.evaluate("window.received")]
    assert received == expected, "the bare EventSource missed or repeated an event"
    assert demo.evaluate("window.opens") == 2  # one drop, one reconnection
    log = demo.locator("#event-log li")
    expect(log).to_have_count(7)
    shown = log.evaluate_all("items => items.map(li => li.dataset.id)")
    assert shown[::-1] == expected, "the page missed or repeated an event"  # newest first

    # Every order is on screen once, in its latest status.
    for order_id in (*before, *during, *after):
        expect(demo.locator(f'#order-rows tr[data-order="{order_id}"]')).to_have_count(1)
    expect(demo.locator(f'tr[data-order="{before[0]}"]')).to_have_attribute("data-status", "paid")
    expect(demo.locator(f'tr[data-order="{during[0]}"]')).to_have_attribute(
        "data-status", "cancelled"
    )
    # The browser's reconnections resumed from the last id seen before the drop.
    resumed = [r.header_value("last-event-id") for r in streams]
    assert resumed.count(last_before_drop) == 2, resumed
    assert _open_sse_streams(site) == 2
    demo.evaluate("window.recorder.close()")


def test_orders_page_places_and_moves_orders(page: Any, site: RunningNode) -> None:
    """/demo/orders: the form places an order, the buttons move it; the feed redraws the row."""
    expect = _expect()
    demo = _open(page, site, "/demo/orders")
    expect(demo.locator("#stream-status")).to_have_attribute("data-state", "open")
    earlier = _place_order(site)  # before the click: the list must stay ordered, newest on top
    expect(demo.locator(f'tr[data-order="{earlier}"]')).to_be_visible()
    demo.locator("#place-order button[type=submit]").click()
    expect(demo.locator("#place-result")).to_contain_text("201: order #")
    placed = int(demo.locator("#place-result").inner_text().split("#")[1].split()[0])
    row = demo.locator(f'tr[data-order="{placed}"]')
    expect(row).to_have_attribute("data-status", "pending")
    expect(demo.locator("#order-rows tr").first).to_have_attribute("data-order", str(placed))
    for move in ("paid", "shipped", "delivered"):
        row.locator(f'button[data-move="{move}"]').click()
        expect(row).to_have_attribute("data-status", move)
        expect(row.locator(".order-status")).to_have_text(move)
    expect(row.locator("button.move:enabled")).to_have_count(0)  # delivered is final
    # A move the node refuses shows its problem, and the row stays as it is.
    pending = demo.locator(f'tr[data-order="{earlier}"]')
    button = pending.locator('button[data-move="delivered"]')
    expect(button).to_be_disabled()  # the page offers only moves that make sense…
    button.evaluate("b => { b.disabled = false; }")  # …but the node is the judge
    button.click()
    expect(demo.locator("#action-result")).to_contain_text(
        "409: an order cannot go from pending to delivered"
    )
    expect(pending).to_have_attribute("data-status", "pending")
    expect(demo.locator("#last-event-id")).not_to_have_text("—")


# -- WebSocket --------------------------------------------------------------------------------

WEBSOCKET_SUBSCRIBER = """(after) => new Promise((resolve, reject) => {
    window.wsFrames = [];
    const socket = new WebSocket(`ws://${location.host}/ws`, ["polyport.v1"]);
    window.socket = socket;
    socket.addEventListener("message", (message) => {
        const frame = JSON.parse(message.data);
        window.wsFrames.push(frame);
        if (frame.type === "welcome") {
            socket.send(JSON.stringify(
                {id: 1, type: "subscribe", channels: ["orders/#"], after}));
        } else if (frame.type === "subscribed") {
            resolve({protocol: socket.protocol, frame});
        } else if (frame.type === "error") {
            reject(new Error(JSON.stringify(frame)));
        }
    });
    socket.addEventListener("close", (e) => reject(new Error(`closed ${e.code}`)));
    setTimeout(() => reject(new Error("not subscribed in time")), 8000);
})"""


def test_websocket_receives_rest_events(page: Any, site: RunningNode) -> None:
    """A browser WebSocket subscribes to orders/# and gets REST's events as event frames."""
    browser_page = page.page
    browser_page.goto(site.url + "/healthz")
    cursor = _cursor(site, "orders/#")
    answer = browser_page.evaluate(WEBSOCKET_SUBSCRIBER, cursor)
    assert answer["protocol"] == "polyport.v1"
    assert answer["frame"]["recovered"] is True
    assert answer["frame"]["channels"] == ["orders/#"]
    order_id = _place_order(site)
    _move_order(site, order_id, "paid")
    _wait_for_count(browser_page, "window.wsFrames.filter(f => f.type === 'event').length", 2)
    frames = browser_page.evaluate("window.wsFrames")
    assert frames[0]["type"] == "welcome"
    events = [f["event"] for f in frames if f["type"] == "event"]
    assert [e["id"] for e in events] == [e["id"] for e in _log_after(site, "orders/#", cursor)]
    assert [(e["type"], e["data"]["id"], e["data"]["status"]) for e in events] == [
        ("orders.created", order_id, "pending"),
        ("orders.updated", order_id, "paid"),
    ]
    browser_page.evaluate("window.socket.close()")


@pytest.fixture
def second_page(browser: Any, site: RunningNode, page: Any) -> Iterator[Any]:
    """Another visitor: a page in its own browser context, watched like ``page``."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(10_000)
    watch = type(page)(context.new_page(), site.url)
    try:
        yield watch
    finally:
        context.close()
    assert watch.foreign_requests() == [], "the page contacted another host"
    assert watch.errors == [], "the page logged errors"


def _join_chat(watch: Any, site: RunningNode, room: str, name: str) -> Any:
    expect = _expect()
    chat = _open(watch, site, f"/demo/chat?room={room}")
    chat.locator("#join-form input[name=user]").fill(name)
    expect(chat.locator("#socket-status")).to_have_attribute("data-state", "open")
    expect(chat.locator("#room-channel")).to_have_text(f"chat/{room}")
    return chat


def _say(chat: Any, text: str) -> None:
    chat.locator("#message-text").fill(text)
    chat.locator("#send-form button[type=submit]").click()


def test_chat_between_two_browsers(page: Any, second_page: Any, site: RunningNode) -> None:
    """Two visitors in one room of /demo/chat: each message reaches both, as text."""
    expect = _expect()
    room = f"test-{uuid.uuid4().hex[:8]}"
    alice = _join_chat(page, site, room, "alice")
    bob = _join_chat(second_page, site, room, "bob")

    _say(alice, "Hello <b>Bob</b>!")
    for chat in (alice, bob):
        message = chat.locator("#messages li").last
        expect(message).to_have_attribute("data-user", "alice")
        expect(message.locator(".chat-text")).to_have_text("Hello <b>Bob</b>!")
        expect(message.locator("b")).to_have_count(0)  # inserted as text, never as HTML
    expect(alice.locator("#messages li").last).to_have_class("chat-message fresh mine")
    expect(bob.locator("#messages li.mine")).to_have_count(0)

    _say(bob, "Hi Alice")
    for chat in (alice, bob):
        expect(chat.locator("#messages li")).to_have_count(2)
        expect(chat.locator("#messages li").last).to_have_attribute("data-user", "bob")
    ids = [
        chat.locator("#messages li").evaluate_all("items => items.map(li => li.dataset.id)")
        for chat in (alice, bob)
    ]
    assert ids[0] == ids[1]
    assert alice.locator("#last-event-id").inner_text() == ids[0][-1]


def test_chat_shows_error_frames(page: Any, site: RunningNode) -> None:
    """A message the node refuses (too long) shows its error frame; the text is kept."""
    expect = _expect()
    chat = _join_chat(page, site, f"test-{uuid.uuid4().hex[:8]}", "carol")
    too_long = "x" * 2001
    # The input's own maxlength would stop a person; a script can still send it.
    chat.evaluate("document.getElementById('message-text').removeAttribute('maxlength')")
    _say(chat, too_long)
    notice = chat.locator("#chat-notice")
    expect(notice).to_contain_text("INVALID_ARGUMENT")
    expect(notice).to_contain_text("text")
    expect(chat.locator("#message-text")).to_have_value(too_long)
    expect(chat.locator("#messages li")).to_have_count(0)


def test_chat_shows_a_refused_subscription_and_retries(page: Any, site: RunningNode) -> None:
    """An error frame answering `subscribe` is shown; the page retries, and joins once allowed."""
    expect = _expect()
    refused: list[str] = []

    def refuse_first_subscribe(ws: Any) -> None:
        server = ws.connect_to_server()

        def from_page(message: Any) -> None:
            frame = json.loads(message)
            if frame.get("type") == "subscribe" and not refused:
                refused.append(message)
                error = {"code": "PERMISSION_DENIED", "message": "no chat today"}
                ws.send(json.dumps({"id": frame["id"], "type": "error", "error": error}))
            else:
                server.send(message)

        ws.on_message(from_page)

    page.page.route_web_socket(re.compile(r"/ws$"), refuse_first_subscribe)
    chat = _open(page, site, f"/demo/chat?room=test-{uuid.uuid4().hex[:8]}")
    notice = chat.locator("#chat-notice")
    expect(notice).to_contain_text("PERMISSION_DENIED: no chat today")
    expect(chat.locator("#socket-status")).to_have_attribute("data-state", "open", timeout=15_000)
    expect(notice).to_be_hidden()  # joined after all: the error is over
    assert len(refused) == 1


def test_chat_resumes_after_the_server_drops_it(page: Any, site: RunningNode) -> None:
    """Sockets closed by the server: the page reconnects and subscribes after the last
    event id (or its join cursor), so messages sent meanwhile arrive once, in order."""
    from polyport.demo.shop import ChatEvent, ChatMessage

    expect = _expect()
    room = f"test-{uuid.uuid4().hex[:8]}"
    subscribes: list[dict[str, Any]] = []

    def watch_socket(ws: Any) -> None:
        def sent(payload: Any) -> None:
            if isinstance(payload, str) and '"subscribe"' in payload:
                subscribes.append(json.loads(payload))

        ws.on("framesent", sent)

    page.page.on("websocket", watch_socket)
    chat = _join_chat(page, site, room, "dave")
    status = chat.locator("#socket-status")
    cursor = _cursor(site, f"chat/{room}")

    def say(text: str) -> None:
        site.call(ChatEvent.publish(ChatMessage(room=room, user="support", text=text)))

    # A drop before any message: the page resumes from where it joined.
    assert _drop_websockets(site) >= 1
    say("one")
    say("two")
    expect(status).to_have_attribute("data-state", "open", timeout=15_000)
    expect(chat.locator("#messages li")).to_have_count(2)
    say("three")
    expect(chat.locator("#messages li")).to_have_count(3)
    last_before_drop = chat.locator("#messages li").last.get_attribute("data-id")
    # A drop after messages: the page resumes after the last one it got.
    assert _drop_websockets(site) >= 1
    say("four")
    expect(chat.locator("#messages li")).to_have_count(4, timeout=15_000)
    expect(status).to_have_attribute("data-state", "open")

    expected = _log_after(site, f"chat/{room}", cursor)
    assert [e["data"]["text"] for e in expected] == ["one", "two", "three", "four"]
    shown = chat.locator("#messages li").evaluate_all("items => items.map(li => li.dataset.id)")
    assert shown == [e["id"] for e in expected]
    assert [s["after"] for s in subscribes][1:] == [subscribes[0]["after"], last_before_drop]


def test_dashboard_and_demo_pages_link_each_other(page: Any, site: RunningNode) -> None:
    """The dashboard's header shows both demo pages (this node serves them); they link back."""
    expect = _expect()
    dashboard = _open(page, site, "/")
    dashboard.locator("#demo-orders-link").click()
    expect(dashboard).to_have_url(f"{site.url}/demo/orders")
    dashboard.wait_for_selector("body[data-ready=true]")
    dashboard.locator(".topbar-links").get_by_role("link", name="support chat").click()
    expect(dashboard).to_have_url(re.compile(r"/demo/chat(\?room=support)?$"))  # the room joined
    dashboard.wait_for_selector("body[data-ready=true]")
    dashboard.locator(".topbar-links").get_by_role("link", name="dashboard").click()
    expect(dashboard.locator("#demo-chat-link")).to_be_visible()
