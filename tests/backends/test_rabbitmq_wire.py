"""The RabbitMQ broker's pieces that need no server: names, delays, the message format,
the options of its URL and the missing extra."""

from __future__ import annotations

import datetime
import sys
import zlib

import pytest
from aiormq import spec
from aiormq.abc import DeliveredMessage
from pamqp.header import ContentHeader

from polyport.backends.rabbitmq import wire
from polyport.backends.rabbitmq.layout import LEVELS, Layout, delay_key, partition_of, ticks
from polyport.backends.rabbitmq.topology import bit_pattern
from polyport.brokers import build_broker
from polyport.core.broker import OutgoingMessage
from polyport.core.errors import ConfigError, MissingExtra


def delivered(
    body: bytes, properties: spec.Basic.Properties, *, redelivered: bool = False
) -> DeliveredMessage:
    return DeliveredMessage(
        delivery=spec.Basic.Deliver(
            consumer_tag="t", delivery_tag=1, redelivered=redelivered, routing_key="q"
        ),
        header=ContentHeader(properties=properties, body_size=len(body)),
        body=body,
        channel=None,  # type: ignore[arg-type]
    )


def test_delays_round_up_to_ticks_and_route_through_their_bits() -> None:
    """0.1 s ticks, never early; the routing key names each level's bit, highest first."""
    assert ticks(0) == 0 and ticks(-1) == 0
    assert ticks(0.01) == 1 and ticks(0.1) == 1 and ticks(1.0) == 10 and ticks(1.01) == 11
    assert ticks(30 * 86400) == 30 * 864000 < 1 << LEVELS
    key = delay_key(10)  # 8 + 2
    words = key.split(".")
    assert len(words) == LEVELS and words[-4:] == ["1", "0", "1", "0"]
    assert set(words[:-4]) == {"0"}
    # Level 3's pattern takes it (bit 3 set); level 2's lets it pass (bit 2 clear).
    assert bit_pattern(3, "1").split(".")[LEVELS - 1 - 3] == "1"
    assert bit_pattern(2, "0").split(".")[LEVELS - 1 - 2] == "0"


def test_names_and_partitions() -> None:
    layout = Layout("shop", "payments", 8)
    assert layout.main == "shop.payments" and layout.dead == "shop.payments.dead"
    assert layout.head(3) == "shop.payments.key.3.head"
    assert len(layout.durable_queues()) == 2 + 2 * 8 + LEVELS
    assert partition_of("order-7", 8) == zlib.crc32(b"order-7") % 8
    # The contract's keys "a" and "b" fall in different partitions of the default 8.
    assert partition_of("a", 8) != partition_of("b", 8)


def test_what_polyport_sends_and_reads_back() -> None:
    """Times as integer milliseconds (AMQP floats are single precision); ids checked."""
    message = OutgoingMessage(
        "o-1",
        b'{"n": 1}',
        {"content-type": "application/json", "type": "shop.q", "traceparent": "t"},
        key="k",
    )
    props = wire.outgoing(
        message, now=1_700_000_000.123, send="s1", prefix="shop", due=1_700_000_005.5
    )
    assert props.message_id == "o-1" and props.message_type == "shop.q"
    assert props.delivery_mode == 2 and props.content_type == "application/json"
    assert props.headers is not None
    assert props.headers[wire.SENT] == 1_700_000_000_123
    assert props.headers[wire.DUE] == 1_700_000_005_500
    assert props.headers["traceparent"] == "t"
    read = wire.read(delivered(b'{"n": 1}', props))
    assert read.id == "o-1" and read.key == "k" and read.send == "s1"
    assert read.sent == pytest.approx(1_700_000_000.123)
    assert read.headers == {
        "traceparent": "t",
        "content-type": "application/json",
        "type": "shop.q",
    }
    assert read.attempts == 0 and read.returns == 0 and read.error is None
    # An id longer than message_id holds (255 bytes) travels whole in a header.
    long = wire.outgoing(OutgoingMessage("é/" * 100, b"{}"), now=0, send="s", prefix="shop")
    assert long.message_id is not None and long.message_id.startswith("sha256:")
    assert wire.read(delivered(b"{}", long)).id == "é/" * 100
    copied = wire.copy(delivered(b"{}", long), wire.read(delivered(b"{}", long)), attempts=1)
    assert copied.message_id == long.message_id
    assert wire.read(delivered(b"{}", copied)).id == "é/" * 100


