"""HTTP load generators: ``wrk`` when installed, else the built-in Python one.

Both run as their own process, on loopback, with a fixed number of keep-alive
connections each keeping one request in flight. A generator knows its command
line and how to read its output; :func:`run_load` runs it and reports its
progress. Both send the same bytes for a call (:meth:`HttpCall.raw`): a
``GET``, or a ``POST`` with a body and headers (wrk: from a Lua script).
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from polyport.core.errors import ConfigError

GENERATORS = ("auto", "wrk", "python")


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What one measured run of a generator saw."""

    requests: int  # responses received in the window, errors included
    errors: int  # non-2xx answers, socket errors and timeouts
    seconds: float  # the measured window
    requests_per_second: float
    p50_ms: float
    p99_ms: float


@dataclass(frozen=True, slots=True)
class HttpCall:
    """One HTTP/1.1 request, as every generator sends it over and over."""

    method: str
    path: str
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)

    def raw(self, host: str, port: int) -> bytes:
        """The request's bytes on the wire — the same length wrk's ``wrk.format`` gives."""
        lines = [f"{self.method} {self.path} HTTP/1.1", f"Host: {host}:{port}"]
        lines += [f"{name}: {value}" for name, value in self.headers.items()]
        if self.body:
            lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + self.body

    @property
    def plain_get(self) -> bool:
        return self.method == "GET" and not self.body and not self.headers


class LoadGenerator(Protocol):
    """A load generator the lab can run against ``http://host:port``."""

    name: str
    version: str

    def seconds(self, wanted: float) -> float:
        """The run length the generator will really use for ``wanted`` seconds."""
        ...

    def command(
        self, host: str, port: int, call: HttpCall, connections: int, seconds: float, scratch: Path
    ) -> list[str]:
        """The command line of one run; any file it needs is written into ``scratch``."""
        ...

    def parse(self, stdout: str) -> LoadResult:
        """The figures of a finished run; :class:`ConfigError` when its output is unusable."""
        ...


class Wrk:
    """``wrk -t1 -cN -dSs --latency``: one thread is plenty for one server core."""

    name = "wrk"

    def __init__(self, executable: str) -> None:
        self.executable = executable
        # `wrk -v` prints its banner and exits non-zero; the first line is the version.
        probe = subprocess.run([executable, "-v"], capture_output=True, text=True, check=False)
        first = (probe.stdout or probe.stderr).strip().splitlines()
        self.version = first[0].split("Copyright")[0].strip() if first else "wrk"

    def seconds(self, wanted: float) -> float:
        return float(max(1, math.ceil(wanted - 1e-9)))  # wrk takes whole seconds only

    def command(
        self, host: str, port: int, call: HttpCall, connections: int, seconds: float, scratch: Path
    ) -> list[str]:
        script = []
        if not call.plain_get:
            path = scratch / "call.lua"
            path.write_text(wrk_script(call), encoding="utf-8")
            script = ["-s", str(path)]
        return [
            self.executable,
            "-t1",
            f"-c{connections}",
            f"-d{int(self.seconds(seconds))}s",
            "--latency",
            *script,
            f"http://{host}:{port}{call.path}",
        ]

    def parse(self, stdout: str) -> LoadResult:
        return parse_wrk(stdout)


class PythonLoad:
    """The built-in generator, :mod:`polyport.bench.pyload`."""

    name = "python"
    version = f"polyport.bench.pyload on Python {sys.version.split()[0]}"

    def seconds(self, wanted: float) -> float:
        return wanted

    def command(
        self, host: str, port: int, call: HttpCall, connections: int, seconds: float, scratch: Path
    ) -> list[str]:
        request = scratch / "request.http"
        request.write_bytes(call.raw(host, port))
        return [
            sys.executable,
            "-m",
            "polyport.bench.pyload",
            host,
            str(port),
            str(request),
            str(connections),
            repr(float(seconds)),
        ]

    def parse(self, stdout: str) -> LoadResult:
        try:
            data = json.loads(stdout.strip().splitlines()[-1])
            requests, seconds = int(data["requests"]), float(data["seconds"])
            return LoadResult(
                requests,
                int(data["errors"]),
                seconds,
                requests / seconds if seconds > 0 else 0.0,
                float(data["p50_ms"]),
                float(data["p99_ms"]),
            )
        except (IndexError, KeyError, TypeError, ValueError):
            raise ConfigError(
                f"the Python load generator printed no figures: {stdout[-200:]!r}"
            ) from None


def check_load_options(
    duration: float, warmup: float, connections: int, repeats: int, *, max_connections: int = 10_000
) -> None:
    """Refuse impossible load options with one line each (ConfigError)."""
    if duration <= 0:
        raise ConfigError(f"--duration must be positive, not {duration:g}")
    if warmup < 0:
        raise ConfigError(f"--warmup must be zero or more, not {warmup:g}")
    if not 1 <= connections <= max_connections:
        raise ConfigError(
            f"--connections must be between 1 and {max_connections}, not {connections}"
        )
    if repeats < 1:
        raise ConfigError(f"--repeats must be at least 1, not {repeats}")


