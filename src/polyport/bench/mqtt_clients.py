"""The MQTT clients of ``polyport bench mqtt``: processes of the lab, one role each.

    python -m polyport.bench.mqtt_clients '{"role": "sub", …}'

Each is a raw-socket MQTT 5 client on uvloop — packets written with
polyport's own codec (:mod:`polyport.edges.mqtt.codec`), received packets cut
by a loop of its own that reads only what it needs — because paho-mqtt spends
tens of microseconds of Python per message, and a load generator as slow as
the broker measures itself. The same clients measure polyport and Mosquitto.

* ``sub``: subscribes to ``topic`` at ``qos``, reports ``ready`` after the
  SUBACK, then counts PUBLISHes (acknowledging each at QoS 1, a batch of
  PUBACKs per read) until ``expected`` arrived, ``quiet`` seconds passed
  without one, or the lab says ``stop``; each payload's ``"ts"`` (the
  publisher's ``time.monotonic_ns()``, system-wide on Linux) gives its
  latency. Reports ``done``.
* ``pub``: connects, reports ``ready``, and on the lab's ``go START_NS``
  publishes ``count`` ticks on ``topic`` at ``qos`` from that instant: back
  to back (``rate`` 0: as fast as the socket takes them, at QoS 1
  ``in_flight`` awaiting their PUBACK at once, at most the server's Receive
  Maximum), or at ``rate`` per second through the cluster bench's
  pacer. Ends with a PINGREQ whose PINGRESP says the server read everything.
  Reports ``done``.
* ``idle``: opens ``count`` connections, ``batch`` CONNECTs at a time, each
  with a keep-alive of ``keep_alive`` s; reports ``progress`` and ``ready``,
  holds them until ``stop``, reports ``done``.

Every role reports its own CPU seconds, so the lab can tell a client that was
the bottleneck.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import resource
import struct
import sys
import time
from array import array
from collections.abc import Callable
from typing import Any, cast

import orjson

from polyport.bench.clients import LabCommands, report
from polyport.bench.cluster_ticks import pace
from polyport.bench.pyload import percentile
from polyport.bench.realtime_clients import raise_open_files_limit
from polyport.edges.mqtt.codec import RECEIVE_MAXIMUM, encode_publish, frame, properties, text

V5 = 5
TS = re.compile(rb'"ts":(\d+)')
PINGREQ = b"\xc0\x00"
#: Packets joined into one write by a back-to-back publisher.
BATCH = 64
#: Bytes buffered in the transport before a publisher waits for it to drain.
HIGH_WATER = 256 * 1024


def connect_packet(client_id: str, keep_alive: int, receive_maximum: int = 0) -> bytes:
    """An MQTT 5 CONNECT with Clean Start, anonymous; Receive Maximum when given."""
    props: list[tuple[int, object]] = (
        [(RECEIVE_MAXIMUM, receive_maximum)] if receive_maximum else []
    )
    body = text("MQTT") + bytes((V5, 0x02)) + struct.pack("!H", keep_alive)
    return frame(0x10, body + properties(props) + text(client_id))


def subscribe_packet(topic: str, qos: int) -> bytes:
    """SUBSCRIBE to one filter at ``qos``, packet id 1, no properties."""
    return frame(0x82, struct.pack("!H", 1) + b"\x00" + text(topic) + bytes((qos,)))


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class MqttClient(asyncio.Protocol):
    """One connection: cuts what arrives into packets and hands each to its handler."""

    def __init__(self, on_publish: Callable[[int, int, bytes], None] | None = None) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.on_publish = on_publish
        loop = asyncio.get_running_loop()
        self.connack: asyncio.Future[bytes] = loop.create_future()
        self.suback: asyncio.Future[bytes] = loop.create_future()
        self.pong: asyncio.Future[None] | None = None
        self.closed: asyncio.Future[str] = loop.create_future()
        self.on_puback: Callable[[int, int], None] | None = None
        self._drained: asyncio.Future[None] | None = None
        #: PUBACKs owed, written once per read.
        self.acks = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport, but act as one.
        self.transport = cast("asyncio.Transport", transport)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        size = len(buffer)
        pos = 0
        while size - pos >= 2:
            first = buffer[pos]
            length = 0
            shift = 0
            index = pos + 1
            while index < size:
                byte = buffer[index]
                length |= (byte & 0x7F) << shift
                index += 1
                if not byte & 0x80:
                    break
                shift += 7
            else:
                break
            end = index + length
            if end > size:
                break
            kind = first >> 4
            if kind == 3:
                self._publish(first, buffer, index, end)
            elif kind == 4:
                if self.on_puback is not None:
                    reason = buffer[index + 2] if length > 2 else 0
                    self.on_puback(struct.unpack_from("!H", buffer, index)[0], reason)
            elif kind == 2:
                if not self.connack.done():
                    self.connack.set_result(buffer[index:end])
            elif kind == 9:
                if not self.suback.done():
                    self.suback.set_result(buffer[index:end])
            elif kind == 13:
                if self.pong is not None and not self.pong.done():
                    self.pong.set_result(None)
            elif kind == 14:
                reason = buffer[index] if length else 0
                self._close(f"DISCONNECT 0x{reason:02X} from the server")
            pos = end
        self.buffer = buffer[pos:]
        if self.acks and self.transport is not None:
            self.transport.write(bytes(self.acks))
            self.acks.clear()

    def _publish(self, first: int, buffer: bytes, index: int, end: int) -> None:
        qos = (first >> 1) & 3
        topic_end = index + 2 + ((buffer[index] << 8) | buffer[index + 1])
        if qos:
            self.acks += b"\x40\x02" + buffer[topic_end : topic_end + 2]
            topic_end += 2
        # Properties (MQTT 5): a variable byte integer of their length, then them.
        length = shift = 0
        while True:
            byte = buffer[topic_end]
            topic_end += 1
            length |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
            shift += 7
        if self.on_publish is not None:
            self.on_publish(first, qos, buffer[topic_end + length : end])

    def pause_writing(self) -> None:
        if self._drained is None:
            self._drained = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)

    async def drain(self) -> None:
        if self._drained is not None:
            await self._drained

    def connection_lost(self, exc: Exception | None) -> None:
        self._close(f"connection lost: {exc}" if exc else "connection closed by the server")
        self.resume_writing()

    def _close(self, why: str) -> None:
        if not self.closed.done():
            self.closed.set_result(why)

    async def ping(self) -> None:
        """PINGREQ, and wait for PINGRESP: the server has read everything sent before."""
        assert self.transport is not None
        self.pong = asyncio.get_running_loop().create_future()
        self.transport.write(PINGREQ)
        await self.pong


async def dial(
    config: dict[str, Any],
    client_id: str,
    on_publish: Callable[[int, int, bytes], None] | None = None,
    *,
    keep_alive: int = 60,
    receive_maximum: int = 0,
) -> tuple[MqttClient, int]:
    """A connection past its CONNACK, and the server's Receive Maximum (65,535 unsaid)."""
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(
        lambda: MqttClient(on_publish), config["host"], int(config["port"])
    )
    assert client.transport is not None
    client.transport.write(connect_packet(client_id, keep_alive, receive_maximum))
    try:
        async with asyncio.timeout(float(config.get("timeout", 10.0))):
            body = await client.connack
    except TimeoutError:
        client.transport.close()
        raise
    if len(body) < 2 or body[1] != 0:
        client.transport.close()
        raise ConnectionError(f"CONNACK refused: 0x{body[1] if len(body) > 1 else 0:02X}")
    return client, receive_maximum_of(body)


