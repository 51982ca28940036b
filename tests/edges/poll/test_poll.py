"""Polling and long polling over HTTP, and the jobs API."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from polyport import Settings
from polyport.testing import RunningNode, serve_in_thread


@pytest.fixture
def client(demo: RunningNode) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=demo.url, timeout=30) as c:
        yield c


def events(client: httpx.Client, **params: object) -> httpx.Response:
    return client.get("/v1/events", params=params)  # type: ignore[arg-type]


def test_polling_returns_crud_events_and_a_next_cursor(client: httpx.Client) -> None:
    """Every resource write publishes {resource}.{op}; polling answers at once, in order."""
    start = events(client, channel="users/#", after="now").json()["next"]
    user = client.post("/v1/users", json={"name": "Dee", "email": "dee@example.com"}).json()
    client.put(f"/v1/users/{user['id']}", json={"name": "Dee D", "email": "dee@example.com"})
    client.delete(f"/v1/users/{user['id']}")
    body = events(client, channel="users/#", after=start).json()
    assert [e["type"] for e in body["events"]] == [
        "users.created",
        "users.updated",
        "users.deleted",
    ]
    created, _, deleted = body["events"]
    assert created["data"] == user
    assert deleted["data"] == {"id": user["id"]}
    assert created["channel"] == "users/created" and created["offset"] >= 1
    assert created["id"] == f"{created['epoch']}:{created['offset']}"
    again = events(client, channel="users/#", after=body["next"]).json()
    assert again["events"] == []
    # An event id works as a cursor too.
    from_id = events(client, channel="users/#", after=created["id"]).json()
    assert [e["type"] for e in from_id["events"]] == ["users.updated", "users.deleted"]


def test_several_channels_and_wildcards(client: httpx.Client) -> None:
    """Repeated channel parameters and + / # patterns merge into one ordered stream."""
    start = events(client, channel="#", after="now").json()["next"]
    client.post("/v1/orders", json={"user_id": 1, "items": [{"product_id": 1, "quantity": 1}]})
    body = client.get(
        "/v1/events",
        params=[("channel", "orders/created"), ("channel", "inventory/+"), ("after", start)],
    ).json()
    assert [e["type"] for e in body["events"]] == ["inventory.changed", "orders.created"]
    assert body["events"][0]["channel"] == "inventory/1"


def test_long_polling_holds_until_an_event(client: httpx.Client, demo: RunningNode) -> None:
    """wait=N holds the request open and answers as soon as an event is published."""
    start = events(client, channel="orders/created", after="now").json()["next"]

    def order_later() -> None:
        time.sleep(0.5)
        with httpx.Client(base_url=demo.url) as other:
            other.post(
                "/v1/orders", json={"user_id": 2, "items": [{"product_id": 3, "quantity": 2}]}
            )

    thread = threading.Thread(target=order_later)
    thread.start()
    began = time.monotonic()
    body = events(client, channel="orders/created", after=start, wait=20).json()
    thread.join()
    assert [e["type"] for e in body["events"]] == ["orders.created"]
    assert time.monotonic() - began < 15  # it did not sit out the whole wait


def test_long_polling_times_out_with_an_empty_answer(client: httpx.Client) -> None:
    """Nothing new within wait: 200, no events, a cursor to continue from."""
    body = events(client, channel="quiet/channel", after="now", wait=0.3).json()
    assert body["events"] == [] and "@" in body["next"]


def test_bad_poll_requests(client: httpx.Client) -> None:
    """Missing channel, bad patterns, bad cursors, negative or huge waits: clear 4xx."""
    assert events(client).status_code == 422
    assert events(client, channel="a/#/b").status_code == 422
    assert events(client, channel="bad channel").status_code == 422
    assert events(client, channel="a", after="garbage").status_code == 422
    for wait in ("-1", "26", "1e308", "nan", "inf", "soon"):
        response = events(client, channel="a", wait=wait)
        assert response.status_code == 422, wait
        assert response.headers["content-type"] == "application/problem+json"
    assert events(client, channel="a", limit=0).status_code == 422
    ahead = events(client, channel="a", after="zzzzzzzzzz@1")
    assert ahead.status_code == 410 and ahead.json()["code"] == "RECOVERY_FAILED"


def test_recovery_failed_when_history_is_gone(db_path: str) -> None:
    """A cursor older than the history kept gets 410 with where history starts now."""
    from polyport.demo.shop import shop

    settings = Settings.model_validate(
        {"dev": True, "database": db_path, "history": {"max_events": 3}}
    )
    with serve_in_thread(shop, settings) as server, httpx.Client(base_url=server.url) as c:
        first = None
        for i in range(8):
            c.post("/v1/users", json={"name": f"n{i}", "email": f"n{i}@example.com"})
            if first is None:
                first = c.get("/v1/events", params={"channel": "users/created"}).json()["events"][0]
        assert first is not None
        gone = c.get("/v1/events", params={"channel": "users/created", "after": first["id"]})
        assert gone.status_code == 410
        body = gone.json()
        assert body["code"] == "RECOVERY_FAILED" and body["latest"]
        fresh = c.get("/v1/events", params={"channel": "users/created"}).json()
        assert 3 <= len(fresh["events"]) <= 4  # 'earliest' (the default) never fails