def test_a_call_is_amqps_request_and_reply() -> None:
    """reply-to and correlation-id are AMQP's properties: a polyport queue by its AMQP
    name, another client's queue as ``amqp:{name}``, both ways."""
    headers = {"reply-to": "replies-1", "correlation-id": "c1", "status": "ok"}
    props = wire.outgoing(OutgoingMessage("m", b"{}", headers), now=0, send="s", prefix="shop")
    assert props.reply_to == "shop.replies-1" and props.correlation_id == "c1"
    assert props.headers is not None and "reply-to" not in props.headers
    read = wire.read(delivered(b"{}", props), prefix="shop")
    assert read.headers["reply-to"] == "replies-1" and read.headers["correlation-id"] == "c1"
    assert read.headers["status"] == "ok"
    foreign = spec.Basic.Properties(reply_to="amq.gen-Xy", correlation_id="c2")
    assert wire.read(delivered(b"{}", foreign), prefix="shop").headers["reply-to"] == (
        "amqp:amq.gen-Xy"
    )
    assert wire.reply_address("shop", "amqp:amq.gen-Xy") == "amq.gen-Xy"
    assert wire.reply_address("shop", "replies-1") == "shop.replies-1"


def test_a_copy_counts_attempts_and_drops_rabbitmqs_headers() -> None:
    props = spec.Basic.Properties(
        message_id="m",
        headers={"x-delivery-count": 2, "x-death": [], "mine": "v", wire.SENT: 1000},
        user_id="someone",
        expiration="60000",
    )
    original = delivered(b"{}", props)
    read = wire.read(original)
    assert read.returns == 2
    copied = wire.copy(original, read, attempts=3, error="boom")
    assert copied.headers == {"mine": "v", wire.SENT: 1000, wire.ATTEMPTS: 3, wire.ERROR: "boom"}
    assert copied.user_id is None and copied.expiration is None
    again = wire.copy(delivered(b"{}", copied), read, attempts=0, error=None, sent=2.0)
    assert again.headers == {"mine": "v", wire.SENT: 2000}
    # A due time stays with the copies of a keyed message until it is replaced or dropped.
    due = wire.copy(original, read, attempts=0, due=5.0)
    assert due.headers is not None and due.headers[wire.DUE] == 5000
    kept = wire.copy(delivered(b"{}", due), read, attempts=0)
    assert kept.headers is not None and kept.headers[wire.DUE] == 5000
    dropped = wire.copy(delivered(b"{}", due), read, attempts=0, due=None)
    assert dropped.headers is not None and wire.DUE not in dropped.headers


def test_a_message_without_an_id_is_named_by_its_content() -> None:
    """Another client's message without message_id: a digest, the same on redelivery."""
    stamp = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
    props = spec.Basic.Properties(timestamp=stamp, headers={"h": 1})
    one = wire.read(delivered(b'{"a": 1}', props))
    again = wire.read(delivered(b'{"a": 1}', props, redelivered=True))
    other = wire.read(delivered(b'{"a": 2}', props))
    assert one.id.startswith("amqp-") and one.id == again.id != other.id
    # Classic queues do not count returns: a redelivered message was returned once at least.
    assert wire.read(delivered(b"{}", props, redelivered=True), classic=True).returns == 1


def test_url_options_are_checked() -> None:
    url = "amqp://guest:guest@127.0.0.1:5672/"
    for query, word in [
        ("?prefix=a b", "prefix"),
        ("?partitions=0", "partitions"),
        ("?partitions=x", "partitions"),
        ("?queue_type=lazy", "queue_type"),
    ]:
        with pytest.raises(ConfigError, match=word):
            build_broker(url + query, owner="t", poll_interval=1)
    broker = build_broker(
        url + "?prefix=shop&partitions=4&heartbeat=30", owner="t", poll_interval=1
    )
    assert broker.kind == "rabbitmq"
    assert broker.prefix == "shop" and broker.partitions == 4  # type: ignore[attr-defined]
    assert broker.url.endswith("/?heartbeat=30")  # type: ignore[attr-defined]


def test_without_aio_pika_the_extra_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "aio_pika", None)
    with pytest.raises(MissingExtra, match=r"polyport\[rabbitmq\]"):
        build_broker("amqp://127.0.0.1/", owner="t", poll_interval=1)