#: The size of each CONNACK property's value: bytes, or -1 a string or binary (length
#: first), -2 a string pair.
_CONNACK_PROPERTY_SIZES = {
    0x11: 4, 0x27: 4, 0x13: 2, 0x21: 2, 0x22: 2, 0x24: 1, 0x25: 1, 0x28: 1, 0x29: 1,
    0x2A: 1, 0x12: -1, 0x15: -1, 0x16: -1, 0x1A: -1, 0x1C: -1, 0x1F: -1, 0x26: -2,
}  # fmt: skip


def receive_maximum_of(connack: bytes) -> int:
    """The Receive Maximum a CONNACK body announces (65,535 when it says none)."""
    pos, length, shift = 2, 0, 0
    while pos < len(connack):
        byte = connack[pos]
        pos += 1
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    end = min(len(connack), pos + length)
    while pos < end:
        key = connack[pos]
        size = _CONNACK_PROPERTY_SIZES.get(key)
        if size is None:
            break  # a property this walker does not know: stop, keep the default
        if key == RECEIVE_MAXIMUM:
            return int(struct.unpack_from("!H", connack, pos + 1)[0])
        pos += 1
        for _ in range(-size if size < 0 else 0):
            pos += 2 + struct.unpack_from("!H", connack, pos)[0]
        pos += max(0, size)
    return 65535


