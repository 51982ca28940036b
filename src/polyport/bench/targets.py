"""Starting and stopping bench targets, each a server process of its own.

The lab starts :mod:`polyport.bench.apps` for one target, reads the ports it
announces on stdout (``port N`` for HTTP, ``grpc N`` for gRPC, one a line),
waits until ``GET /v1/users/{id}`` answers 200, and afterwards stops it by
its PID. A target that fails to start is a one-line
:class:`~polyport.core.errors.ConfigError` carrying the tail of its stderr.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from polyport.bench.users import BENCH_PATH
from polyport.core.errors import ConfigError

HOST = "127.0.0.1"

#: Every REST target in the order the lab always measures them, with its display name.
TARGETS: dict[str, str] = {"polyport": "polyport", "fastapi": "FastAPI", "starlette": "Starlette"}


class TargetServer:
    """One target served by its own process on an ephemeral port of 127.0.0.1.

    Use as a context manager: the process is started on entry and stopped on
    exit, whatever happens in between.
    """

    #: The module started as ``python -m MODULE NAME``, the targets it knows (name: label),
    #: the path that answers 200 once the target is ready (None: no HTTP to ask), and the
    #: ports a target announces before it counts as started. Other benches subclass these.
    module = "polyport.bench.apps"
    targets: dict[str, str] = TARGETS
    ready_path: str | None = BENCH_PATH

    def announces(self) -> tuple[str, ...]:
        """The ports (``port``: HTTP) this target writes on stdout once it is serving."""
        return ("port",)

    def arguments(self) -> list[str]:
        """What follows ``python -m MODULE``: the target's name, unless a bench says more."""
        return [self.name]

    def __init__(self, name: str, *, start_timeout: float = 30.0) -> None:
        if name not in self.targets:
            known = ", ".join(self.targets)
            raise ConfigError(f"unknown bench target {name!r}; known: {known}")
        self.name = name
        self.label = self.targets[name]
        self.host = HOST
        self.port = 0  # the HTTP port
        #: Every port the target announced, by name: ``port`` (HTTP), ``grpc``…
        self.ports: dict[str, int] = {}
        self.start_timeout = start_timeout
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("the target is not running")
        return self._process.pid

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the process and return once it answers the bench request with 200."""
        self._dir = tempfile.TemporaryDirectory(prefix=f"polyport-bench-{self.name}-")
        folder = Path(self._dir.name)
        # Files, not pipes: a server that logs a lot must never block on a full pipe.
        with (folder / "stdout").open("wb") as out, (folder / "stderr").open("wb") as err:
            self._process = subprocess.Popen(
                [sys.executable, "-m", self.module, *self.arguments()],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
            )
        try:
            deadline = time.monotonic() + self.start_timeout
            self.ports = self._wait_for_ports(folder / "stdout", deadline)
            self.port = self.ports.get("port", 0)
            if self.ready_path is not None:
                self._wait_until_answering(self.ready_path, deadline)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the process by its PID (SIGTERM, then SIGKILL after 5 s) and clean up."""
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

    # -- waiting ----------------------------------------------------------------------------

    def check_alive(self) -> None:
        """Raise :class:`ConfigError` (with its stderr tail) if the process has exited."""
        assert self._process is not None
        code = self._process.poll()
        if code is not None:
            raise ConfigError(
                f"the {self.label} bench target exited with status {code}: "
                f"{self.stderr_tail() or 'no output'}"
            )

    def _wait_for_ports(self, stdout: Path, deadline: float) -> dict[str, int]:
        wanted = set(self.announces())
        while time.monotonic() < deadline:
            text = stdout.read_text(encoding="utf-8", errors="replace")
            ports: dict[str, int] = {}
            for line in text.splitlines(keepends=True):
                if not line.endswith("\n"):
                    break  # still being written
                word, _, number = line.strip().partition(" ")
                if not word.isidentifier() or not number.isdigit():
                    raise ConfigError(f"the {self.label} bench target wrote {line.strip()[:100]!r}")
                ports[word] = int(number)
            if wanted <= ports.keys():
                return ports
            self.check_alive()
            time.sleep(0.02)
        raise self._too_slow()

    def _wait_until_answering(self, path: str, deadline: float) -> None:
        status: int | str = "no answer"
        while time.monotonic() < deadline:
            self.check_alive()
            connection = http.client.HTTPConnection(self.host, self.port, timeout=2.0)
            try:
                connection.request("GET", path)
                response = connection.getresponse()
                response.read()
                status = response.status
            except OSError as exc:
                status = type(exc).__name__
            finally:
                connection.close()
            if status == 200:
                return
            time.sleep(0.05)
        raise self._too_slow(f"; GET {path} gave {status}")

    def _too_slow(self, detail: str = "") -> ConfigError:
        tail = self.stderr_tail()
        return ConfigError(
            f"the {self.label} bench target did not start within {self.start_timeout:g} s{detail}"
            + (f": {tail}" if tail else "")
        )

    def cpu_seconds(self) -> float | None:
        """User plus system CPU time the process has used so far; None off Linux.

        The lab reads it around a measured run: CPU per request is what a
        busy neighbour on the machine changes least.
        """
        return process_cpu_seconds(self.pid)

    def stderr_tail(self, lines: int = 3) -> str:
        """The last lines the process wrote on stderr, joined into one line."""
        if self._dir is None:
            return ""
        with contextlib.suppress(OSError):
            text = (Path(self._dir.name) / "stderr").read_text(encoding="utf-8", errors="replace")
            tail = [line.strip() for line in text.strip().splitlines() if line.strip()][-lines:]
            return " / ".join(tail)[-500:]
        return ""


def process_cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time process ``pid`` has used so far; None off Linux."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
        # After the command name in parentheses: state is field 3, utime 14, stime 15.
        fields = stat.rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
