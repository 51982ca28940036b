"""SSRF: non-public targets refused at registration and at connect time, with no packet sent."""

from __future__ import annotations

import asyncio
import ipaddress
from pathlib import Path
from typing import Any

import httpx
import pytest

from polyport.edges.webhooks import client, ssrf
from polyport.edges.webhooks.client import ConnectionPool
from polyport.edges.webhooks.ssrf import AddressPolicy, Refused, parse_url

from .conftest import OrderCreated, publish, running, settings_for, subscribe, wait_until

REFUSED = [
    "127.0.0.1",  # loopback
    "127.255.255.254",
    "10.0.0.1",  # private
    "172.16.5.4",
    "192.168.1.1",
    "169.254.169.254",  # link-local: cloud metadata
    "100.64.0.1",  # shared address space (CGNAT)
    "100.127.255.254",
    "224.0.0.1",  # multicast
    "239.255.255.250",
    "0.0.0.0",  # unspecified
    "240.0.0.1",  # reserved
    "255.255.255.255",
    "192.0.0.8",  # IETF protocol assignments
    "192.0.2.1",  # documentation
    "198.18.0.1",  # benchmarking
    "::1",
    "::",
    "fe80::1",  # link-local
    "fc00::1",  # unique local
    "fd12:3456::1",
    "ff02::1",  # multicast
    "::ffff:127.0.0.1",  # IPv4-mapped
    "::ffff:10.0.0.1",
    "::ffff:8.8.8.8",  # mapped, even of a public address
    "::127.0.0.1",  # IPv4-compatible (deprecated)
    "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
    "64:ff9b::808:808",  # NAT64 of a public one: the route is not what it seems
    "2002:a00:1::1",  # 6to4 of 10.0.0.1
    "2001::1",  # Teredo
    "2001:db8::1",  # documentation
]
ALLOWED = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "2a00:1450:4001::1"]


@pytest.mark.parametrize("address", REFUSED)
def test_non_public_addresses_are_refused(address: str) -> None:
    """Every non-public form, IPv6 wrappers included, is refused by default."""
    with pytest.raises(Refused):
        AddressPolicy().check_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses_pass(address: str) -> None:
    AddressPolicy().check_address(ipaddress.ip_address(address))


def test_the_allow_list_is_exact() -> None:
    """Allowing 127.0.0.1 allows neither its neighbours nor ::1 nor the mapped form."""
    policy = AddressPolicy(["127.0.0.1"])
    policy.check_address(ipaddress.ip_address("127.0.0.1"))
    for other in ("127.0.0.2", "::1", "::ffff:127.0.0.1", "10.0.0.1"):
        with pytest.raises(Refused):
            policy.check_address(ipaddress.ip_address(other))
    AddressPolicy(["10.0.0.0/8"]).check_address(ipaddress.ip_address("10.1.2.3"))


class Resolver:
    """Answers for invented names; the answer can change (DNS rebinding)."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers

    async def __call__(self, host: str, port: int) -> list[Any]:
        if host not in self.answers:
            raise OSError(f"unknown name {host}")
        return [(0, 0, 0, "", (a, port)) for a in self.answers[host]]


@pytest.fixture
def sockets(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every address the webhook client opens a connection to."""
    opened: list[str] = []
    real = client.open_connection

    async def spy(protocol: Any, address: Any, target: Any, context: Any) -> None:
        opened.append(str(address))
        await real(protocol, address, target, context)

    monkeypatch.setattr(client, "open_connection", spy)
    return opened


def test_a_name_resolving_to_a_private_address_is_refused_before_connecting(
    sockets: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client resolves, checks every answer, and opens nothing when one is refused."""
    monkeypatch.setattr(ssrf, "getaddrinfo", Resolver({"mixed.test": ["8.8.8.8", "10.0.0.1"]}))
    for url in (
        "http://mixed.test/hook",
        "http://10.0.0.1/",
        "http://[::1]:8080/",
        "http://169.254.169.254/latest",
    ):
        pool = ConnectionPool(parse_url(url), AddressPolicy(), keep=100)
        with pytest.raises(Refused):
            asyncio.run(pool.post([], b"{}"))
    assert sockets == []


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]:8080/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://100.64.1.1/hook",
        "http://localhost:8080/hook",
    ],
)
def test_registration_refuses_non_public_targets(tmp_path: Path, url: str) -> None:
    """Without an allow-list, 127.0.0.1 (and localhost, which resolves to it) is refused too."""
    with running(settings_for(tmp_path, allow_private=[])) as node:
        response = httpx.post(f"{node.url}/v1/webhooks", json={"url": url})
        assert response.status_code == 422, response.text
        assert "not an acceptable webhook target" in response.json()["detail"]


def test_delivery_rechecks_at_connect_time(
    tmp_path: Path, sockets: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A name that resolved to a public address at registration and to a private one
    later (DNS rebinding) is refused at delivery: logged, in the delivery log, no socket."""
    resolver = Resolver({"rebind.test": ["93.184.216.34"]})
    monkeypatch.setattr(ssrf, "getaddrinfo", resolver)
    with running(settings_for(tmp_path, allow_private=[], retry_schedule=[0.0])) as node:
        endpoint = subscribe(node, "http://rebind.test/hook")
        resolver.answers["rebind.test"] = ["10.0.0.7"]
        event_id = publish(node, OrderCreated, id=1)
        url = f"{node.url}/v1/webhooks/{endpoint['id']}/deliveries/{event_id}"
        wait_until(lambda: httpx.get(url).json()["status"] == "failed")
        delivery = httpx.get(url).json()
        assert delivery["error"].startswith("refused: 10.0.0.7 is a private address")
        assert delivery["response_code"] is None
    assert sockets == []