# -- sub ---------------------------------------------------------------------------------


async def subscriber(config: dict[str, Any], commands: LabCommands) -> None:
    expected = int(config["expected"])
    quiet = float(config.get("quiet", 5.0))
    latencies = array("q")
    got = 0
    first_ns = last_ns = 0
    finished = asyncio.get_running_loop().create_future()

    def on_publish(first: int, qos: int, payload: bytes) -> None:
        nonlocal got, first_ns, last_ns
        now = time.monotonic_ns()
        if first & 1:  # RETAIN: an earlier run's last message, not this one's
            return
        got += 1
        if not first_ns:
            first_ns = now
        last_ns = now
        found = TS.search(payload)
        if found:
            latencies.append(now - int(found[1]))
        if got >= expected and not finished.done():
            finished.set_result(None)

    client, _ = await dial(config, config["client_id"], on_publish, receive_maximum=64)
    assert client.transport is not None
    client.transport.write(subscribe_packet(config["topic"], int(config["qos"])))
    async with asyncio.timeout(10.0):
        granted = await client.suback
    if granted[-1] >= 0x80:
        raise ConnectionError(f"SUBACK refused: 0x{granted[-1]:02X}")
    report("ready")
    cpu = cpu_seconds()
    seen = -1
    while True:
        await asyncio.wait(
            [finished, commands.stopped, client.closed],
            timeout=quiet,
            return_when=asyncio.FIRST_COMPLETED,
        )
        if finished.done():
            why = "all received"
        elif client.closed.done():
            why = client.closed.result()
        elif commands.stopped.done():
            why = "stopped by the lab"
        elif seen == got and got:
            why = f"nothing for {quiet:g} s"
        else:
            seen = got
            continue
        break
    client.transport.close()
    ordered = sorted(ns / 1e6 for ns in latencies)
    report(
        "done",
        received=got,
        first_ns=first_ns,
        last_ns=last_ns,
        ended=why,
        cpu_seconds=cpu_seconds() - cpu,
        latency_p50_ms=percentile(ordered, 0.50),
        latency_p99_ms=percentile(ordered, 0.99),
        latency_samples=len(ordered),
    )


# -- pub ---------------------------------------------------------------------------------


def tick(p: int, seq: int, pad: str) -> bytes:
    """A tick's JSON: publisher, number, publish clock, padding (the topic names the run)."""
    return orjson.dumps({"p": p, "seq": seq, "ts": time.monotonic_ns(), "pad": pad})


