"""The fuzz suite's harness: the fuzzed node, its checks, raw-socket exchanges.

The node runs in its own process so that its memory is its own: after every
example it must answer ``/healthz`` within a second, and its resident memory
must stay within :data:`MEMORY_GROWTH` of what it used before the fuzzing.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from hypothesis import HealthCheck, settings

#: How far the node's resident memory may grow over the whole suite.
MEMORY_GROWTH = 150 * 1024 * 1024

# Bounded for CI: the whole suite takes well under a minute. POLYPORT_FUZZ_EXAMPLES
# raises it for a longer run on a developer's machine.
EXAMPLES = int(os.environ.get("POLYPORT_FUZZ_EXAMPLES", "120"))
settings.register_profile(
    "fuzz",
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FUZZ = settings.get_profile("fuzz")


@dataclass
class FuzzedNode:
    url: str
    host: str
    port: int
    grpc_port: int
    process: subprocess.Popen[str]
    baseline_rss: int

    def rss(self) -> int:
        """The node's resident memory in bytes, from /proc."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        line = next(line for line in status.splitlines() if line.startswith("VmRSS:"))
        return int(line.split()[1]) * 1024

    def check(self) -> None:
        """Alive, answering /healthz within a second, memory within bounds."""
        assert self.process.poll() is None, "the node died"
        answer = httpx.get(f"{self.url}/healthz", timeout=1.0)
        assert answer.status_code == 200
        grown = self.rss() - self.baseline_rss
        assert grown < MEMORY_GROWTH, f"the node grew by {grown // 2**20} MiB"


STATUS = re.compile(rb"HTTP/1\.[01] (\d{3}) ")


def exchange(host: str, port: int, pieces: list[bytes], *, first: float = 1.0) -> bytes:
    """Send ``pieces`` on a new connection and return what the server answered.

    Waits up to ``first`` seconds for the first bytes, then reads until the
    server closes or stays quiet for 50 ms: long enough on loopback for
    every answer a request gets at once, short enough for many examples.
    """
    received = bytearray()
    with socket.create_connection((host, port), timeout=first) as sock:
        try:
            for piece in pieces:
                sock.sendall(piece)
        except OSError:
            pass  # the server may close on a bad prefix; read what it said
        deadline = time.monotonic() + 3.0
        sock.settimeout(first)
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except (TimeoutError, OSError):
                break
            if not chunk:
                break
            received += chunk
            sock.settimeout(0.05)
    return bytes(received)


def statuses(answer: bytes) -> list[int]:
    """The status codes of the HTTP responses in ``answer``."""
    return [int(code) for code in STATUS.findall(answer)]


def websocket(host: str, port: int, path: str, protocol: str | None) -> tuple[socket.socket, bytes]:
    """An open WebSocket connection (handshake done) as a raw socket, and what followed it."""
    sock = socket.create_connection((host, port), timeout=2.0)
    head = (
        f"GET {path} HTTP/1.1\r\nhost: {host}:{port}\r\nupgrade: websocket\r\n"
        "connection: Upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "sec-websocket-version: 13\r\n"
    )
    if protocol is not None:
        head += f"sec-websocket-protocol: {protocol}\r\n"
    sock.sendall(head.encode() + b"\r\n")
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = sock.recv(4096)
        assert chunk, "closed during the handshake"
        answer += chunk
    assert answer.startswith(b"HTTP/1.1 101"), answer[:200]
    return sock, answer.split(b"\r\n\r\n", 1)[1]


def client_frame(opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0) -> bytes:
    """A masked client frame (the mask is zero bytes: the payload goes as it is)."""
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    size = len(payload)
    if size < 126:
        length = bytes([0x80 | size])
    elif size < 65536:
        length = bytes([0x80 | 126]) + size.to_bytes(2, "big")
    else:
        length = bytes([0x80 | 127]) + size.to_bytes(8, "big")
    return bytes([first]) + length + b"\0\0\0\0" + payload


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """``(opcode, payload)`` of the complete unmasked frames in ``data``."""
    frames = []
    at = 0
    while at + 2 <= len(data):
        opcode, size = data[at] & 0x0F, data[at + 1] & 0x7F
        at += 2
        if size == 126:
            size, at = int.from_bytes(data[at : at + 2], "big"), at + 2
        elif size == 127:
            size, at = int.from_bytes(data[at : at + 8], "big"), at + 8
        if at + size > len(data):
            break
        frames.append((opcode, data[at : at + size]))
        at += size
    return frames


def read_for_a_moment(sock: socket.socket, quiet: float = 0.05, first: float = 0.5) -> bytes:
    """What arrives on ``sock`` until it closes or stays quiet for ``quiet`` seconds."""
    received = bytearray()
    deadline = time.monotonic() + 3.0
    sock.settimeout(first)
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, OSError):
            break
        if not chunk:
            break
        received += chunk
        sock.settimeout(quiet)
    return bytes(received)
