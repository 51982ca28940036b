"""Load generators: ``wrk`` when installed, else the built-in Python one.

Both run as their own process, on loopback, with a fixed number of keep-alive
connections each keeping one request in flight. A generator here only knows
its command line and how to read its output; :mod:`polyport.bench.rest` runs
it and shows its progress.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
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


class LoadGenerator(Protocol):
    """A load generator the lab can run against ``http://host:port/path``."""

    name: str
    version: str

    def seconds(self, wanted: float) -> float:
        """The run length the generator will really use for ``wanted`` seconds."""
        ...

    def command(
        self, host: str, port: int, path: str, connections: int, seconds: float
    ) -> list[str]:
        """The command line of one run."""
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
        self, host: str, port: int, path: str, connections: int, seconds: float
    ) -> list[str]:
        return [
            self.executable,
            "-t1",
            f"-c{connections}",
            f"-d{int(self.seconds(seconds))}s",
            "--latency",
            f"http://{host}:{port}{path}",
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
        self, host: str, port: int, path: str, connections: int, seconds: float
    ) -> list[str]:
        return [
            sys.executable,
            "-m",
            "polyport.bench.pyload",
            host,
            str(port),
            path,
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