async def publisher(config: dict[str, Any], go: asyncio.Future[int]) -> None:
    qos, count, rate = int(config["qos"]), int(config["count"]), float(config.get("rate", 0))
    p, pad = int(config["p"]), "x" * int(config.get("pad", 0))
    topic = text(config["topic"])
    client, receive_maximum = await dial(config, config["client_id"])
    assert client.transport is not None
    transport = client.transport
    window = max(1, min(int(config.get("in_flight", 64)), receive_maximum))
    in_flight = 0
    refused = 0
    room = asyncio.Event()
    waiting: dict[int, asyncio.Future[int]] = {}

    def on_puback(packet_id: int, reason: int) -> None:
        nonlocal in_flight, refused
        in_flight -= 1
        if reason >= 0x80:
            refused += 1
        answer = waiting.pop(packet_id, None)
        if answer is not None and not answer.done():
            answer.set_result(reason)
        room.set()

    client.on_puback = on_puback

    def packet(seq: int) -> bytes:
        packet_id = seq % 65535 + 1 if qos else None
        return encode_publish(topic, b"\x00" + tick(p, seq, pad), qos=qos, packet_id=packet_id)

    report("ready")
    delay = await go - time.monotonic_ns()
    if delay > 0:
        await asyncio.sleep(delay / 1e9)
    cpu = cpu_seconds()
    first_ns = time.monotonic_ns()
    result: dict[str, Any] = {}
    if rate:
        loop = asyncio.get_running_loop()

        async def send(seq: int, ts: int) -> None:
            nonlocal in_flight
            if not qos:
                transport.write(packet(seq))
                return
            answer: asyncio.Future[int] = loop.create_future()
            waiting[seq % 65535 + 1] = answer
            in_flight += 1
            transport.write(packet(seq))
            if await answer >= 0x80:
                raise ConnectionError("PUBACK with a failure reason")

        paced = await pace(send, first=0, count=count, rate=rate, start_ns=first_ns)
        result = {"behind_ms": paced.behind_ms, "errors": paced.errors}
    else:
        seq = 0
        while seq < count and not client.closed.done():
            if qos:
                while in_flight >= window and not client.closed.done():
                    room.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(1.0):
                            await room.wait()
                n = min(window - in_flight, count - seq)
            else:
                n = min(BATCH, count - seq)
            transport.write(b"".join(packet(s) for s in range(seq, seq + n)))
            in_flight += n if qos else 0
            seq += n
            if transport.get_write_buffer_size() > HIGH_WATER:
                await client.drain()
            elif not qos and seq % (BATCH * 16) == 0:
                await asyncio.sleep(0)  # let acknowledgements and pongs in
        while qos and in_flight > 0 and not client.closed.done():
            room.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await room.wait()
    written_ns = time.monotonic_ns()
    ended = "sent"
    if client.closed.done():
        ended = client.closed.result()
    else:
        try:
            async with asyncio.timeout(float(config.get("timeout", 60.0))):
                await client.ping()
        except TimeoutError:
            ended = "no PINGRESP"
    acked_ns = time.monotonic_ns()
    transport.write(b"\xe0\x00")  # DISCONNECT, normal
    transport.close()
    report(
        "done",
        published=count,
        refused=refused,
        first_ns=first_ns,
        written_ns=written_ns,
        acked_ns=acked_ns,
        ended=ended,
        cpu_seconds=cpu_seconds() - cpu,
        **result,
    )


# -- idle --------------------------------------------------------------------------------


async def idle(config: dict[str, Any], commands: LabCommands) -> None:
    count, batch = int(config["count"]), int(config.get("batch", 200))
    keep_alive = int(config.get("keep_alive", 300))
    prefix = config["client_id"]
    clients: list[MqttClient] = []
    failed = 0
    first_error: str | None = None
    started = time.monotonic()
    for offset in range(0, count, batch):
        tried = range(offset, min(count, offset + batch))
        opened = await asyncio.gather(
            *(dial(config, f"{prefix}-{i}", keep_alive=keep_alive) for i in tried),
            return_exceptions=True,
        )
        for one in opened:
            if isinstance(one, BaseException):
                failed += 1
                first_error = first_error or f"{type(one).__name__}: {one}"[:200]
            else:
                clients.append(one[0])
        report("progress", open=len(clients), failed=failed)
        if commands.stopped.done():
            break
    report(
        "ready",
        open=len(clients),
        failed=failed,
        error=first_error,
        seconds=time.monotonic() - started,
    )
    await commands.stopped
    dropped = sum(1 for c in clients if c.closed.done())
    for client in clients:
        if client.transport is not None:
            client.transport.close()
    report("done", open=len(clients), dropped=dropped)


# -- the process -------------------------------------------------------------------------


async def main(config: dict[str, Any]) -> None:
    go: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def handle(words: list[str]) -> None:
        if words[0] == "go" and not go.done():
            go.set_result(int(words[1]))

    commands = LabCommands(handle)
    await commands.start()
    try:
        role = config["role"]
        if role == "sub":
            await subscriber(config, commands)
        elif role == "pub":
            await publisher(config, go)
        elif role == "idle":
            await idle(config, commands)
        else:
            report("error", reason=f"unknown role {role!r}")
    except (OSError, ConnectionError, TimeoutError) as exc:
        report("error", reason=f"{config.get('role')}: {type(exc).__name__}: {exc}"[:300])
    finally:
        commands.close()


def run(argument: str) -> None:
    raise_open_files_limit()
    config = json.loads(argument)
    try:
        import uvloop
    except ImportError:
        asyncio.run(main(config))
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main(config))


if __name__ == "__main__":
    run(sys.argv[1])
