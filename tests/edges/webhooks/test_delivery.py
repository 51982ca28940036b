"""Delivery: Standard Webhooks headers, signatures checked by the reference library, filters."""

from __future__ import annotations

import ssl
import types
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from polyport.testing import RunningNode

from .conftest import (
    NoteAdded,
    OrderCreated,
    OrderPaid,
    Receiver,
    deliveries,
    publish,
    running,
    settings_for,
    subscribe,
    wait_until,
)


def test_an_event_arrives_signed_and_the_reference_library_verifies_it(
    node: RunningNode, receiver: Receiver
) -> None:
    """The webhook carries the event envelope; standardwebhooks accepts its signature."""
    endpoint = subscribe(node, receiver.url, event_types=["orders.*"])
    assert endpoint["secret"].startswith("whsec_")
    event_id = publish(node, OrderCreated, id=7, total=42)
    (request,) = receiver.wait_count(1)
    assert request.method == "POST" and request.path == "/hook"
    assert request.headers["webhook-id"] == event_id
    assert request.headers["content-type"] == "application/json"
    payload = Webhook(endpoint["secret"]).verify(request.body, request.headers)
    assert payload["type"] == "orders.created"
    assert payload["id"] == event_id
    assert payload["data"] == {"id": 7, "total": 42}
    assert payload["channel"] == "orders"


def test_filters_choose_the_event_types(node: RunningNode, receiver: Receiver) -> None:
    """An endpoint gets only the types its filters match; one without filters gets all."""
    subscribe(node, receiver.url + "?who=paid", event_types=["orders.paid"])
    subscribe(node, receiver.url + "?who=notes", event_types=["notes.+"])
    subscribe(node, receiver.url + "?who=all")
    publish(node, OrderCreated, id=1)
    publish(node, OrderPaid, id=1)
    publish(node, NoteAdded, text="hi")
    received = receiver.wait_count(5)
    got = sorted((r.path.split("=")[1], r.json()["type"]) for r in received)
    assert got == [
        ("all", "notes.added"),
        ("all", "orders.created"),
        ("all", "orders.paid"),
        ("notes", "notes.added"),
        ("paid", "orders.paid"),
    ]


def test_the_delivery_log_shows_the_outcome(node: RunningNode, receiver: Receiver) -> None:
    """After a 2xx the delivery is delivered, with its code, latency and body."""
    endpoint = subscribe(node, receiver.url)
    event_id = publish(node, OrderCreated, id=3)
    receiver.wait_count(1)

    def delivered() -> bool:
        items = deliveries(node, endpoint["id"])
        return bool(items) and items[0]["status"] == "delivered"

    wait_until(delivered)
    (item,) = deliveries(node, endpoint["id"])
    assert item["event_id"] == event_id and item["attempts"] == 1
    assert item["response_code"] == 200 and item["response_body"] == "ok"
    assert item["latency_ms"] >= 0
    one = httpx.get(f"{node.url}/v1/webhooks/{endpoint['id']}/deliveries/{event_id}").json()
    assert [a["response_code"] for a in one["history"]] == [200]


def test_connections_are_kept_alive(node: RunningNode, receiver: Receiver) -> None:
    """Consecutive deliveries to one endpoint reuse a pooled connection."""
    endpoint = subscribe(node, receiver.url)
    for i in range(5):
        publish(node, OrderCreated, id=i)
        # Answered and back in the pool before the next one goes.
        wait_until(
            lambda n=i + 1: (
                sum(d["status"] == "delivered" for d in deliveries(node, endpoint["id"])) == n
            )
        )
    assert receiver.connections == 1


def test_the_client_posts_under_uvloop(receiver: Receiver) -> None:
    """uvloop's transports are not asyncio.Transport subclasses; the client copes."""
    import uvloop

    from polyport.edges.webhooks.client import ConnectionPool
    from polyport.edges.webhooks.ssrf import AddressPolicy, parse_url

    async def post() -> int:
        pool = ConnectionPool(parse_url(receiver.url), AddressPolicy(["127.0.0.1"]), keep=64)
        try:
            answer = await pool.post([(b"webhook-id", b"x")], b"{}")
            return answer.status
        finally:
            pool.close()

    assert uvloop.run(post()) == 200
    assert receiver.requests[0].id == "x"


def _certificate(tmp_path: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for ``name`` and its key, as PEM files."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_https_is_verified_against_the_name_while_connecting_to_the_checked_address(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The socket goes to the address checked; TLS still verifies the URL's host name."""
    from polyport.edges.webhooks import client, ssrf

    cert, key = _certificate(tmp_path, "hooks.test")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    trusted = ssl.create_default_context(cafile=str(cert))

    async def resolve(host: str, port: int) -> list[Any]:
        return [(0, 0, 0, "", ("127.0.0.1", port))]

    monkeypatch.setattr(ssrf, "getaddrinfo", resolve)
    # Only the webhook client trusts the test certificate (httpx keeps its own).
    trusting = types.SimpleNamespace(
        create_default_context=lambda: trusted, SSLContext=ssl.SSLContext, SSLError=ssl.SSLError
    )
    monkeypatch.setattr(client, "ssl", trusting)
    receiver = Receiver(tls=server).start()
    try:
        with running(settings_for(tmp_path)) as node:
            endpoint = subscribe(node, f"https://hooks.test:{receiver.port}/secure")
            event_id = publish(node, OrderCreated, id=9)
            (request,) = receiver.wait_count(1)
            assert request.headers["host"] == f"hooks.test:{receiver.port}"
            Webhook(endpoint["secret"]).verify(request.body, request.headers)
            assert request.id == event_id
            # A name the certificate does not carry: refused by TLS, nothing delivered.
            other = subscribe(node, f"https://other.test:{receiver.port}/secure")
            second = publish(node, OrderPaid, id=9)
            url = f"{node.url}/v1/webhooks/{other['id']}/deliveries/{second}"
            wait_until(lambda: httpx.get(url).json()["status"] == "failed")
            assert "certificate" in httpx.get(url).json()["error"].lower()
    finally:
        receiver.stop()
