"""The SOAP bench: polyport's SOAP edge against Spyne, same operation, same run.

    python -m polyport.bench.soap_bench [--duration 10] [--warmup 2] [--connections 64]
                                        [--repeats 1]

Each target (:mod:`polyport.bench.soap_apps`) runs in its own process; ``wrk``
POSTs the same ``GetUser`` envelope over keep-alive connections, one request
in flight each (a Lua script sets the method, body and headers). Targets run
one after another, interleaved when repeated, and each reports its median run.
Prints one JSON object per target and the ratio polyport / Spyne.
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from polyport.bench.loadgen import LoadResult, parse_wrk
from polyport.bench.soap_apps import HEADERS, PATH, READY_PATH, REQUEST, TARGETS
from polyport.bench.targets import TargetServer
from polyport.core.errors import ConfigError


class SoapTarget(TargetServer):
    """A SOAP bench target: ready once its WSDL answers."""

    module = "polyport.bench.soap_apps"
    targets = TARGETS
    ready_path = READY_PATH


@dataclass(frozen=True, slots=True)
class SoapRun:
    target: str
    calls_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_us_per_call: float | None
    request_bytes: int
    response_bytes: int


def wrk_script(body: bytes, headers: dict[str, str]) -> str:
    """A wrk Lua script that POSTs ``body`` with ``headers``."""
    text = body.decode()
    if "]==]" in text:
        raise ValueError("the body cannot go into a Lua long string")
    lines = ['wrk.method = "POST"', f"wrk.body = [==[{text}]==]"]
    lines += [f"wrk.headers[{json.dumps(k)}] = [==[{v}]==]" for k, v in headers.items()]
    return "\n".join(lines) + "\n"


def answer(target: TargetServer) -> bytes:
    """One call, checked: the user's id and email must be in the answer."""
    connection = http.client.HTTPConnection(target.host, target.port, timeout=5)
    try:
        connection.request("POST", PATH, body=REQUEST, headers=HEADERS)
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    if response.status != 200 or b">42<" not in body or b"user42@example.com" not in body:
        raise ConfigError(f"{target.label} answered {response.status}: {body[:200]!r}")
    return body


def measure(
    target: TargetServer, script: Path, wrk: str, seconds: int, connections: int
) -> LoadResult:
    url = f"http://{target.host}:{target.port}{PATH}"
    command = [wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ConfigError(f"wrk failed: {done.stderr.strip()[-200:]}")
    return parse_wrk(done.stdout)


def run_soap_bench(
    *, duration: int = 10, warmup: int = 2, connections: int = 64, repeats: int = 1
) -> list[SoapRun]:
    """Measure every target; return each one's median run."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise ConfigError("the SOAP bench needs wrk (apt-get install wrk)")
    runs: dict[str, list[tuple[LoadResult, float | None, int]]] = {name: [] for name in TARGETS}
    with tempfile.TemporaryDirectory(prefix="polyport-soap-bench-") as folder:
        script = Path(folder) / "post.lua"
        script.write_text(wrk_script(REQUEST, HEADERS), encoding="utf-8")
        for _ in range(repeats):
            for name in TARGETS:
                with SoapTarget(name) as target:
                    size = len(answer(target))
                    if warmup > 0:
                        measure(target, script, wrk, warmup, connections)
                    before = target.cpu_seconds()
                    result = measure(target, script, wrk, duration, connections)
                    after = target.cpu_seconds()
                    cpu = None if before is None or after is None else after - before
                    runs[name].append((result, cpu, size))
    medians = []
    for name, results in runs.items():
        ordered = sorted(results, key=lambda r: r[0].requests_per_second)
        result, cpu, size = ordered[len(ordered) // 2]
        medians.append(
            SoapRun(
                target=TARGETS[name],
                calls_per_second=result.requests_per_second,
                p50_ms=result.p50_ms,
                p99_ms=result.p99_ms,
                errors=result.errors,
                cpu_us_per_call=(cpu / result.requests * 1e6) if cpu and result.requests else None,
                request_bytes=len(REQUEST),
                response_bytes=size,
            )
        )
    return medians


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m polyport.bench.soap_bench")
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=1)
    options = parser.parse_args(argv)
    try:
        results = run_soap_bench(
            duration=options.duration,
            warmup=options.warmup,
            connections=options.connections,
            repeats=options.repeats,
        )
    except ConfigError as exc:
        sys.exit(str(exc))
    for run in results:
        sys.stdout.write(json.dumps(asdict(run)) + "\n")
    polyport, spyne = results[0].calls_per_second, results[1].calls_per_second
    ratio = polyport / spyne if spyne else float("nan")
    sys.stdout.write(json.dumps({"polyport_over_spyne": round(ratio, 2)}) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