def choose_generator(name: str) -> LoadGenerator:
    """``auto`` (wrk when on PATH, else Python), ``wrk`` or ``python``."""
    if name not in GENERATORS:
        raise ConfigError(f"unknown load generator {name!r}; choose one of {', '.join(GENERATORS)}")
    if name == "python":
        return PythonLoad()
    executable = shutil.which("wrk")
    if executable is not None:
        return Wrk(executable)
    if name == "wrk":
        raise ConfigError(
            "wrk was requested but is not installed (apt-get install wrk, brew install wrk); "
            "or use --generator python"
        )
    return PythonLoad()


def wrk_script(call: HttpCall) -> str:
    """A wrk Lua script sending ``call``: wrk builds the request once and repeats it."""
    text = call.body.decode()
    values = [call.method, text, *call.headers, *call.headers.values()]
    if any("]==]" in value for value in values):
        raise ValueError("the call cannot go into a Lua long string")
    lines = [f"wrk.method = [==[{call.method}]==]"]
    if call.body:
        lines.append(f"wrk.body = [==[{text}]==]")
    lines += [f"wrk.headers[ [==[{k}]==] ] = [==[{v}]==]" for k, v in call.headers.items()]
    return "\n".join(lines) + "\n"


#: How much longer than asked a generator may run before the lab gives up on it.
GRACE = 30.0


def run_load(
    load: LoadGenerator,
    host: str,
    port: int,
    call: HttpCall,
    connections: int,
    seconds: float,
    scratch: Path,
    *,
    label: str,
    tick: Callable[[float], None],
) -> LoadResult:
    """One generator run against ``host:port``; ``tick(elapsed)`` is called as it goes.

    :class:`ConfigError` when the generator cannot start, fails, or outruns
    ``seconds`` by more than :data:`GRACE`.
    """
    command = load.command(host, port, call, connections, seconds, scratch)
    try:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    except OSError as exc:
        raise ConfigError(f"cannot run the {load.name} load generator: {exc.strerror}") from None
    began = time.monotonic()
    with process:
        # The output is a few kilobytes, far below a pipe's buffer: polling is safe.
        while process.poll() is None:
            elapsed = time.monotonic() - began
            if elapsed > seconds + GRACE:
                process.kill()
                process.wait()
                raise ConfigError(
                    f"the {load.name} load generator did not finish a {seconds:g} s run "
                    f"against {label} within {seconds + GRACE:g} s"
                )
            tick(min(elapsed, seconds))
            time.sleep(0.1)
        stdout, stderr = process.communicate()
    if process.returncode != 0:
        tail = " / ".join(stderr.decode(errors="replace").strip().splitlines()[-3:])
        raise ConfigError(
            f"the {load.name} load generator failed against {label} "
            f"(status {process.returncode}): {tail[-300:] or 'no output'}"
        )
    return load.parse(stdout.decode(errors="replace"))


# -- reading wrk's report --------------------------------------------------------------

_TIME_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_DURATION = r"([\d.]+)(us|ms|s|m|h)"
_TOTAL = re.compile(rf"(\d+) requests in {_DURATION}")
_PERCENTILE = re.compile(rf"^\s*(50|99)(?:\.0+)?%\s+{_DURATION}\s*$", re.MULTILINE)
_SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
_RATE = re.compile(r"Requests/sec:\s+([\d.]+)")


def _ms(value: str, unit: str) -> float:
    return float(value) * _TIME_UNITS[unit]


def parse_wrk(stdout: str) -> LoadResult:
    """The figures of a ``wrk --latency`` report (total, window, errors, p50, p99)."""
    total = _TOTAL.search(stdout)
    percentiles = {m[1]: _ms(m[2], m[3]) for m in _PERCENTILE.finditer(stdout)}
    rate = _RATE.search(stdout)
    if total is None or rate is None or set(percentiles) != {"50", "99"}:
        tail = " / ".join(stdout.strip().splitlines()[-3:])
        raise ConfigError(f"cannot read wrk's report (was --latency given?): {tail[-200:]}")
    errors = 0
    socket_errors = _SOCKET_ERRORS.search(stdout)
    if socket_errors is not None:
        errors += sum(int(n) for n in socket_errors.groups())
    non_2xx = _NON_2XX.search(stdout)
    if non_2xx is not None:
        errors += int(non_2xx[1])
    return LoadResult(
        requests=int(total[1]),
        errors=errors,
        seconds=_ms(total[2], total[3]) / 1000,
        requests_per_second=float(rate[1]),
        p50_ms=percentiles["50"],
        p99_ms=percentiles["99"],
    )
