"""Three nodes behind a real load balancer, on each shared engine: HAProxy in front, round robin.

Writes through the proxy land on every node in turn; an SSE stream and a
WebSocket opened through it get what every node wrote; an id resumes on any
node; and the nodes see the real client, not the proxy.

HAProxy is Debian's package (``.ci/run`` installs it); without it these tests
skip, or fail under ``POLYPORT_REQUIRE_SERVICES=1``. It listens on a socket
this test binds to a free port and hands over (``bind fd@N``), and is stopped
by its PID. The nodes (``clusternode.py``) trust 127.0.0.1, where HAProxy
connects from; this test's client connects from 127.0.0.2 (all of 127.0.0.0/8
is loopback on Linux), so the client a node sees is not the proxy. One
cluster serves every test of an engine: each test writes on channels of its own.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from tests.cluster.engines import ENGINES, shared_engine
from tests.conftest import REQUIRE_SERVICES
from websockets.sync.client import connect

pytestmark = [pytest.mark.services, pytest.mark.timeout(60)]
NODE = Path(__file__).with_name("clusternode.py")
LABELS = ["a", "b", "c"]
#: Where this test's client connects from: loopback, but not the proxy's address.
CLIENT = "127.0.0.2"

#: The configuration of docs/scale-out.md, but for the listening socket and the addresses.
HAPROXY_CFG = """\
global
    maxconn 256
    nbthread 1

defaults
    mode http
    option forwardfor
    timeout connect 2s
    timeout http-request 10s
    timeout client 30s
    timeout server 30s
    timeout tunnel 1h

frontend polyport
    bind fd@{fd}
    default_backend nodes

