"""URLs that cannot go on a request line as written, and attempts that fail inside the sender."""

from __future__ import annotations

from pathlib import Path

import httpx

from .conftest import (
    OrderCreated,
    Receiver,
    deliveries,
    overwrite_stored_endpoint,
    publish,
    running,
    settings_for,
    subscribe,
    wait_until,
)


def test_a_non_ascii_path_is_encoded_at_registration_and_delivered(
    tmp_path: Path, receiver: Receiver
) -> None:
    """/hook/café?q=ü is stored percent-encoded, and the receiver is sent exactly that."""
    with running(settings_for(tmp_path)) as node:
        endpoint = subscribe(node, receiver.url + "/café?q=ü&x=1")
        assert endpoint["url"] == receiver.url + "/caf%C3%A9?q=%C3%BC&x=1"
        patched = httpx.patch(
            f"{node.url}/v1/webhooks/{endpoint['id']}", json={"url": receiver.url + "/ünï"}
        )
        assert patched.json()["url"] == receiver.url + "/%C3%BCn%C3%AF"
        event_id = publish(node, OrderCreated, id=1)
        [request] = receiver.wait_count(1)
        assert request.path == "/hook/%C3%BCn%C3%AF" and request.id == event_id
        wait_until(lambda: deliveries(node, endpoint["id"])[0]["status"] == "delivered")


def test_an_attempt_that_fails_inside_the_sender_is_recorded(
    tmp_path: Path, receiver: Receiver
) -> None:
    """An exception before any answer (a corrupt secret here) is a failed attempt, retried
    on the schedule and then failed — not a delivery left pending forever with no error."""
    settings = settings_for(tmp_path)
    with running(settings) as node:
        endpoint = subscribe(node, receiver.url)
    overwrite_stored_endpoint(
        tmp_path / "db.sqlite3", endpoint["id"], secrets='[["whsec_not-base64!", null]]'
    )
    with running(settings) as node:
        publish(node, OrderCreated, id=1)
        wait_until(lambda: [d["status"] for d in deliveries(node, endpoint["id"])] == ["failed"])
        [delivery] = deliveries(node, endpoint["id"])
        assert delivery["attempts"] == 3  # the whole schedule: at once, 0.2 s, 0.2 s
        assert "internal error" in delivery["error"]
    assert receiver.requests == []
