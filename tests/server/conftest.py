"""Nodes in processes of their own, and raw clients that stop reading, for the server tests.

:func:`stall_node` runs ``stallnode.py`` on free loopback ports and gives its
memory as the kernel counts it (``/proc/PID/status``); the helpers open raw
sockets with tiny receive buffers, so what a client leaves unread stays in
the node rather than in the kernel, and tell a reset from a polite close.
"""

from __future__ import annotations

import base64
import contextlib
import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
from websockets.frames import Frame, Opcode

SCRIPT = Path(__file__).with_name("stallnode.py")
MB = 1024 * 1024
#: The client's receive buffer: the kernel keeps little for it.
CLIENT_RCVBUF = 4096
#: Linux's tcp_info state after a reset (TCP_CLOSE); a polite close is CLOSE_WAIT (8).
TCP_CLOSE = 7
SEND_TIMEOUT = 1.5

ENV = {
    "POLYPORT_DEV": "true",
    "POLYPORT_DATABASE": ":memory:",
    "POLYPORT_EVENT_LOG": "memory",
    "POLYPORT_SERVER__SEND_TIMEOUT": str(SEND_TIMEOUT),
    "POLYPORT_SSE__STALL_TIMEOUT": str(SEND_TIMEOUT),
    "POLYPORT_WEBSOCKET__STALL_TIMEOUT": str(SEND_TIMEOUT),
    "POLYPORT_HISTORY__MAX_EVENTS": "50",
    "POLYPORT_LIMITS__SUBSCRIBER_BUFFER": "20",
    "POLYPORT_GRPC__PORT": "0",
    "POLYPORT_LOG__LEVEL": "warning",
}


class StallNode:
    """The node's process: its address, its memory, and a few calls."""

    def __init__(self, process: subprocess.Popen[str], port: int, grpc_port: int) -> None:
        self.process = process
        self.port = port
        self.grpc_port = grpc_port
        self.url = f"http://127.0.0.1:{port}"
        self.sockets: list[socket.socket] = []

    def _status(self, field: str) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        raise AssertionError(f"no {field} in /proc/{self.process.pid}/status")

    def rss(self) -> int:
        return self._status("VmRSS")

    def reset_peak(self) -> None:
        """From now on VmHWM is the peak RSS (proc(5): writing 5 to clear_refs)."""
        Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")

    def peak(self) -> int:
        return self._status("VmHWM")

    def healthz_seconds(self) -> float:
        began = time.monotonic()
        response = httpx.get(f"{self.url}/healthz", timeout=5)
        assert response.status_code == 200
        return time.monotonic() - began

    def call(self, method: str, **params: Any) -> Any:
        response = httpx.post(f"{self.url}/v1/{method}", json=params, timeout=60)
        assert response.status_code == 200, response.text
        return response.json()

    def connect(self) -> socket.socket:
        """A raw client socket with a tiny receive buffer (set before the handshake)."""
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, CLIENT_RCVBUF)
        self.sockets.append(sock)
        sock.settimeout(10)
        sock.connect(("127.0.0.1", self.port))
        return sock


@contextlib.contextmanager
def stall_node(
    tmp_path: Path, edges: str, *, max_open_files: int | None = None, **env: str
) -> Iterator[StallNode]:
    """``stallnode.py EDGES`` on free ports; its log must hold no traceback at the end.

    ``max_open_files`` lowers the node's ``RLIMIT_NOFILE`` (``ulimit -n``) before it starts.
    """
    log_path = tmp_path / "node.log"
    command = [sys.executable, str(SCRIPT), edges]
    if max_open_files is not None:
        command = ["sh", "-c", f'ulimit -n {max_open_files} && exec "$@"', "sh", *command]
    with log_path.open("w") as log:
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env={**os.environ, **ENV, **env},
        )
    assert process.stdout is not None
    node: StallNode | None = None
    try:
        ready, _, _ = select.select([process.stdout], [], [], 60)
        line = process.stdout.readline() if ready else ""
        assert line, "the node did not start:\n" + log_path.read_text()
        port, grpc_port = (int(part) for part in line.split())
        node = StallNode(process, port, grpc_port)
        assert node.healthz_seconds() < 5
        yield node
        assert process.poll() is None, "the node died:\n" + log_path.read_text()
    finally:
        for sock in node.sockets if node is not None else ():
            sock.close()
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stdout.close()
    assert "Traceback" not in log_path.read_text(), log_path.read_text()


def tcp_state(sock: socket.socket) -> int:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]


def aborted(sock: socket.socket, within: float = 15.0) -> bool:
    """Whether the node reset the connection within ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if tcp_state(sock) == TCP_CLOSE:
            return True
        time.sleep(0.05)
    return False


def read_head(sock: socket.socket) -> bytes:
    """The response head, byte by byte (nothing of what follows is read)."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        byte = sock.recv(1)
        assert byte, head
        head += byte
    return head


def websocket(node: StallNode, path: str, subprotocol: str | None = None) -> socket.socket:
    """An open WebSocket on ``path``: the handshake read, nothing else."""
    sock = node.connect()
    key = base64.b64encode(os.urandom(16))
    offer = b"sec-websocket-protocol: %b\r\n" % subprotocol.encode() if subprotocol else b""
    sock.sendall(
        b"GET %b HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
        b"sec-websocket-key: %b\r\nsec-websocket-version: 13\r\n%b\r\n"
        % (path.encode(), key, offer)
    )
    assert read_head(sock).startswith(b"HTTP/1.1 101")
    return sock


def frame(payload: bytes | dict[str, Any], opcode: Opcode = Opcode.TEXT) -> bytes:
    """A masked client frame."""
    data = orjson.dumps(payload) if isinstance(payload, dict) else payload
    return Frame(opcode, data).serialize(mask=True)


def read_frame(sock: socket.socket) -> bytes:
    """One unmasked, unfragmented server frame's payload (small frames only)."""
    head = sock.recv(2, socket.MSG_WAITALL)
    size = head[1] & 0x7F
    if size == 126:
        size = int.from_bytes(sock.recv(2, socket.MSG_WAITALL))
    return sock.recv(size, socket.MSG_WAITALL) if size else b""


def sending(sock: socket.socket, data: bytes) -> threading.Thread:
    """Send ``data`` from a thread (the node stops reading), until sent or reset."""

    def send() -> None:
        with contextlib.suppress(OSError):
            sock.sendall(data)

    sock.settimeout(60)
    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread
