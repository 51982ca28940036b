"""Prometheus metrics, kept in plain dicts and rendered in the text format.

Everything runs on one event loop, so counters need no locks; recording a
call is a couple of dict operations and a bisect, cheap enough for the hot path.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator

# Seconds: from 50 µs (a cached GET) to 10 s (a slow job).
BUCKETS = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class _Calls:
    """One (edge, method): calls by result code, and the latency histogram of all of them."""

    __slots__ = ("codes", "counts", "sum")

    def __init__(self) -> None:
        self.codes: dict[str, int] = {}
        self.counts = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0


def _escape(value: str) -> str:
    """Label values escape backslash, double quote and newline (the text format's rules)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(pairs: tuple[tuple[str, str], ...]) -> str:
    if not pairs:
        return ""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in pairs)
    return "{" + inner + "}"


class Metrics:
    """Call counts and latencies per (edge, method), plus named counters and gauges."""

    def __init__(self) -> None:
        self._calls: dict[tuple[str, str], _Calls] = {}
        self._counters: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
        self._gauges: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
        self._help: dict[str, str] = {}

    def observe_call(self, edge: str, method: str, code: str, seconds: float) -> None:
        calls = self._calls.get((edge, method))
        if calls is None:
            calls = self._calls[edge, method] = _Calls()
        codes = calls.codes
        codes[code] = codes.get(code, 0) + 1
        calls.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        calls.sum += seconds

    def inc(self, name: str, help: str, amount: float = 1.0, **labels: str) -> None:
        self._help.setdefault(name, help)
        series = self._counters.setdefault(name, {})
        key = tuple(sorted(labels.items()))
        series[key] = series.get(key, 0.0) + amount

    def set(self, name: str, help: str, value: float, **labels: str) -> None:
        self._help.setdefault(name, help)
        self._gauges.setdefault(name, {})[tuple(sorted(labels.items()))] = value

    def calls(self, edge: str, method: str, code: str = "OK") -> int:
        calls = self._calls.get((edge, method))
        return 0 if calls is None else calls.codes.get(code, 0)

    def render(self) -> bytes:
        return "".join(self._lines()).encode()

    def _lines(self) -> Iterator[str]:
        yield "# HELP polyport_calls_total Calls served, by edge, method and result code.\n"
        yield "# TYPE polyport_calls_total counter\n"
        by_code = sorted(
            ((edge, method, code), count)
            for (edge, method), calls in self._calls.items()
            for code, count in calls.codes.items()
        )
        for (edge, method, code), count in by_code:
            labels = _labels((("edge", edge), ("method", method), ("code", code)))
            yield f"polyport_calls_total{labels} {count}\n"
        yield "# HELP polyport_call_seconds Time spent serving calls, by edge and method.\n"
        yield "# TYPE polyport_call_seconds histogram\n"
        for (edge, method), calls in sorted(self._calls.items()):
            base = (("edge", edge), ("method", method))
            running = 0
            for bound, count in zip((*BUCKETS, float("inf")), calls.counts, strict=True):
                running += count
                le = "+Inf" if bound == float("inf") else repr(bound)
                yield f"polyport_call_seconds_bucket{_labels((*base, ('le', le)))} {running}\n"
            yield f"polyport_call_seconds_sum{_labels(base)} {calls.sum!r}\n"
            yield f"polyport_call_seconds_count{_labels(base)} {running}\n"
        for kind, table in (("counter", self._counters), ("gauge", self._gauges)):
            for name, series in sorted(table.items()):
                yield f"# HELP {name} {self._help.get(name, name)}\n"
                yield f"# TYPE {name} {kind}\n"
                for key, value in sorted(series.items()):
                    yield f"{name}{_labels(key)} {value!r}\n"
