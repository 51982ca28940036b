"""The two brokers of ``polyport bench mqtt``, each a process of the lab's own.

* :class:`MosquittoTarget`: a private ``mosquitto`` on a free port of
  127.0.0.1 with a generated configuration — never the machine's shared
  Mosquitto on 1883, which other programs use;
* :class:`PolyportTarget`: a node serving :mod:`polyport.bench.mqtt_apps`.

Both are stopped by their PID (SIGTERM, then SIGKILL after 5 s), and both
give their resident memory and CPU time from ``/proc``.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self

from polyport.bench.targets import HOST, TargetServer, process_cpu_seconds
from polyport.core.errors import ConfigError

#: Where Debian puts the broker (``/usr/sbin`` is not on every user's PATH).
MOSQUITTO_PATHS = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")
#: Mosquitto's window of unacknowledged QoS 1 messages to a client: polyport's default
#: ``mqtt.max_inflight``, so both brokers send a subscriber as much at once.
IN_FLIGHT = 64


class MqttTarget(Protocol):
    """What the lab needs of a broker: where it listens, and its process."""

    label: str
    host: str

    @property
    def mqtt_port(self) -> int: ...
    @property
    def pid(self) -> int: ...


def rss_kib(pid: int) -> float | None:
    """Process ``pid``'s resident memory (``VmRSS``) in KiB; None off Linux."""
    try:
        status = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return float(line.split()[1])
    return None


def settle(pid: int, quiet: float = 0.2, longest: float = 10.0) -> None:
    """Wait (at most ``longest`` s) until process ``pid`` spends under 5 % of a core."""
    deadline = time.monotonic() + longest
    before = process_cpu_seconds(pid)
    while before is not None and time.monotonic() < deadline:
        time.sleep(quiet)
        after = process_cpu_seconds(pid)
        if after is None or after - before < quiet * 0.05:
            return
        before = after


def mosquitto_binary() -> str:
    """The ``mosquitto`` broker's path, or a one-line error saying how to install it."""
    found = shutil.which("mosquitto") or next(
        (path for path in MOSQUITTO_PATHS if Path(path).is_file()), None
    )
    if found is None:
        raise ConfigError(
            "the mosquitto broker is not installed (apt-get install mosquitto): "
            "polyport bench mqtt measures against a private one"
        )
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def mosquitto_config(port: int, max_queued: int) -> str:
    """A private broker: loopback only, anonymous, nothing persisted, queues as deep as
    the QoS 1 phase needs (Mosquitto drops QoS 1 messages past ``max_queued_messages``)."""
    return "\n".join(
        [
            f"listener {port} {HOST}",
            "allow_anonymous true",
            "persistence false",
            f"max_queued_messages {max_queued}",
            "max_queued_bytes 0",
            f"max_inflight_messages {IN_FLIGHT}",
            "max_connections -1",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "",
        ]
    )


class MosquittoTarget:
    """A private Mosquitto, started on entry and stopped (by its PID) on exit."""

    label = "Mosquitto"
    host = HOST

    def __init__(self, max_queued: int, *, start_timeout: float = 10.0) -> None:
        self.binary = mosquitto_binary()
        self.max_queued = max_queued
        self.start_timeout = start_timeout
        self.port = 0
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def mqtt_port(self) -> int:
        return self.port

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("mosquitto is not running")
        return self._process.pid

    def version(self) -> str:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            shown = subprocess.run(
                [self.binary, "-h"], capture_output=True, timeout=5, check=False
            ).stdout.decode(errors="replace")
            return shown.splitlines()[0].removeprefix("mosquitto version ").strip()
        return "unknown"

    def __enter__(self) -> Self:
        # A port chosen free may be taken before mosquitto binds it: try a few.
        for attempt in range(3):
            try:
                self._start()
                return self
            except ConfigError:
                self.stop()
                if attempt == 2:
                    raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _start(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="polyport-bench-mosquitto-")
        folder = Path(self._dir.name)
        self.port = free_port()
        config = folder / "mosquitto.conf"
        config.write_text(mosquitto_config(self.port, self.max_queued), encoding="utf-8")
        with (folder / "stderr").open("wb") as err:
            self._process = subprocess.Popen(
                [self.binary, "-c", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
            )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                tail = (folder / "stderr").read_text(errors="replace").strip()[-300:]
                raise ConfigError(f"mosquitto exited with status {self._process.poll()}: {tail}")
            with contextlib.suppress(OSError), socket.create_connection((HOST, self.port), 0.5):
                return
            time.sleep(0.05)
        raise ConfigError(f"mosquitto did not listen on {HOST}:{self.port} within 10 s")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None


class PolyportTarget(TargetServer):
    """A node serving the bench contract (:mod:`polyport.bench.mqtt_apps`)."""

    module = "polyport.bench.mqtt_apps"
    targets = {"polyport": "polyport"}
    ready_path = None  # the node announces its ports once it is serving

    def __init__(self, *, topics: str, max_connections: int) -> None:
        super().__init__("polyport")
        self.options = {"topics": topics, "max_connections": max_connections}

    def announces(self) -> tuple[str, ...]:
        return ("port", "mqtt")

    def arguments(self) -> list[str]:
        return [json.dumps(self.options)]

    @property
    def mqtt_port(self) -> int:
        return self.ports["mqtt"]
