"""``POST /hooks/{name}`` over loopback: verified, stored, answered, then processed."""

from __future__ import annotations

import hashlib
import hmac
import socket
import time
import types
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest

Lab = types.SimpleNamespace

BODY = b'{"type":"payment.succeeded","amount":1200}'


def post(url: str, name: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{url}/hooks/{name}", content=body, headers=headers, timeout=10)


def deliveries(url: str, name: str, **query: str) -> dict[str, Any]:
    response = httpx.get(f"{url}/hooks/{name}/deliveries", params=query, timeout=10)
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def delivery(url: str, name: str, delivery_id: str) -> dict[str, Any]:
    response = httpx.get(f"{url}/hooks/{name}/deliveries/{delivery_id}", timeout=10)
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def wait_status(url: str, name: str, delivery_id: str, status: str) -> dict[str, Any]:
    """Poll the delivery log until the delivery reaches ``status`` (bounded)."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        found = delivery(url, name, delivery_id)
        if found["status"] == status:
            return found
        time.sleep(0.02)
    pytest.fail(f"{name}/{delivery_id} never became {status}: {found}")


def test_a_signed_delivery_is_answered_then_processed_once(lab: Lab, tmp_path: Any) -> None:
    """200 at once; the handler gets the parsed body, a Context and a WebhookDelivery."""
    with lab.serve(str(tmp_path / "db")) as node:
        headers = lab.standard_headers(BODY, msg_id="msg_first")
        response = post(node.url, "std", BODY, headers | {"authorization": "Bearer x"})
        assert response.status_code == 200
        assert response.json() == {"id": "msg_first", "status": "accepted"}
        assert response.headers["cache-control"] == "no-store"
        lab.recorder.wait_for(lambda: len(lab.recorder.of("std")) == 1)
        _, body, seen = lab.recorder.of("std")[0]
        assert body == {"type": "payment.succeeded", "amount": 1200}
        assert seen.id == "msg_first" and seen.receiver == "std" and seen.attempt == 1
        assert seen.timestamp == int(headers["webhook-timestamp"])
        assert seen.headers["webhook-id"] == "msg_first"
        assert "authorization" not in seen.headers  # credentials are not stored
        found = wait_status(node.url, "std", "msg_first", "done")
        assert found["attempts"] == 1 and found["error"] is None
        assert found["event_type"] == "payment.succeeded"  # the payload's "type"
        assert found["body"] == {"type": "payment.succeeded", "amount": 1200}


def test_a_duplicate_id_is_answered_200_and_not_processed_again(lab: Lab, tmp_path: Any) -> None:
    """The same delivery id, sent again (as senders retry), is acknowledged and ignored."""
    with lab.serve(str(tmp_path / "db")) as node:
        headers = lab.standard_headers(BODY, msg_id="msg_dup")
        assert post(node.url, "std", BODY, headers).json()["status"] == "accepted"
        lab.recorder.wait_for(lambda: len(lab.recorder.of("std")) == 1)
        wait_status(node.url, "std", "msg_dup", "done")
        again = lab.standard_headers(BODY, msg_id="msg_dup")  # re-signed, as a retry is
        response = post(node.url, "std", BODY, again)
        assert response.status_code == 200 and response.json()["status"] == "duplicate"
        # A different receiver keeps its own ids.
        assert post(node.url, "typed", BODY, again).json()["status"] == "accepted"
        lab.recorder.wait_for(lambda: len(lab.recorder.of("typed")) == 1)
        assert len(lab.recorder.of("std")) == 1
        assert deliveries(node.url, "std")["counts"]["done"] == 1


def test_a_duplicate_across_a_restart_is_not_processed_again(lab: Lab, tmp_path: Any) -> None:
    """The idempotency record is in the database: a new node on the same file remembers."""
    db = str(tmp_path / "db")
    with lab.serve(db) as node:
        post(node.url, "std", BODY, lab.standard_headers(BODY, msg_id="msg_restart"))
        lab.recorder.wait_for(lambda: len(lab.recorder.of("std")) == 1)
        wait_status(node.url, "std", "msg_restart", "done")
    with lab.serve(db) as node:
        response = post(node.url, "std", BODY, lab.standard_headers(BODY, msg_id="msg_restart"))
        assert response.json() == {"id": "msg_restart", "status": "duplicate"}
        post(node.url, "std", BODY, lab.standard_headers(BODY, msg_id="msg_after"))
        lab.recorder.wait_for(lambda: len(lab.recorder.of("std")) == 2)
        assert [c[2].id for c in lab.recorder.of("std")] == ["msg_restart", "msg_after"]


@pytest.mark.parametrize(
    ("tamper", "status", "reason"),
    [
        ("body", 401, "signature_mismatch"),
        ("secret", 401, "signature_mismatch"),
        ("stale", 401, "stale_timestamp"),
        ("no-signature", 400, "missing_header"),
        ("bad-timestamp", 400, "malformed_header"),
    ],
)
def test_unverifiable_requests_are_refused_and_not_stored(
    lab: Lab, tmp_path: Any, tamper: str, status: int, reason: str
) -> None:
    """Tampered body, wrong secret, stale timestamp: 401; missing or unreadable header: 400."""
    with lab.serve(str(tmp_path / "db")) as node:
        body = BODY
        when = datetime.now(tz=UTC) - (timedelta(minutes=10) if tamper == "stale" else timedelta())
        secret = lab.OTHER_SECRET if tamper == "secret" else lab.STD_SECRET
        headers = lab.standard_headers(BODY, msg_id="msg_bad", secret=secret, timestamp=when)
        if tamper == "body":
            body = BODY.replace(b"1200", b"9999")
        elif tamper == "no-signature":
            del headers["webhook-signature"]
        elif tamper == "bad-timestamp":
            headers["webhook-timestamp"] = "yesterday"
        response = post(node.url, "std", body, headers)
        assert response.status_code == status
        assert response.headers["content-type"].startswith("application/problem+json")
        problem = response.json()
        assert problem["reason"] == reason and problem["instance"] == "/hooks/std"
        if status == 401:
            assert response.headers["www-authenticate"].startswith("standard-webhooks")
        assert deliveries(node.url, "std")["items"] == []
        metrics = httpx.get(f"{node.url}/metrics").text
        assert 'polyport_hooks_received_total{outcome="rejected",receiver="std"} 1' in metrics
    assert lab.recorder.of("std") == []


def test_bad_bodies_get_a_clear_4xx_and_nothing_is_stored(lab: Lab, tmp_path: Any) -> None:
    """Non-JSON (400), another media type (415), a body the model refuses (422)."""
    with lab.serve(str(tmp_path / "db")) as node:
        text = b"amount=1200"
        response = post(node.url, "std", text, lab.standard_headers(text, msg_id="m1"))
        assert response.status_code == 400
        headers = lab.standard_headers(BODY, msg_id="m2") | {"content-type": "text/plain"}
        assert post(node.url, "std", BODY, headers).status_code == 415
        wrong = b'{"type":"refund.created","amount":-1}'
        response = post(node.url, "typed", wrong, lab.standard_headers(wrong, msg_id="m3"))
        assert response.status_code == 422
        fields = {e["field"] for e in response.json()["errors"]}
        assert fields == {"type", "amount"}
        # Verification comes first: an unsigned caller learns nothing about the model.
        unsigned = lab.standard_headers(wrong, msg_id="m4", secret=lab.OTHER_SECRET)
        assert post(node.url, "typed", wrong, unsigned).status_code == 401
        assert deliveries(node.url, "std")["items"] == []
        assert deliveries(node.url, "typed")["items"] == []
        # The typed receiver gets its model.
        post(node.url, "typed", BODY, lab.standard_headers(BODY, msg_id="m5"))
        lab.recorder.wait_for(lambda: len(lab.recorder.of("typed")) == 1)
        payment = lab.recorder.of("typed")[0][1]
        assert isinstance(payment, lab.Payment) and payment.amount == 1200


def test_a_body_over_the_limit_is_refused_before_it_is_read(lab: Lab, tmp_path: Any) -> None:
    """413 on the declared length alone: the server answers without waiting for the body."""
    with lab.serve(str(tmp_path / "db"), hooks={"max_body": 4096}) as node:
        big = b'{"pad":"' + b"x" * 5000 + b'"}'
        response = post(node.url, "std", big, lab.standard_headers(big, msg_id="big"))
        assert response.status_code == 413
        # Raw socket: declare 10 MB, send only the head; the answer still comes.
        with socket.create_connection((node.host, node.port), timeout=10) as sock:
            head = (
                "POST /hooks/std HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                "content-length: 10000000\r\n\r\n"
            )
            sock.sendall(head.encode())
            answer = sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 413")
        small = b'{"pad":"' + b"x" * 3000 + b'"}'
        response = post(node.url, "std", small, lab.standard_headers(small, msg_id="small"))
        assert response.status_code == 200


def test_github_and_stripe_deliveries_end_to_end(lab: Lab, tmp_path: Any) -> None:
    """Signed as their documentation says; ids from X-GitHub-Delivery and the event's id."""
    with lab.serve(str(tmp_path / "db")) as node:
        push = b'{"ref":"refs/heads/main"}'
        headers = {  # spelled as GitHub sends them
            "X-Hub-Signature-256": lab.github_signature(lab.GITHUB_SECRET, push),
            "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
            "X-GitHub-Event": "push",
            "Content-Type": "application/json",
        }
        assert post(node.url, "github", push, headers).json()["status"] == "accepted"
        assert post(node.url, "github", push, headers).json()["status"] == "duplicate"
        wrong = headers | {"X-Hub-Signature-256": lab.github_signature("nope", push)}
        assert post(node.url, "github", push, wrong).status_code == 401

        event = b'{"id":"evt_123","object":"event","type":"charge.succeeded"}'
        now = int(time.time())
        signature = f"t={now},v1={lab.stripe_signature(lab.STRIPE_SECRET, event, now)}"
        stripe_headers = {"stripe-signature": signature, "content-type": "application/json"}
        assert post(node.url, "stripe", event, stripe_headers).json() == {
            "id": "evt_123",
            "status": "accepted",
        }
        old = now - 400
        stale = {
            "stripe-signature": f"t={old},v1={lab.stripe_signature(lab.STRIPE_SECRET, event, old)}"
        }
        assert post(node.url, "stripe", event, stale).status_code == 401

        lab.recorder.wait_for(
            lambda: len(lab.recorder.of("github")) == 1 and len(lab.recorder.of("stripe")) == 1
        )
        github_delivery = lab.recorder.of("github")[0][2]
        assert github_delivery.event_type == "push" and github_delivery.timestamp is None
        stripe_delivery = lab.recorder.of("stripe")[0][2]
        assert stripe_delivery.id == "evt_123" and stripe_delivery.event_type == "charge.succeeded"


def test_secret_rotation_and_a_secret_from_the_settings(lab: Lab, tmp_path: Any) -> None:
    """A verifier with two secrets accepts either; ``hooks.secrets`` fills an empty one."""
    with lab.serve(str(tmp_path / "db")) as node:
        for n, secret in enumerate((lab.STD_SECRET, lab.OTHER_SECRET)):
            headers = lab.standard_headers(BODY, msg_id=f"rot{n}", secret=secret)
            assert post(node.url, "rotating", BODY, headers).status_code == 200
        headers = lab.standard_headers(BODY, msg_id="conf")
        assert post(node.url, "configured", BODY, headers).status_code == 200
        wrong = lab.standard_headers(BODY, msg_id="conf2", secret=lab.OTHER_SECRET)
        assert post(node.url, "configured", BODY, wrong).status_code == 401
        lab.recorder.wait_for(
            lambda: (
                len(lab.recorder.of("rotating")) == 2 and len(lab.recorder.of("configured")) == 1
            )
        )


def test_a_failing_handler_is_retried_with_the_same_delivery(lab: Lab, tmp_path: Any) -> None:
    """Two failures, then success: three attempts, one recorded run, the errors logged."""
    with lab.serve(str(tmp_path / "db")) as node:
        lab.recorder.failures["msg_flaky"] = 2
        post(node.url, "flaky", BODY, lab.standard_headers(BODY, msg_id="msg_flaky"))
        lab.recorder.wait_for(lambda: len(lab.recorder.of("flaky")) == 1)
        assert lab.recorder.of("flaky")[0][2].attempt == 3
        found = wait_status(node.url, "flaky", "msg_flaky", "done")
        assert found["attempts"] == 3 and found["error"] is None
        metrics = httpx.get(f"{node.url}/metrics").text
        assert 'polyport_hooks_processed_total{outcome="retry",receiver="flaky"} 2' in metrics
        assert 'polyport_calls_total{edge="hooks",method="flaky",code="OK"} 1' in metrics
        assert 'polyport_calls_total{edge="hooks",method="flaky",code="INTERNAL"} 2' in metrics


def test_a_handler_that_keeps_failing_becomes_a_dead_letter_and_can_be_redriven(
    lab: Lab, tmp_path: Any
) -> None:
    """After max_attempts the delivery is dead, with its error; a redrive runs it again."""
    with lab.serve(str(tmp_path / "db")) as node:
        lab.recorder.failures["doomed"] = 1
        post(node.url, "doomed", BODY, lab.standard_headers(BODY, msg_id="msg_doomed"))
        found = wait_status(node.url, "doomed", "msg_doomed", "dead")
        assert found["attempts"] == 2
        assert found["error"] == "ValueError: this handler always fails"
        listing = deliveries(node.url, "doomed", status="dead")
        assert [item["id"] for item in listing["items"]] == ["msg_doomed"]
        assert listing["counts"]["dead"] == 1
        # A duplicate of a dead delivery is still a duplicate: redrive is explicit.
        again = post(node.url, "doomed", BODY, lab.standard_headers(BODY, msg_id="msg_doomed"))
        assert again.json()["status"] == "duplicate"
        # Fixed: redrive it.
        lab.recorder.failures["doomed"] = 0
        response = httpx.post(f"{node.url}/hooks/doomed/deliveries/msg_doomed/retry")
        assert response.status_code == 202 and response.json()["status"] == "pending"
        lab.recorder.wait_for(lambda: len(lab.recorder.of("doomed")) == 1)
        assert lab.recorder.of("doomed")[0][2].attempt == 1
        wait_status(node.url, "doomed", "msg_doomed", "done")
        # A done delivery cannot be redriven (its state is in the way: 409); an unknown
        # one is 404.
        response = httpx.post(f"{node.url}/hooks/doomed/deliveries/msg_doomed/retry")
        assert response.status_code == 409
        assert httpx.post(f"{node.url}/hooks/doomed/deliveries/nope/retry").status_code == 404


def test_many_concurrent_senders_and_duplicates(lab: Lab, tmp_path: Any) -> None:
    """Parallel posts, each id three times at once: every id processed exactly once,
    never more handlers at once than ``hooks.concurrency``."""
    ids = [f"msg_c{n}" for n in range(20)]
    with lab.serve(str(tmp_path / "db"), hooks={"concurrency": 3}) as node:
        lab.recorder.gate.clear()
        requests = [(i, lab.standard_headers(BODY, msg_id=i)) for i in ids for _ in range(3)]

        async def send_all() -> list[httpx.Response]:
            import asyncio

            async with httpx.AsyncClient(timeout=10) as client:
                return list(
                    await asyncio.gather(
                        *(
                            client.post(f"{node.url}/hooks/busy", content=BODY, headers=h)
                            for _, h in requests
                        )
                    )
                )

        import asyncio

        responses = asyncio.run(send_all())
        assert all(r.status_code == 200 for r in responses)
        statuses = [r.json()["status"] for r in responses]
        assert statuses.count("accepted") == len(ids)
        assert statuses.count("duplicate") == 2 * len(ids)
        lab.recorder.gate.set()
        lab.recorder.wait_for(lambda: len(lab.recorder.of("busy")) == len(ids))
        assert sorted(c[2].id for c in lab.recorder.of("busy")) == sorted(ids)
        assert lab.recorder.most_active <= 3


def test_stopping_gives_back_running_deliveries_and_the_next_start_runs_them(
    lab: Lab, tmp_path: Any
) -> None:
    """A handler still running after the grace period is cancelled; its delivery returns
    to pending without using an attempt, and the next node runs it."""
    db = str(tmp_path / "db")
    with lab.serve(db, hooks={"shutdown_grace": 0.1}) as node:
        lab.recorder.gate.clear()
        post(node.url, "flaky", BODY, lab.standard_headers(BODY, msg_id="msg_stop"))
        wait_status(node.url, "flaky", "msg_stop", "running")
    lab.recorder.gate.set()
    assert lab.recorder.of("flaky") == []
    with lab.serve(db) as node:
        lab.recorder.wait_for(lambda: len(lab.recorder.of("flaky")) == 1)
        assert lab.recorder.of("flaky")[0][2].attempt == 1
        wait_status(node.url, "flaky", "msg_stop", "done")


def test_stopping_lets_a_handler_finish_within_the_grace_period(lab: Lab, tmp_path: Any) -> None:
    """A handler that finishes during the grace period completes; nothing runs twice."""
    import threading

    db = str(tmp_path / "db")
    with lab.serve(db, hooks={"shutdown_grace": 30}) as node:
        lab.recorder.gate.clear()
        post(node.url, "flaky", BODY, lab.standard_headers(BODY, msg_id="msg_grace"))
        wait_status(node.url, "flaky", "msg_grace", "running")
        opener = threading.Timer(0.2, lab.recorder.gate.set)
        opener.start()
    opener.join()
    assert len(lab.recorder.of("flaky")) == 1
    with lab.serve(db) as node:
        assert delivery(node.url, "flaky", "msg_grace")["status"] == "done"
        assert len(lab.recorder.of("flaky")) == 1


def test_the_delivery_log_needs_the_admin_scope(lab: Lab, tmp_path: Any) -> None:
    """Outside development mode the log and redrive are for ``hooks:admin`` keys only;
    the receiver itself needs no key (the signature is its credential)."""
    keys = {"auth": {"api_keys": [{"key": "k-admin", "subject": "ops", "scopes": ["hooks:admin"]}]}}
    with lab.serve(str(tmp_path / "db"), dev=False, **keys) as node:
        assert post(node.url, "std", BODY, lab.standard_headers(BODY)).status_code == 200
        url = f"{node.url}/hooks/std/deliveries"
        assert httpx.get(url).status_code == 401
        found = httpx.get(url, headers={"x-api-key": "k-admin"})
        assert found.status_code == 200 and found.json()["items"][0]["id"] == "msg_1"


def test_openapi_describes_the_receivers(lab: Lab, tmp_path: Any) -> None:
    """Each receiver's POST, with its signature headers and body schema, and its log."""
    with lab.serve(str(tmp_path / "db")) as node:
        doc = orjson.loads(httpx.get(f"{node.url}/openapi.json").content)
    post_op = doc["paths"]["/hooks/typed"]["post"]
    assert {p["name"] for p in post_op["parameters"]} == {
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    }
    assert set(post_op["responses"]) >= {"200", "400", "401", "413", "415", "422"}
    schema = post_op["requestBody"]["content"]["application/json"]["schema"]
    assert schema["properties"]["amount"]["minimum"] == 0
    assert "x-hub-signature-256" in {
        p["name"] for p in doc["paths"]["/hooks/github"]["post"]["parameters"]
    }
    assert "/hooks/doomed/deliveries/{id}/retry" in doc["paths"]
    assert "HookDelivery" in doc["components"]["schemas"]


def test_a_github_signature_is_checked_over_the_raw_bytes(lab: Lab, tmp_path: Any) -> None:
    """Whitespace the JSON parser would ignore still changes the signature."""
    with lab.serve(str(tmp_path / "db")) as node:
        body = b'{"zen": "Design for failure."}'
        digest = hmac.new(lab.GITHUB_SECRET.encode(), body, hashlib.sha256).hexdigest()
        headers = {"x-hub-signature-256": f"sha256={digest}", "x-github-delivery": "d-raw"}
        assert post(node.url, "github", body.replace(b": ", b":"), headers).status_code == 401
        assert post(node.url, "github", body, headers).status_code == 200


def test_a_handler_past_its_timeout_fails_the_attempt_and_is_retried(
    lab: Lab, tmp_path: Any
) -> None:
    """``hooks.timeout`` bounds one run; the delivery waits for the next attempt."""
    with lab.serve(str(tmp_path / "db"), hooks={"timeout": 0.2}) as node:
        lab.recorder.gate.clear()
        post(node.url, "busy", BODY, lab.standard_headers(BODY, msg_id="msg_slow"))
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            found = delivery(node.url, "busy", "msg_slow")
            if found["error"]:
                break
            time.sleep(0.02)
        assert found["error"] == "the handler did not finish within 0.2 s"
        lab.recorder.gate.set()
        lab.recorder.wait_for(lambda: len(lab.recorder.of("busy")) == 1)
        assert lab.recorder.of("busy")[0][2].attempt >= 2
        metrics = httpx.get(f"{node.url}/metrics").text
        assert 'edge="hooks",method="busy",code="DEADLINE_EXCEEDED"' in metrics


def test_secrets_from_the_settings_are_checked_at_start(lab: Lab, tmp_path: Any) -> None:
    """A receiver left without a secret, or a secret for no receiver, stops the node."""
    from polyport.core.errors import ConfigError
    from polyport.node import Node

    db = str(tmp_path / "db")
    with pytest.raises(ConfigError, match="POLYPORT_HOOKS__SECRETS__CONFIGURED"):
        Node(lab.service, lab.settings(db, hooks={"secrets": {}}), edges=["hooks"])
    secrets = {"configured": lab.STD_SECRET, "nope": lab.STD_SECRET}
    with pytest.raises(ConfigError, match="nope"):
        Node(lab.service, lab.settings(db, hooks={"secrets": secrets}), edges=["hooks"])
    bad = {"configured": "not-a-whsec-secret"}
    with pytest.raises(ConfigError, match=r"hooks\.secrets\.configured"):
        Node(lab.service, lab.settings(db, hooks={"secrets": bad}), edges=["hooks"])
