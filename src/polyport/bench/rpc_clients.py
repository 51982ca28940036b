"""The gRPC client of the RPC bench, as a process of its own.

    python -m polyport.bench.rpc_clients '{"mode": "unary", ...}'

It reports to the lab in JSON lines on stdout, each with an ``event``:
``probed`` (bytes on the wire per call or per event, counted through a
:class:`~polyport.bench.wire.CountingProxy`), ``measuring`` (the measured
window starts: the lab reads the server's CPU time), ``done`` (the window
ended, with the figures), or ``error`` (with a one-line ``reason``). Messages
travel as raw bytes both ways (no serialiser), so the client does the same
work for every target.

* **unary**: one answer is checked and the bytes of a call are counted with
  grpc.aio (the client a user would run); then ``concurrency`` calls in flight
  on one HTTP/2 connection (:class:`~polyport.bench.grpcload.UnaryLoad`), each
  replaced as soon as its answer arrives, for ``warmup`` and then ``seconds``
  seconds; latency is timed per call (nearest-rank p50/p99).
* **stream**: one subscriber reading ``count`` events (or items) as they come:
  ``events`` and ``grpcio-events`` subscribe and then have the target publish
  ``count`` ticks back to back (``Blast``; polyport's ``events`` in batches of
  :data:`BLAST_BATCH` with ``publish_many``): events/s = count / (last arrival -
  first publish, read from the first tick's ``ts``, ``time.monotonic_ns()``:
  system-wide on Linux); ``replay`` publishes first and then reads it all from
  the log (``after: "earliest"``), timed from the subscribing call to the last
  event; ``contract`` and ``grpcio-contract`` call the server stream
  ``StreamUsers(count)``, timed from the call to the last item.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson

from polyport.bench.grpcload import StreamReader, UnaryLoad
from polyport.bench.pyload import percentile
from polyport.bench.wire import CountingProxy

HOST = "127.0.0.1"
POLYPORT = "/polyport.bench.v1.BenchService"
PLAIN = "/plainbench.v1.UserService"
SUBSCRIBE = "/polyport.events.v1.Events/Subscribe"
#: Per stream kind: the service whose Blast / StreamUsers it calls, and how it subscribes.
STREAMS = {
    "events": (POLYPORT, SUBSCRIBE),
    "replay": (POLYPORT, SUBSCRIBE),
    "contract": (POLYPORT, None),
    "grpcio-events": (PLAIN, f"{PLAIN}/Subscribe"),
    "grpcio-contract": (PLAIN, None),
}
#: Ticks carry this much padding: an event of about 100 bytes of JSON, as the push benches.
TICK_PAD = 48
#: The live ``events`` stream's ``Blast`` publishes its ticks this many at a time
#: (``publish_many``); the replay's publishes them one by one.
BLAST_BATCH = 100


def field(number: int, value: int | str) -> bytes:
    """One protobuf field: a varint (``int``) or a length-delimited string (``str``)."""
    if isinstance(value, int):
        return varint(number << 3) + varint(value)
    data = value.encode()
    return varint(number << 3 | 2) + varint(len(data)) + data


def varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def report(event: str, **figures: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **figures}) + "\n")
    sys.stdout.flush()


class Refused(Exception):
    """The target did not answer as expected: the reason, in one line."""


# -- unary ------------------------------------------------------------------------------------


def _check(answer: bytes, expect: list[bytes], refuse: list[bytes]) -> None:
    missing = [e for e in expect if e not in answer]
    extra = [r for r in refuse if r in answer]
    if missing or extra:
        raise Refused(f"unexpected answer {answer[:120]!r}")


async def unary(config: dict[str, Any]) -> None:
    import grpc

    port, path = config["port"], config["path"]
    request = bytes.fromhex(config["request"])
    expect = [bytes.fromhex(e) for e in config["expect"]]
    refuse = [bytes.fromhex(r) for r in config["refuse"]]
    async with grpc.aio.insecure_channel(f"{HOST}:{port}") as channel:
        call = channel.unary_unary(path)
        _check(await call(request, timeout=10), expect, refuse)

    probe = CountingProxy(HOST, port)
    try:
        async with grpc.aio.insecure_channel(f"{HOST}:{await probe.start()}") as channel:
            call = channel.unary_unary(path)
            answer = await call(request, timeout=10)  # the connection, settings, HPACK warm
            calls = config["probe_calls"]
            sent, received = probe.sent, probe.received
            for _ in range(calls):
                answer = await call(request, timeout=10)
            report(
                "probed",
                request=(probe.sent - sent) / calls,
                response=(probe.received - received) / calls,
                request_payload=len(request),
                response_payload=len(answer),
            )
    finally:
        await probe.close()

    loop = asyncio.get_running_loop()
    _, load = await loop.create_connection(
        lambda: UnaryLoad(f"{HOST}:{port}", path, request, config["concurrency"]), HOST, port
    )
    await asyncio.sleep(config["warmup"])
    report("measuring")
    load.measuring, started, cpu = True, time.perf_counter(), time.process_time()
    await asyncio.sleep(config["seconds"])
    load.measuring = False
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    load.stop()
    await asyncio.wait_for(load.closed, 30)
    if load.error is not None:
        raise Refused(f"the connection failed: {load.error}")
    latencies = sorted(load.latencies)
    report(
        "done",
        calls=load.calls,
        errors=load.errors,
        seconds=elapsed,
        p50_ms=percentile(latencies, 0.50) * 1000,
        p99_ms=percentile(latencies, 0.99) * 1000,
        client_cpu_share=cpu / elapsed,
    )


# -- streams ----------------------------------------------------------------------------------


def _counter(kind: str) -> Callable[[bytes], tuple[int, int | None]]:
    """bytes of one stream message → (events in it, the publish time of tick 0 if there)."""
    if kind in ("events", "replay"):
        from google.protobuf import descriptor_pool, message_factory, timestamp_pb2

        from polyport.edges.grpc.events import PACKAGE, events_file

        pool = descriptor_pool.DescriptorPool()
        pool.AddSerializedFile(timestamp_pb2.DESCRIPTOR.serialized_pb)
        pool.Add(events_file())
        batch: Any = message_factory.GetMessageClass(
            pool.FindMessageTypeByName(f"{PACKAGE}.EventBatch")
        )

        def count_batch(raw: bytes) -> tuple[int, int | None]:
            events = batch.FromString(raw).events
            first = None
            if events and events[0].offset == 1:
                first = orjson.loads(events[0].data)["ts"]
            return len(events), first

        return count_batch
    if kind == "grpcio-events":
        from polyport.bench.rpc_apps import plain_stubs

        tick: Any = plain_stubs()[0].Tick

        def count_tick(raw: bytes) -> tuple[int, int | None]:
            if raw[:1] != b"\x0a":  # no run: the opening "subscribed" tick
                return 0, None
            parsed = tick.FromString(raw)
            return 1, parsed.ts if parsed.seq == 0 else None

        return count_tick
    return lambda raw: (1, None)  # contract: one item per message


async def _stream(
    port: int, kind: str, run: str, count: int, blaster: Any, *, measured: bool = False
) -> dict[str, float | int]:
    """One stream of ``count`` events from ``port``, publishing via ``blaster``; its figures.

    The measured one reports ``measuring`` when its window starts.
    """
    loop = asyncio.get_running_loop()
    service, subscribe = STREAMS[kind]
    count_message = _counter(kind)
    blast = blaster.unary_unary(f"{service}/Blast")
    blast_request = field(1, run) + field(2, count) + field(3, TICK_PAD)
    if kind == "events":
        blast_request += field(4, BLAST_BATCH)
    opened, finished = loop.create_future(), loop.create_future()
    received = messages = payload = 0
    first_ts: int | None = None
    last_ns = 0

    def on_message(raw: bytes) -> None:
        nonlocal received, messages, payload, first_ts, last_ns
        if not opened.done():
            opened.set_result(None)
        got, first = count_message(raw)
        if not got:
            return  # the opening message of a subscription
        messages += 1
        payload += len(raw) + 5  # the gRPC message prefix: flag and length
        received += got
        if first is not None:
            first_ts = first
        if received >= count and not finished.done():
            last_ns = time.monotonic_ns()
            finished.set_result(None)

    def start() -> None:
        if measured:
            report("measuring")

    if subscribe is None:
        path, request = f"{service}/StreamUsers", field(1, count)
    else:
        path = subscribe
        request = field(1, f"bench/{run}") + (field(2, "earliest") if kind == "replay" else b"")
    if kind == "replay":
        await blast(blast_request, timeout=600)
    live = subscribe is not None and kind != "replay"
    if not live:
        start()
    started_ns = time.monotonic_ns()
    _, reader = await loop.create_connection(
        lambda: StreamReader(f"{HOST}:{port}", path, request, on_message), HOST, port
    )
    publishing: asyncio.Future[Any] | None = None
    try:
        if live:
            await asyncio.wait_for(opened, 30)  # the opening message: subscribed from here on
            start()
            publishing = asyncio.ensure_future(blast(blast_request, timeout=600))
        cpu = time.process_time()
        await asyncio.wait({finished, reader.ended}, return_when=asyncio.FIRST_COMPLETED)
        cpu = time.process_time() - cpu
        if not finished.done():
            raise Refused(f"the stream ended after {received:,} of {count:,} events")
        if publishing is not None:
            await publishing
    finally:
        reader.close()
    # Live: from tick 0's publication. Replay and items: from the call (the replay's
    # ticks were published before it, and that time is not the stream's).
    began = first_ts if live and first_ts is not None else started_ns
    seconds = (last_ns - began) / 1e9
    return {
        "events": received,
        "messages": messages,
        "seconds": seconds,
        "events_per_second": received / seconds,
        "events_per_message": received / max(1, messages),
        "payload_per_event": payload / max(1, received),
        "client_cpu_share": cpu / seconds,
    }


async def stream(config: dict[str, Any]) -> None:
    import grpc

    port, kind = config["port"], config["kind"]
    async with grpc.aio.insecure_channel(f"{HOST}:{port}") as blaster:
        if config["warmup_count"]:
            await _stream(port, kind, f"{kind}-warm", config["warmup_count"], blaster)
        probe = CountingProxy(HOST, port)
        try:
            count = config["probe_count"]
            await _stream(await probe.start(), kind, f"{kind}-probe", count, blaster)
            report("probed", request=probe.sent / count, response=probe.received / count)
        finally:
            await probe.close()
        figures = await _stream(port, kind, f"{kind}-run", config["count"], blaster, measured=True)
    report("done", **figures)


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        sys.exit("usage: python -m polyport.bench.rpc_clients CONFIG_JSON")
    config = json.loads(argv[0])
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        try:
            runner.run(unary(config) if config["mode"] == "unary" else stream(config))
        except Refused as exc:
            report("error", reason=str(exc))
        except Exception as exc:  # any failure is the lab's to report, in one line
            report("error", reason=f"{type(exc).__name__}: {exc}"[:300])


if __name__ == "__main__":
    main(sys.argv[1:])
