"""The node's start-up: gRPC's port, what it warns about, who may read /metrics."""

from __future__ import annotations

import base64
import logging
import socket
from collections.abc import Iterator

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import BaseModel

from polyport import Service
from polyport.core.errors import ConfigError
from polyport.edges.grpc.config import GrpcConfig
from polyport.edges.webhooks.config import WebhooksConfig
from polyport.node import NO_CREDENTIALS_WARNING, NO_SECRET_KEY_WARNING, Node
from polyport.settings import Settings
from polyport.testing import serve_in_thread


class Reading(BaseModel):
    value: int


def make_service(name: str) -> Service:
    """A small service of its own per test."""
    service = Service(name)

    @service.method
    async def double(x: int) -> int:
        return 2 * x

    service.event("readings.taken", Reading)
    return service


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port some other program listens on."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


def serving(address: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        answer = stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
        return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)


async def test_a_taken_default_grpc_port_falls_back_to_a_free_one_and_says_so(
    held_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    """The default gRPC port in use: gRPC is served on a free port and the node warns, naming both.

    The default is played by a port this test holds (50051 itself may be anyone's):
    a GrpcConfig whose port was not set explicitly.
    """
    default = GrpcConfig.model_construct(_fields_set=set(), port=held_port)
    settings = Settings(dev=True, database=":memory:", event_log="memory", grpc=default)
    assert "port" not in settings.grpc.model_fields_set
    node = Node(make_service("fallback"), settings)
    with caplog.at_level(logging.WARNING, logger="polyport.node"):
        async with node.running():
            edge = next(e for e in node.listeners if e.name == "grpc")
            assert edge.off is None and edge.address != f"127.0.0.1:{held_port}"
            assert edge.notice is not None
            assert f"default port {held_port} is in use" in edge.notice
            assert f"served on {edge.address} instead" in edge.notice
            assert edge.notice in node.warnings()
            dialled = [e.address for e in node.catalog() if e.address.startswith("grpc ")]
            assert dialled and all(a.startswith(f"grpc {edge.address} ") for a in dialled)
    assert edge.notice in caplog.messages


async def test_a_taken_default_mqtt_port_falls_back_to_a_free_one_and_says_so(
    held_port: int,
) -> None:
    """As gRPC's: the default MQTT port in use (1883 is Mosquitto's here) → a free port, a
    warning naming both, and the banner's and catalog's addresses are the one served."""
    from polyport.banner import served_rows
    from polyport.edges.mqtt.config import MqttConfig

    default = MqttConfig.model_construct(_fields_set=set(), port=held_port)
    settings = Settings(
        dev=True, database=":memory:", event_log="memory", grpc={"port": 0}, mqtt=default
    )
    node = Node(make_service("mqtt_fallback"), settings)
    async with node.running():
        edge = next(e for e in node.listeners if e.name == "mqtt")
        assert edge.off is None and edge.address != f"127.0.0.1:{held_port}"
        assert edge.notice is not None and edge.notice in node.warnings()
        assert f"default port {held_port} is in use" in edge.notice
        assert f"mqtt://{edge.address} instead" in edge.notice
        rows = dict(served_rows(node, "http://127.0.0.1:8000"))
        assert rows["MQTT"].startswith(f"mqtt://{edge.address} ")


async def test_an_mqtt_port_set_and_taken_is_a_start_up_error(held_port: int) -> None:
    """An explicitly configured MQTT port in use stops the start with a ConfigError."""
    settings = Settings(
        database=":memory:", event_log="memory", grpc={"port": 0}, mqtt={"port": held_port}
    )
    node = Node(make_service("mqtt_taken"), settings)
    with pytest.raises(ConfigError, match=f"MQTT cannot listen on 127.0.0.1:{held_port}"):
        await node.start()
    await node.stop()


async def test_a_grpc_port_set_and_taken_is_a_start_up_error(held_port: int) -> None:
    """An explicitly configured gRPC port that is in use stops the start with a ConfigError."""
    settings = Settings(database=":memory:", event_log="memory", grpc={"port": held_port})
    node = Node(make_service("taken"), settings)
    with pytest.raises(ConfigError, match=f"gRPC cannot listen on 127.0.0.1:{held_port}"):
        await node.start()
    await node.stop()


async def test_a_failed_start_stops_what_started_and_frees_the_service(held_port: int) -> None:
    """After a start that fails (gRPC's port taken), the same service starts on another node."""
    service = make_service("retried")
    taken = Settings(database=":memory:", event_log="memory", grpc={"port": held_port})
    first = Node(service, taken)
    with pytest.raises(ConfigError):
        await first.start()
    assert not first.runtime.hub._registrations  # nothing left running
    second = Node(service, Settings(database=":memory:", event_log="memory", grpc={"port": 0}))
    async with second.running():
        assert second.runtime.hub is not first.runtime.hub


def test_serve_in_thread_serves_grpc_on_a_free_port() -> None:
    """Tests never race for 50051: serve_in_thread asks for any free gRPC port and names it."""
    with serve_in_thread(make_service("threaded")) as server:
        assert server.node.settings.grpc.port == 0  # asked for: any free port
        assert server.grpc_address is not None
        grpc_edge = next(e for e in server.node.listeners if e.name == "grpc")
        assert server.grpc_address == grpc_edge.address
        assert not server.grpc_address.endswith(":0")
        assert serving(server.grpc_address)


def test_warnings_name_what_a_reader_must_know() -> None:
    """Secure mode without credentials is a warning; with a key, or in dev mode, it is not."""
    quiet = Settings(database=":memory:", event_log="memory")
    assert NO_CREDENTIALS_WARNING in Node(make_service("w1"), quiet).warnings()
    keyed = Settings(
        database=":memory:", event_log="memory", auth={"api_keys": [{"key": "k", "subject": "me"}]}
    )
    assert NO_CREDENTIALS_WARNING not in Node(make_service("w2"), keyed).warnings()
    off = Settings(database=":memory:", event_log="memory", dev=True, grpc={"enabled": False})
    warnings = Node(make_service("w3"), off).warnings()
    assert NO_CREDENTIALS_WARNING not in warnings
    assert "grpc is not served: disabled by grpc.enabled = false" in warnings
    assert NO_SECRET_KEY_WARNING in Node(make_service("w4"), keyed).warnings()
    secret = [base64.urlsafe_b64encode(bytes(32)).decode()]
    encrypted = keyed.model_copy(update={"webhooks": WebhooksConfig(secret_keys=secret)})
    assert NO_SECRET_KEY_WARNING not in Node(make_service("w5"), encrypted).warnings()
    assert NO_SECRET_KEY_WARNING not in warnings  # development mode keeps them in plain text


KEYS = [
    {"key": "metrics-key", "subject": "prometheus", "scopes": ["metrics"]},
    {"key": "other-key", "subject": "billing", "scopes": ["orders:write"]},
]


def test_metrics_need_their_scope_in_secure_mode() -> None:
    """/metrics: 401 with no credentials, 403 without the scope, 200 with it; /healthz is open."""
    settings = Settings(database=":memory:", event_log="memory", auth={"api_keys": KEYS})
    with serve_in_thread(make_service("metrics"), settings, edges=["rest"]) as server:
        url = f"{server.url}/metrics"
        anonymous = httpx.get(url)
        assert anonymous.status_code == 401
        assert anonymous.headers["content-type"].startswith("application/problem+json")
        assert "polyport_" not in anonymous.text
        assert httpx.get(url, headers={"x-api-key": "other-key"}).status_code == 403
        allowed = httpx.get(url, headers={"authorization": "Bearer metrics-key"})
        assert allowed.status_code == 200 and "polyport_calls_total" in allowed.text
        assert allowed.headers["cache-control"] == "no-store"
        assert httpx.get(f"{server.url}/healthz").status_code == 200


def test_metrics_may_be_public_or_need_another_scope() -> None:
    """metrics.public = true opens /metrics to anyone; metrics.scope names the scope needed."""
    public = Settings(
        database=":memory:", event_log="memory", auth={"api_keys": KEYS}, metrics={"public": True}
    )
    with serve_in_thread(make_service("public"), public, edges=["rest"]) as server:
        assert httpx.get(f"{server.url}/metrics").status_code == 200
    scoped = Settings(
        database=":memory:",
        event_log="memory",
        auth={"api_keys": KEYS},
        metrics={"scope": "orders:write"},
    )
    with serve_in_thread(make_service("scoped"), scoped, edges=["rest"]) as server:
        url = f"{server.url}/metrics"
        assert httpx.get(url, headers={"x-api-key": "other-key"}).status_code == 200
        assert httpx.get(url, headers={"x-api-key": "metrics-key"}).status_code == 403
