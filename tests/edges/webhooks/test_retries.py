"""Failures: retries on the schedule, Retry-After, redirects, 410, disabling, limits, replay."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from .conftest import (
    OrderCreated,
    Received,
    Receiver,
    deliveries,
    publish,
    running,
    settings_for,
    subscribe,
    wait_until,
)


def scripted(*statuses: int, headers: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    """Answer with ``statuses`` in turn, then 200 for ever."""
    queue = list(statuses)

    def behaviour(_: Received) -> tuple[int, dict[str, str], bytes]:
        if queue:
            return queue.pop(0), dict(headers or {}), b"nope"
        return 200, {}, b"ok"

    return behaviour


def final(node_url: str, endpoint_id: str, event_id: str) -> dict:  # type: ignore[type-arg]
    """The delivery once it is no longer pending."""
    url = f"{node_url}/v1/webhooks/{endpoint_id}/deliveries/{event_id}"
    found: dict = {}  # type: ignore[type-arg]

    def settled() -> bool:
        found.update(httpx.get(url).json())
        return found.get("status") in ("delivered", "failed")

    wait_until(settled)
    return found


def test_two_failures_then_success_keep_the_webhook_id(tmp_path: Path, receiver: Receiver) -> None:
    """500, 500, 200: three attempts with the same id and signature secret; delivered once."""
    receiver.behaviour = scripted(500, 500)
    with running(settings_for(tmp_path)) as node:
        endpoint = subscribe(node, receiver.url)
        event_id = publish(node, OrderCreated, id=1)
        received = receiver.wait_count(3)
        assert [r.id for r in received] == [event_id] * 3
        for r in received:
            Webhook(endpoint["secret"]).verify(r.body, r.headers)
        delivery = final(node.url, endpoint["id"], event_id)
        assert delivery["status"] == "delivered" and delivery["attempts"] == 3
        assert [a["response_code"] for a in delivery["history"]] == [500, 500, 200]
        time.sleep(0.5)
        assert len(receiver.requests) == 3


def test_the_schedule_runs_out_and_the_delivery_fails(tmp_path: Path, receiver: Receiver) -> None:
    """Always 500: as many attempts as the schedule has entries, then failed."""
    receiver.behaviour = lambda _: (500, {}, b"down")
    with running(settings_for(tmp_path)) as node:
        endpoint = subscribe(node, receiver.url)
        event_id = publish(node, OrderCreated, id=1)
        delivery = final(node.url, endpoint["id"], event_id)
        assert delivery["status"] == "failed" and delivery["attempts"] == 3
        assert delivery["error"] == "the endpoint answered 500"
        assert delivery["response_body"] == "down"


def test_retry_after_is_a_floor(tmp_path: Path, receiver: Receiver) -> None:
    """A 503 with Retry-After: 1 is attempted again no sooner than a second later."""
    receiver.behaviour = scripted(503, headers={"retry-after": "1"})
    with running(settings_for(tmp_path)) as node:
        subscribe(node, receiver.url)
        publish(node, OrderCreated, id=1)
        first, second = receiver.wait_count(2)
        assert second.at - first.at >= 0.95


def test_retry_after_is_capped(tmp_path: Path, receiver: Receiver) -> None:
    """A Retry-After of an hour waits only webhooks.max_retry_after."""
    receiver.behaviour = scripted(429, headers={"retry-after": "3600"})
    with running(settings_for(tmp_path, max_retry_after=0.3)) as node:
        endpoint = subscribe(node, receiver.url)
        event_id = publish(node, OrderCreated, id=1)
        assert final(node.url, endpoint["id"], event_id)["status"] == "delivered"


def test_a_redirect_is_a_failure_and_is_not_followed(tmp_path: Path, receiver: Receiver) -> None:
    """302 Found: every attempt goes to the registered URL, none to the Location."""
    receiver.behaviour = lambda _: (302, {"location": "/elsewhere"}, b"")
    with running(settings_for(tmp_path)) as node:
        endpoint = subscribe(node, receiver.url)
        event_id = publish(node, OrderCreated, id=1)
        delivery = final(node.url, endpoint["id"], event_id)
        assert delivery["status"] == "failed" and delivery["attempts"] == 3
        assert "redirect (302) not followed" in delivery["error"]
        assert {r.path for r in receiver.requests} == {"/hook"}


def test_410_disables_the_endpoint_and_publishes_an_event(
    tmp_path: Path, receiver: Receiver
) -> None:
    """410 Gone: no retry, the endpoint is disabled, and a watcher hears about it."""
    receiver.behaviour = lambda r: (410, {}, b"") if "gone" in r.path else (200, {}, b"ok")
    receiver.delay = 0.2  # three attempts in flight together, three 410s: one disabling
    with running(settings_for(tmp_path)) as node:
        gone = subscribe(node, receiver.url + "?gone", event_types=["orders.#"])
        subscribe(node, receiver.url + "?watch", event_types=["webhooks.endpoint.*"])
        event_id, *others = [publish(node, OrderCreated, id=i) for i in (1, 2, 3)]
        delivery = final(node.url, gone["id"], event_id)
        assert delivery["status"] == "failed" and delivery["attempts"] == 1
        for other in others:
            assert final(node.url, gone["id"], other)["status"] == "failed"
        endpoint = httpx.get(f"{node.url}/v1/webhooks/{gone['id']}").json()
        assert endpoint["enabled"] is False and "410" in endpoint["disabled_reason"]
        receiver.wait_for(lambda: any("watch" in r.path for r in receiver.requests))
        (note,) = [r.json() for r in receiver.requests if "watch" in r.path]
        assert note["type"] == "webhooks.endpoint.disabled"
        assert note["data"]["endpoint_id"] == gone["id"]
        publish(node, OrderCreated, id=4)
        time.sleep(0.5)
        assert sum("gone" in r.path for r in receiver.requests) == 3
        assert sum("watch" in r.path for r in receiver.requests) == 1


def test_an_endpoint_failing_too_long_is_disabled(tmp_path: Path, receiver: Receiver) -> None:
    """No success for webhooks.disable_after seconds: disabled, event published."""
    receiver.behaviour = lambda r: (500, {}, b"") if "bad" in r.path else (200, {}, b"ok")
    settings = settings_for(tmp_path, disable_after=0.3, retry_schedule=[0.0] + [0.15] * 10)
    with running(settings) as node:
        bad = subscribe(node, receiver.url + "?bad", event_types=["orders.created"])
        subscribe(node, receiver.url + "?watch", event_types=["webhooks.#"])
        event_id = publish(node, OrderCreated, id=1)
        receiver.wait_for(lambda: any("watch" in r.path for r in receiver.requests))
        endpoint = httpx.get(f"{node.url}/v1/webhooks/{bad['id']}").json()
        assert endpoint["enabled"] is False
        assert "disable_after" in endpoint["disabled_reason"]
        assert final(node.url, bad["id"], event_id)["status"] == "failed"


def test_concurrency_per_endpoint_is_limited(tmp_path: Path, receiver: Receiver) -> None:
    """With webhooks.concurrency = 2, a slow receiver never sees more than two at once."""
    receiver.delay = 0.2
    with running(settings_for(tmp_path, concurrency=2)) as node:
        subscribe(node, receiver.url)
        for i in range(6):
            publish(node, OrderCreated, id=i)
        receiver.wait_count(6)
        assert receiver.most_active == 2


def test_an_attempt_times_out(tmp_path: Path, receiver: Receiver) -> None:
    """No answer within webhooks.timeout: a failed attempt, retried, then delivered."""
    first: list[Received] = []

    def behaviour(r: Received) -> tuple[int, dict[str, str], bytes] | None:
        if not first:
            first.append(r)
            return None
        return 200, {}, b"ok"

    receiver.behaviour = behaviour
    with running(settings_for(tmp_path, timeout=0.3)) as node:
        endpoint = subscribe(node, receiver.url)
        event_id = publish(node, OrderCreated, id=1)
        delivery = final(node.url, endpoint["id"], event_id)
        assert delivery["status"] == "delivered"
        assert delivery["history"][0]["error"] == "no answer within 0.3 s"
        assert delivery["history"][-1]["response_code"] == 200
        assert delivery["history"][0]["response_code"] is None


def test_replay_sends_a_delivery_again(tmp_path: Path, receiver: Receiver) -> None:
    """Replaying a delivered message posts it again with the same webhook-id."""
    with running(settings_for(tmp_path)) as node:
        endpoint = subscribe(node, receiver.url)
        event_id = publish(node, OrderCreated, id=1)
        final(node.url, endpoint["id"], event_id)
        url = f"{node.url}/v1/webhooks/{endpoint['id']}/deliveries/{event_id}/replay"
        response = httpx.post(url)
        assert response.status_code == 202, response.text
        again = receiver.wait_count(2)
        assert again[0].id == again[1].id == event_id
        assert again[0].body == again[1].body
        wait_until(lambda: final(node.url, endpoint["id"], event_id)["attempts"] == 2)
        history = final(node.url, endpoint["id"], event_id)["history"]
        assert [(a["attempt"], a["response_code"]) for a in history] == [(1, 200), (2, 200)]
        missing = httpx.post(f"{node.url}/v1/webhooks/{endpoint['id']}/deliveries/0:0/replay")
        assert missing.status_code == 404


def test_recover_retries_every_failed_delivery_since_a_time(
    tmp_path: Path, receiver: Receiver
) -> None:
    """Failed deliveries come back with recover; older ones and delivered ones stay."""
    receiver.behaviour = lambda _: (500, {}, b"")
    with running(settings_for(tmp_path, retry_schedule=[0.0])) as node:
        endpoint = subscribe(node, receiver.url)
        ids = [publish(node, OrderCreated, id=i) for i in range(3)]
        for event_id in ids:
            assert final(node.url, endpoint["id"], event_id)["status"] == "failed"
        receiver.behaviour = lambda _: (200, {}, b"ok")
        response = httpx.post(
            f"{node.url}/v1/webhooks/{endpoint['id']}/recover",
            json={"since": "2000-01-01T00:00:00Z"},
        )
        assert response.status_code == 202 and response.json()["recovered"] == 3
        wait_until(
            lambda: all(d["status"] == "delivered" for d in deliveries(node, endpoint["id"]))
        )
        later = httpx.post(
            f"{node.url}/v1/webhooks/{endpoint['id']}/recover", json={"since": time.time()}
        )
        assert later.json()["recovered"] == 0


@pytest.mark.parametrize("overlap", [30.0])
def test_rotation_signs_with_both_secrets_during_the_overlap(
    tmp_path: Path, receiver: Receiver, overlap: float
) -> None:
    """After a rotation both secrets verify; the new one is shown once."""
    with running(settings_for(tmp_path, rotation_overlap=overlap)) as node:
        endpoint = subscribe(node, receiver.url)
        old = endpoint["secret"]
        rotated = httpx.post(f"{node.url}/v1/webhooks/{endpoint['id']}/rotate")
        assert rotated.status_code == 200
        new = rotated.json()["secret"]
        assert new != old and rotated.json()["previous_secret_expires"] is not None
        assert "secret" not in httpx.get(f"{node.url}/v1/webhooks/{endpoint['id']}").json()
        publish(node, OrderCreated, id=1)
        (request,) = receiver.wait_count(1)
        assert len(request.headers["webhook-signature"].split()) == 2
        Webhook(old).verify(request.body, request.headers)
        Webhook(new).verify(request.body, request.headers)


def test_after_the_overlap_only_the_new_secret_signs(tmp_path: Path, receiver: Receiver) -> None:
    """Once the overlap is over the old secret no longer verifies."""
    from standardwebhooks.webhooks import WebhookVerificationError

    custom = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    with running(settings_for(tmp_path, rotation_overlap=0.2)) as node:
        endpoint = subscribe(node, receiver.url, secret=custom)
        assert endpoint["secret"] == custom
        new = httpx.post(f"{node.url}/v1/webhooks/{endpoint['id']}/rotate").json()["secret"]
        time.sleep(0.3)
        publish(node, OrderCreated, id=1)
        (request,) = receiver.wait_count(1)
        assert len(request.headers["webhook-signature"].split()) == 1
        Webhook(new).verify(request.body, request.headers)
        with pytest.raises(WebhookVerificationError):
            Webhook(custom).verify(request.body, request.headers)


def test_a_test_event_reaches_one_endpoint(tmp_path: Path, receiver: Receiver) -> None:
    """POST /test sends a signed webhooks.test message to that endpoint only."""
    with running(settings_for(tmp_path)) as node:
        endpoint = subscribe(node, receiver.url + "?one")
        subscribe(node, receiver.url + "?other")
        response = httpx.post(
            f"{node.url}/v1/webhooks/{endpoint['id']}/test", json={"data": {"hello": 1}}
        )
        assert response.status_code == 202
        (request,) = receiver.wait_count(1)
        payload = Webhook(endpoint["secret"]).verify(request.body, request.headers)
        assert payload["type"] == "webhooks.test" and payload["data"] == {"hello": 1}
        assert request.id == response.json()["event_id"] and "one" in request.path


def test_finished_deliveries_are_purged_after_the_retention(
    tmp_path: Path, receiver: Receiver
) -> None:
    """Delivered rows older than webhooks.retention disappear from the log."""
    with running(settings_for(tmp_path, retention=0.5)) as node:
        endpoint = subscribe(node, receiver.url)
        event_id = publish(node, OrderCreated, id=1)
        assert final(node.url, endpoint["id"], event_id)["status"] == "delivered"
        wait_until(lambda: deliveries(node, endpoint["id"]) == [])
        url = f"{node.url}/v1/webhooks/{endpoint['id']}/deliveries/{event_id}"
        assert httpx.get(url).status_code == 404


def test_a_receiver_down_for_a_while_gets_everything_once_back(tmp_path: Path) -> None:
    """Connections refused, then the receiver returns on its port: every event arrives."""
    first = Receiver().start()
    port = first.port
    first.stop()  # the port is closed: every attempt is refused
    settings = settings_for(tmp_path, retry_schedule=[0.0] + [0.25] * 12)
    with running(settings) as node:
        endpoint = subscribe(node, f"http://127.0.0.1:{port}/hook")
        ids = {publish(node, OrderCreated, id=i) for i in range(5)}
        wait_until(
            lambda: (
                all(d["attempts"] >= 2 for d in deliveries(node, endpoint["id"]))
                and len(deliveries(node, endpoint["id"])) == 5
            )
        )
        assert {d["status"] for d in deliveries(node, endpoint["id"])} == {"pending"}
        back = Receiver(port=port).start()
        try:
            back.wait_for(lambda: back.ids() == ids)
            wait_until(
                lambda: all(d["status"] == "delivered" for d in deliveries(node, endpoint["id"]))
            )
        finally:
            back.stop()


def test_attempts_in_flight_are_capped_across_endpoints(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over all endpoints a node holds at most MAX_IN_FLIGHT attempts; the rest wait."""
    from polyport.edges.webhooks import sender

    monkeypatch.setattr(sender, "MAX_IN_FLIGHT", 3)
    receiver.delay = 0.15
    with running(settings_for(tmp_path, concurrency=2)) as node:
        for k in range(4):
            subscribe(node, f"{receiver.url}?k={k}")
        for i in range(3):
            publish(node, OrderCreated, id=i)
        receiver.wait_count(12)
        assert receiver.most_active == 3
