"""Three node processes on one shared engine behind HAProxy: the harness of the balancer tests.

:func:`behind_haproxy` starts the nodes (``clusternode.py``) on an engine URL
and HAProxy in front of them, round robin, with the configuration of
docs/scale-out.md but for the listening socket, the addresses and the
``X-Served-By`` header, with which HAProxy names the node that answered each
request (WebSocket upgrades included): so a test knows where its stream or
write landed. HAProxy listens on a socket bound here to a free port and
handed over (``bind fd@N``); every process is stopped by its PID.

The nodes trust 127.0.0.1, where HAProxy connects from; clients connect from
:data:`CLIENT` (all of 127.0.0.0/8 is loopback on Linux), so the client a node
sees is not the proxy. Each node also serves gRPC on a port of its own, which
the balancer does not carry (as in docs/scale-out.md): :attr:`Cluster.grpc`
names it, for clients that dial a node directly.

HAProxy is Debian's package (``.ci/run`` installs it); without it the tests
skip, or fail under ``POLYPORT_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import REQUIRE_SERVICES

NODE = Path(__file__).with_name("clusternode.py")
LABELS = ["a", "b", "c"]
#: Where the tests' clients connect from: loopback, but not the proxy's address.
CLIENT = "127.0.0.2"
#: The response header in which HAProxy names the node that answered.
SERVED_BY = "x-served-by"

HAPROXY_CFG = """\
global
    maxconn 256
    nbthread 1

defaults
    mode http
    option forwardfor
    option redispatch 1
    timeout connect 2s
    timeout http-request 10s
    timeout client 30s
    timeout server 30s
    timeout tunnel 1h
    # A health check may take 3 s (unset, it is 'inter': 1 s) before it counts as failed: a
    # busy machine answering /healthz slowly twice must not take a live node out of the
    # round. A dead node still fails at once (connection refused).
    timeout check 3s

frontend polyport
    bind fd@{fd}
    default_backend nodes

backend nodes
    balance roundrobin
    option httpchk
    http-check send meth GET uri /healthz ver HTTP/1.1 hdr Host polyport
    http-check expect status 200
    default-server check inter 1s fall 2 rise 1
    http-response set-header X-Served-By %[srv_name]
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
    """The proxy's URL; each node's URL, gRPC address, log file and process by label."""

    url: str
    nodes: dict[str, str]
    grpc: dict[str, str]
    logs: dict[str, Path]
    processes: dict[str, subprocess.Popen[str]]

    def kill(self, label: str) -> None:
        """SIGKILL node ``label``, and wait until it is gone."""
        process = self.processes[label]
        process.kill()
        process.wait(10)


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


@dataclass
class Nodes:
    """The node processes: each one's URL, gRPC address, log file and process by label."""

    urls: dict[str, str]
    grpc: dict[str, str]
    logs: dict[str, Path]
    processes: dict[str, subprocess.Popen[str]]


@contextlib.contextmanager
def nodes(tmp: Path, engine: str) -> Iterator[Nodes]:
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
        urls, grpc = {}, {}
        for label, process in processes.items():
            assert process.stdout is not None
            line = process.stdout.readline()
            if not line.strip().isdigit():
                raise AssertionError(f"node {label} did not start: {logs[label].read_text()}")
            urls[label] = f"http://127.0.0.1:{int(line)}"
        for label, url in urls.items():
            wait_healthy(url)
            # Printed once the node serves, which it does once healthy.
            stdout = processes[label].stdout
            assert stdout is not None
            kind, _, address = stdout.readline().strip().partition(" ")
            if kind != "grpc":
                raise AssertionError(f"node {label} named no gRPC address: {kind} {address}")
            grpc[label] = address
        yield Nodes(urls, grpc, logs, processes)
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


@contextlib.contextmanager
def behind_haproxy(tmp: Path, engine: str) -> Iterator[Cluster]:
    """Three nodes on ``engine`` behind HAProxy (skips without HAProxy), until the block ends."""
    program = require_haproxy()
    with nodes(tmp, engine) as started, haproxy(tmp, program, started.urls) as url:
        yield Cluster(url, started.urls, started.grpc, started.logs, started.processes)


def client(timeout: float = 10) -> httpx.Client:
    """An HTTP client connecting from :data:`CLIENT`."""
    transport = httpx.HTTPTransport(local_address=CLIENT)
    return httpx.Client(transport=transport, timeout=httpx.Timeout(timeout))


__all__ = [
    "CLIENT",
    "LABELS",
    "SERVED_BY",
    "Cluster",
    "behind_haproxy",
    "client",
    "require_haproxy",
    "stop",
    "wait_healthy",
]