def test_jobs_run_in_the_background(client: httpx.Client) -> None:
    """POST /v1/jobs/{method} → 202 + Location + Retry-After; GET long-polls to the result."""
    accepted = client.post("/v1/jobs/sales_report", json={"delay": 0.3})
    assert accepted.status_code == 202
    assert accepted.headers["retry-after"] == "1"
    location = accepted.headers["location"]
    assert location == f"/v1/jobs/{accepted.json()['id']}"
    assert accepted.json()["status"] in ("pending", "running")
    first = client.get(location)
    assert first.status_code == 200 and first.json()["status"] in ("pending", "running")
    assert "retry-after" in first.headers
    done = client.get(location, params={"wait": 10}).json()
    assert done["status"] == "complete"
    assert done["result"]["orders"] >= 0 and "revenue" in done["result"]
    assert done["finished"] and done["attempts"] == 1


def test_failed_jobs_carry_the_error(client: httpx.Client) -> None:
    """A handler error ends the job as failed with the same code REST would give."""
    job = client.post("/v1/jobs/get_user", json={"id": 424242}).json()
    result = client.get(f"/v1/jobs/{job['id']}", params={"wait": 10}).json()
    assert result["status"] == "failed"
    assert result["error"]["code"] == "NOT_FOUND"


def test_bad_job_requests(client: httpx.Client) -> None:
    """Unknown methods, bad arguments and unknown ids are refused up front."""
    assert client.post("/v1/jobs/no_such_method", json={}).status_code == 405
    assert client.post("/v1/jobs/multiply", json={"a": "x"}).status_code == 422
    assert (
        client.post(
            "/v1/jobs/multiply", content=b"{", headers={"content-type": "application/json"}
        ).status_code
        == 400
    )
    assert client.get("/v1/jobs/unknown").status_code == 404
    assert client.get("/v1/jobs/unknown", params={"wait": -1}).status_code == 422


def test_jobs_belong_to_their_principal(db_path: str) -> None:
    """Another principal cannot see a job: it is simply not found."""
    from polyport.demo.shop import shop

    settings = Settings.model_validate(
        {
            "database": db_path,
            "auth": {
                "api_keys": [{"key": "a-key", "subject": "a"}, {"key": "b-key", "subject": "b"}]
            },
        }
    )
    with serve_in_thread(shop, settings) as server, httpx.Client(base_url=server.url) as c:
        job = c.post("/v1/jobs/multiply", json={"a": 2, "b": 3}, headers={"x-api-key": "a-key"})
        location = job.headers["location"]
        mine = c.get(location, params={"wait": 5}, headers={"x-api-key": "a-key"}).json()
        assert mine["result"] == 6
        assert c.get(location, headers={"x-api-key": "b-key"}).status_code == 404
        assert c.get(location).status_code == 401


def _held_waiters(server: RunningNode) -> int:
    hub = server.node.runtime.hub
    return sum(type(item).__name__ == "_Signal" for item in hub._registrations)


def test_a_client_that_leaves_releases_its_long_poll(demo: RunningNode) -> None:
    """Disconnecting mid-wait frees the waiter at once instead of after the wait."""
    with (
        httpx.Client(base_url=demo.url, timeout=0.5) as c,
        pytest.raises(httpx.ReadTimeout),
    ):
        c.get("/v1/events", params={"channel": "quiet", "after": "now", "wait": 20})
    for _ in range(50):
        if _held_waiters(demo) == 0:
            break
        time.sleep(0.05)
    assert _held_waiters(demo) == 0


def test_shutdown_answers_held_long_polls(db_path: str) -> None:
    """Stopping a node answers held polls (empty, with a cursor) instead of cutting them."""
    from polyport.demo.shop import shop

    answers: list[httpx.Response] = []
    with serve_in_thread(shop, Settings(dev=True, database=db_path)) as server:

        def hold() -> None:
            with httpx.Client(base_url=server.url, timeout=30) as c:
                answers.append(
                    c.get("/v1/events", params={"channel": "quiet", "after": "now", "wait": 20})
                )

        thread = threading.Thread(target=hold)
        thread.start()
        for _ in range(100):
            if _held_waiters(server) == 1:
                break
            time.sleep(0.02)
        began = time.monotonic()
    thread.join(10)
    assert time.monotonic() - began < 10
    assert answers and answers[0].status_code == 200 and answers[0].json()["events"] == []
