"""Engine servers of a test's own, to crash and start again under load: PostgreSQL, Redis, NATS.

The engines the other tests share are never touched. Each server here runs on
a free loopback port with its files in a directory of its own, set to keep
what it acknowledged (Redis: AOF with ``appendfsync always``; NATS: JetStream
on files; PostgreSQL: a cluster made by ``initdb``). :meth:`EngineServer.crash`
ends it as a crash would — SIGKILL for Redis and NATS, an immediate shutdown
(SIGQUIT: no checkpoint, recovery from the WAL at the next start) for
PostgreSQL, whose postmaster killed outright would leave its backends
running — and :meth:`EngineServer.start` brings it back on the same port over
the same files. Only processes started here are signalled, by their PID.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"))), Path("/nonexistent"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class EngineServer:
    """One engine server process on a port of its own, over files of its own."""

    def __init__(self, kind: str, home: Path) -> None:
        self.kind = kind
        self.home = home
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self._log = (home / "server.log").open("ab")
        if kind == "postgresql":
            self._init_postgres()

    @property
    def url(self) -> str:
        """The engine URL a node uses (without its namespace)."""
        if self.kind == "postgresql":
            return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        if self.kind == "redis":
            return f"redis://127.0.0.1:{self.port}/0"
        return f"nats://127.0.0.1:{self.port}"

    def _as_postgres(self, command: list[str]) -> list[str]:
        # PostgreSQL refuses to run as root: tests run as root in CI drop to its user.
        return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command

    def _init_postgres(self) -> None:
        if not (PG_BIN / "initdb").exists():
            pytest.fail("PostgreSQL's server programs are not installed (initdb)")
        data = self.home / "pg"
        data.mkdir()
        if os.geteuid() == 0:
            shutil.chown(self.home, "postgres")
            shutil.chown(data, "postgres")
        subprocess.run(
            self._as_postgres(
                [str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"]
            ),
            check=True,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            timeout=120,
        )

    def _command(self) -> list[str]:
        if self.kind == "postgresql":
            return self._as_postgres(
                [
                    str(PG_BIN / "postgres"),
                    "-D",
                    str(self.home / "pg"),
                    "-p",
                    str(self.port),
                    "-k",
                    str(self.home),
                    "-c",
                    "listen_addresses=127.0.0.1",
                ]
            )
        if self.kind == "redis":
            return [
                "redis-server",
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--dir", str(self.home),
                "--save", "",
                "--appendonly", "yes",
                "--appendfsync", "always",
            ]  # fmt: skip
        return [
            "/usr/sbin/nats-server",
            "-a", "127.0.0.1",
            "-p", str(self.port),
            "-js",
            "-sd", str(self.home / "js"),
        ]  # fmt: skip

    def start(self, seconds: float = 30.0) -> None:
        """Start it and wait until it accepts connections (PostgreSQL: queries)."""
        assert self._process is None
        self._process = subprocess.Popen(
            self._command(), stdout=self._log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + seconds
        while not self._ready():
            if self._process.poll() is not None:
                pytest.fail(f"{self.kind} exited: {(self.home / 'server.log').read_text()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"{self.kind} did not start in {seconds} s")
            time.sleep(0.05)

    def _ready(self) -> bool:
        if self.kind == "postgresql":
            probe = subprocess.run(
                [str(PG_BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                capture_output=True,
            )
            return probe.returncode == 0
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.5):
            return True
        return False

    def crash(self) -> None:
        """End it as a crash would, and wait until it is gone."""
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGQUIT if self.kind == "postgresql" else signal.SIGKILL)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)

    def close(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM if self.kind != "postgresql" else signal.SIGINT)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        self._log.close()


@contextlib.contextmanager
def engine_server(kind: str) -> Iterator[EngineServer]:
    """A running engine server of ``kind``, in a directory removed afterwards."""
    for program in ("redis-server", "/usr/sbin/nats-server"):
        if kind in program and shutil.which(program) is None:
            pytest.fail(f"{program} is not installed")
    home = Path(tempfile.mkdtemp(prefix=f"pp-{kind}-"))
    server = EngineServer(kind, home)
    try:
        server.start()
        yield server
    finally:
        server.close()
        shutil.rmtree(home, ignore_errors=True)