backend nodes
    balance roundrobin
    option httpchk
    http-check send meth GET uri /healthz ver HTTP/1.1 hdr Host polyport
    http-check expect status 200
    default-server check inter 1s fall 2 rise 1
{servers}
"""


def require_haproxy() -> str:
    """HAProxy's path; skip (or, in CI, fail) when it is not installed."""
    found = shutil.which("haproxy", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if found is not None:
        return found
    message = "haproxy is not installed (apt-get install haproxy)"
    if REQUIRE_SERVICES:
        pytest.fail(message + " (POLYPORT_REQUIRE_SERVICES=1)")
    pytest.skip(message)


@dataclass
class Cluster:
    """The proxy's URL, and each node's URL and log file by label."""

    url: str
    nodes: dict[str, str]
    logs: dict[str, Path]


def wait_healthy(url: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        time.sleep(0.05)
    raise AssertionError(f"{url} did not become healthy")


def stop(process: subprocess.Popen[Any]) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


@contextlib.contextmanager
def nodes(tmp: Path, engine: str) -> Iterator[tuple[dict[str, str], dict[str, Path]]]:
    """The three node processes, started together, each logging its access log to a file."""
    env = {
        **os.environ,
        "POLYPORT_SERVER__TRUSTED_PROXIES": '["127.0.0.1"]',
        "POLYPORT_LOG__ACCESS": "true",
        "POLYPORT_LOG__LEVEL": "info",
    }
    logs = {label: tmp / f"{label}.log" for label in LABELS}
    processes: dict[str, subprocess.Popen[str]] = {}
    try:
        for label in LABELS:
            with logs[label].open("w") as log:
                processes[label] = subprocess.Popen(
                    [sys.executable, str(NODE), str(tmp / f"{label}.sqlite3"), engine],
                    stdout=subprocess.PIPE,
                    stderr=log,
                    text=True,
                    env=env,
                )
        urls = {}
        for label, process in processes.items():
            assert process.stdout is not None
            line = process.stdout.readline()
            if not line.strip().isdigit():
                raise AssertionError(f"node {label} did not start: {logs[label].read_text()}")
            urls[label] = f"http://127.0.0.1:{int(line)}"
        for url in urls.values():
            wait_healthy(url)
        yield urls, logs
    finally:
        for process in processes.values():
            stop(process)
            if process.stdout is not None:
                process.stdout.close()


@contextlib.contextmanager
def haproxy(tmp: Path, program: str, nodes: dict[str, str]) -> Iterator[str]:
    """HAProxy in front of ``nodes``, on a free port of 127.0.0.1; its URL."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    servers = "\n".join(
        f"    server {label} {url.removeprefix('http://')}" for label, url in nodes.items()
    )
    config = tmp / "haproxy.cfg"
    config.write_text(HAPROXY_CFG.format(fd=listener.fileno(), servers=servers))
    with (tmp / "haproxy.log").open("w") as log:
        process = subprocess.Popen(
            [program, "-db", "-f", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            pass_fds=(listener.fileno(),),
        )
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        wait_healthy(url, 10)
        yield url
    finally:
        stop(process)
        listener.close()


@pytest.fixture(scope="module", params=ENGINES)
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Three nodes on one engine behind HAProxy, for every test of this module and engine."""
    program = require_haproxy()
    tmp = tmp_path_factory.mktemp(f"balancer-{request.param}")
    with (
        shared_engine(request.param) as engine,
        nodes(tmp, engine) as (urls, logs),
        haproxy(tmp, program, urls) as url,
    ):
        yield Cluster(url, urls, logs)


def client() -> httpx.Client:
    """An HTTP client connecting from :data:`CLIENT`."""
    transport = httpx.HTTPTransport(local_address=CLIENT)
    return httpx.Client(transport=transport, timeout=httpx.Timeout(10, read=10))


def emit_at(url: str, tag: str, headers: dict[str, str] | None = None) -> tuple[str, str]:
    """Publish one tick tagged ``tag`` through ``url``: the node that did, and the event's id."""
    with client() as c:
        answer = c.post(f"{url}/v1/emit_at", json={"tag": tag, "n": 1}, headers=headers or {})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    return body["node"], body["ids"][0]


def follow_sse(
    url: str, tag: str, n: int, *, after: str | None = None, opened: threading.Event | None = None
) -> list[str]:
    """The ids of the first ``n`` events on ``ticks/{tag}``, streamed through ``url``."""
    headers = {"last-event-id": after} if after is not None else {}
    ids: list[str] = []
    with (
        client() as c,
        c.stream("GET", f"{url}/v1/events/stream?channel=ticks/{tag}", headers=headers) as answer,
    ):
        assert answer.status_code == 200
        if opened is not None:
            opened.set()
        for line in answer.iter_lines():
            if line.startswith("id: "):
                ids.append(line[4:])
                if len(ids) == n:
                    break
    return ids


def test_writes_through_the_proxy_land_on_every_node_in_turn(cluster: Cluster) -> None:
    """Round robin: each of three writes in a row on another node, then again in that order."""
    served = [emit_at(cluster.url, "turns")[0] for _ in range(6)]
    assert sorted(served[:3]) == LABELS
    assert served[3:] == served[:3]


def test_an_sse_stream_through_the_proxy_gets_what_every_node_wrote(cluster: Cluster) -> None:
    """One stream, on one node; three writes, one on each node; the stream has all three."""
    received: list[str] = []
    opened = threading.Event()
    reader = threading.Thread(
        target=lambda: received.extend(follow_sse(cluster.url, "sse", 3, opened=opened)),
        daemon=True,
    )
    reader.start()
    assert opened.wait(10)
    written = [emit_at(cluster.url, "sse") for _ in range(3)]
    reader.join(15)
    assert sorted(node for node, _ in written) == LABELS
    assert received == [event_id for _, event_id in written]


def test_an_id_from_any_node_resumes_on_every_node(cluster: Cluster) -> None:
    """Last-Event-ID through the proxy, three times over: each node serves the resume once."""
    written = [emit_at(cluster.url, "resume")[1] for _ in range(3)]
    for _ in LABELS:
        assert follow_sse(cluster.url, "resume", 2, after=written[0]) == written[1:]


def test_a_websocket_through_the_proxy_subscribes_and_receives(cluster: Cluster) -> None:
    """The session protocol through HAProxy's tunnel: subscribed, then every node's events."""
    url = cluster.url.replace("http://", "ws://") + "/ws"
    with connect(url, proxy=None, source_address=(CLIENT, 0), open_timeout=10) as ws:
        assert orjson.loads(ws.recv(timeout=10))["type"] == "welcome"
        ws.send(orjson.dumps({"id": 1, "type": "subscribe", "channels": ["ticks/ws"]}))
        answer = orjson.loads(ws.recv(timeout=10))
        assert (answer["id"], answer["type"]) == (1, "subscribed")
        written = [emit_at(cluster.url, "ws") for _ in range(3)]
        events = [orjson.loads(ws.recv(timeout=10)) for _ in written]
    assert sorted(node for node, _ in written) == LABELS
    assert [frame["event"]["id"] for frame in events] == [event_id for _, event_id in written]


def access_log(path: Path) -> list[dict[str, Any]]:
    records = (orjson.loads(line) for line in path.read_text().splitlines() if line[:1] == "{")
    return [r for r in records if r.get("logger") == "polyport.access"]


def test_the_nodes_see_the_real_client_not_the_proxy(cluster: Cluster) -> None:
    """Through the proxy each node logs 127.0.0.2, even when the client names another address
    itself; HAProxy's own health checks are the proxy; straight to a node, the header is ignored."""
    for _ in LABELS:
        emit_at(cluster.url, "client", headers={"x-forwarded-for": "198.51.100.7"})
    emit_at(cluster.nodes["a"], "client", headers={"x-forwarded-for": "198.51.100.7"})
    for label in LABELS:
        records = access_log(cluster.logs[label])
        writes = {r["client"] for r in records if r["message"].startswith("POST /v1/emit_at ")}
        checks = {r["client"] for r in records if r["message"].startswith("GET /healthz ")}
        assert writes == {CLIENT}, label
        assert "127.0.0.1" in checks, label
