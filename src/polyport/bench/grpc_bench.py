"""gRPC measurements: unary calls/s and events/s over a server stream, against plain grpcio.

    python -m polyport.bench.grpc_bench unary  [--duration 5] [--concurrency 64] [--rounds 3]
    python -m polyport.bench.grpc_bench events [--count 200000] [--rounds 3]

Each target runs in its own process (:mod:`polyport.bench.grpc_apps`), the
client in another, all on loopback; rounds are interleaved and each target
reports its median, and the ratio to the plain servicer of the same round.

* **unary**: ``GetUser(id=42)`` with ``concurrency`` calls in flight from one
  grpc.aio client process (raw bytes both ways, so the client does the same
  work for every target), for ``duration`` seconds after a one-second warm-up.
* **events**: one subscriber; the target publishes ``count`` events back to
  back (``Blast``); events/s = count / (last arrival - first publish), the
  publish time read from each tick's ``ts`` (``time.monotonic_ns()``, a
  system-wide clock on Linux).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

HOST = "127.0.0.1"
GET_USER = {
    "polyport": "/polyport.bench.v1.BenchService/GetUser",
    "polyport-asyncio": "/polyport.bench.v1.BenchService/GetUser",
    "polyport-sqlite": "/polyport.bench.v1.BenchService/GetUser",
    "plain": "/plainbench.v1.UserService/GetUser",
}
BLAST = {
    "polyport": "/polyport.bench.v1.BenchService/Blast",
    "plain": "/plainbench.v1.UserService/Blast",
}
SUBSCRIBE = {
    "polyport": "/polyport.events.v1.Events/Subscribe",
    "plain": "/plainbench.v1.UserService/Subscribe",
}
GET_USER_42 = b"\x08\x2a"  # GetUserRequest{id: 42} in both schemas


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def target(name: str) -> Iterator[tuple[int, int]]:
    """Start a target server process; yield its gRPC port and pid; stop it."""
    process = subprocess.Popen(
        [sys.executable, "-m", "polyport.bench.grpc_apps", name],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        port = None
        deadline = time.monotonic() + 60
        while port is None and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                raise RuntimeError(f"target {name} exited before listening")
            if line.startswith("grpc "):
                port = int(line.split()[1])
        if port is None:
            raise RuntimeError(f"target {name} did not start")
        yield port, process.pid
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def client(*args: str) -> dict[str, Any]:
    """Run a client in its own process; its last line is a JSON result."""
    output = subprocess.run(
        [sys.executable, "-m", "polyport.bench.grpc_bench", "client", *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])  # type: ignore[no-any-return]


# -- the client side ------------------------------------------------------------------------


async def unary_client(port: int, path: str, concurrency: int, duration: float) -> dict[str, Any]:
    import grpc

    async with grpc.aio.insecure_channel(f"{HOST}:{port}") as channel:
        call = channel.unary_unary(path)
        assert await call(GET_USER_42)
        latencies: list[float] = []
        total = 0
        measuring = False
        stop = time.perf_counter() + 1.0 + duration
        started = 0.0

        async def worker() -> None:
            nonlocal total
            while True:
                begin = time.perf_counter()
                if begin >= stop:
                    return
                await call(GET_USER_42)
                total += 1
                if measuring:
                    latencies.append(time.perf_counter() - begin)

        workers = [asyncio.ensure_future(worker()) for _ in range(concurrency)]
        await asyncio.sleep(1.0)  # warm-up
        measuring, started = True, time.perf_counter()
        await asyncio.gather(*workers)
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "calls_per_s": len(latencies) / elapsed,
        "p50_us": latencies[len(latencies) // 2] * 1e6,
        "p99_us": latencies[int(len(latencies) * 0.99)] * 1e6,
        "calls": len(latencies),
        "total_calls": total + 1,
    }


def _event_counter(kind: str) -> Any:
    """bytes of one stream message → (events in it, ts of tick 0 or None)."""
    import orjson

    if kind == "polyport":
        from google.protobuf import (
            descriptor_pool,
            message_factory,
            timestamp_pb2,
        )

        from polyport.edges.grpc.events import PACKAGE, events_file

        pool = descriptor_pool.DescriptorPool()
        pool.AddSerializedFile(timestamp_pb2.DESCRIPTOR.serialized_pb)
        pool.Add(events_file())
        batch_class = message_factory.GetMessageClass(
            pool.FindMessageTypeByName(f"{PACKAGE}.EventBatch")
        )

        def count_batch(raw: bytes) -> tuple[int, int | None]:
            events = batch_class.FromString(raw).events
            first = None
            if events and events[0].offset == 1:
                first = orjson.loads(events[0].data)["ts"]
            return len(events), first

        return count_batch

    from polyport.bench.grpc_apps import plain_stubs

    pb2, _ = plain_stubs()

    def count_tick(raw: bytes) -> tuple[int, int | None]:
        tick = pb2.Tick.FromString(raw)
        if tick.seq < 0:
            return 0, None
        return 1, tick.ts if tick.seq == 0 else None

    return count_tick


async def events_client(
    port: int, kind: str, count: int, size: int, mode: str = "live"
) -> dict[str, Any]:
    """Events/s to one subscriber: ``live`` (publish → arrival) or ``replay`` (from history)."""
    import grpc

    count_message = _event_counter(kind)
    blast_request = b"\x08" + _varint(count) + b"\x10" + _varint(size)
    async with grpc.aio.insecure_channel(f"{HOST}:{port}") as channel:
        blast = channel.unary_unary(BLAST[kind])
        request = b"\x0a\x0bbench/ticks" if kind == "polyport" else b""
        blasting = None
        if mode == "replay":  # publish first, then read it all from the log
            await blast(blast_request, timeout=600)
            request += b"\x12\x08earliest"
        stream = channel.unary_stream(SUBSCRIBE[kind])(request)
        started = time.monotonic_ns()
        if mode == "live":
            await stream.read()  # the opening message: subscribed
            blasting = asyncio.ensure_future(blast(blast_request, timeout=600))
        received = messages = 0
        first_ts: int | None = None
        while received < count:
            raw = await stream.read()
            if raw is grpc.aio.EOF:
                raise RuntimeError("the stream ended early")
            got, first = count_message(raw)
            messages += 1
            received += got
            if first is not None:
                first_ts = first
        last = time.monotonic_ns()
        stream.cancel()
        if blasting is not None:
            await blasting
    assert first_ts is not None
    seconds = (last - (first_ts if mode == "live" else started)) / 1e9
    return {
        "events_per_s": count / seconds,
        "messages": messages,
        "events_per_message": count / max(1, messages),
        "seconds": seconds,
    }


# -- the lab side -----------------------------------------------------------------------------


def run_unary(
    duration: float, concurrency: int, rounds: int, targets: tuple[str, ...] = ("plain", "polyport")
) -> dict[str, list[dict[str, Any]]]:
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
    for _ in range(rounds):
        for name in targets:
            with target(name) as (port, pid):
                cpu = cpu_seconds(pid)
                figures = client(
                    "unary", str(port), GET_USER[name], str(concurrency), str(duration)
                )
                cpu = cpu_seconds(pid) - cpu
            figures["server_cpu_us_per_call"] = cpu / figures["total_calls"] * 1e6
            results[name].append(figures)
            print(
                f"  {name:16} {figures['calls_per_s']:>8,.0f} calls/s  "
                f"p50 {figures['p50_us']:,.0f} µs  p99 {figures['p99_us']:,.0f} µs  "
                f"server CPU {figures['server_cpu_us_per_call']:,.0f} µs/call",
                flush=True,
            )
    return results


def run_events(
    count: int, size: int, rounds: int, targets: tuple[str, ...] = ("plain", "polyport")
) -> dict[str, list[dict[str, Any]]]:
    """``polyport`` streams live; ``polyport-replay`` reads the same burst from history."""
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
    for _ in range(rounds):
        for name in targets:
            server = name.removesuffix("-replay")
            mode = "replay" if name.endswith("-replay") else "live"
            kind = "plain" if server == "plain" else "polyport"
            with target(server) as (port, _):
                figures = client("events", str(port), kind, str(count), str(size), mode)
            results[name].append(figures)
            print(
                f"  {name:16} {figures['events_per_s']:>10,.0f} events/s  "
                f"{figures['events_per_message']:,.1f} events/message",
                flush=True,
            )
    return results


def summary(results: dict[str, list[dict[str, Any]]], key: str) -> str:
    """Medians per target, and each one's ratio to the plain servicer."""
    medians = {name: statistics.median(r[key] for r in runs) for name, runs in results.items()}
    plain = medians.get("plain")
    parts = [
        f"{name} {value:,.0f}" + (f" ({value / plain:.2f}x)" if plain and name != "plain" else "")
        for name, value in medians.items()
    ]
    return f"median {key}: " + " · ".join(parts)


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "client":
        kind, *args = sys.argv[2:]
        if kind == "unary":
            port, path, concurrency, duration = args
            result = asyncio.run(unary_client(int(port), path, int(concurrency), float(duration)))
        else:
            port, name, count, size, mode = args
            result = asyncio.run(events_client(int(port), name, int(count), int(size), mode))
        print(json.dumps(result))
        return
    parser = argparse.ArgumentParser(prog="python -m polyport.bench.grpc_bench")
    parser.add_argument("bench", choices=["unary", "events"])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--targets",
        default=None,
        help="unary: plain,polyport[,polyport-asyncio]; events: plain,polyport,"
        "polyport-replay[,polyport-sqlite,polyport-sqlite-replay]",
    )
    options = parser.parse_args()
    if options.bench == "unary":
        targets = tuple((options.targets or "plain,polyport").split(","))
        results = run_unary(options.duration, options.concurrency, options.rounds, targets)
        print(summary(results, "calls_per_s"))
        print(summary(results, "server_cpu_us_per_call"))
    else:
        targets = tuple((options.targets or "plain,polyport,polyport-replay").split(","))
        results = run_events(options.count, options.size, options.rounds, targets)
        print(summary(results, "events_per_s"))


if __name__ == "__main__":
    main()
