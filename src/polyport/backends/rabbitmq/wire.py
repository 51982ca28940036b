"""A polyport message as an AMQP message: properties, headers, and back.

On the broker a message is a plain AMQP message any client can read or
write (``docs/queues.md`` shows one):

* the body: the message's JSON, as the queue's model dumps it;
* ``message_id``: its id (the producer's, or one polyport made);
* ``content_type`` ``application/json``, ``type`` ``{service}.{queue}``,
  ``timestamp`` when it was sent, ``delivery_mode`` 2 (persistent);
* a call's (``queue.call``) ``reply_to`` (the AMQP name of the queue to answer
  on) and ``correlation_id``, as AMQP's request/reply has them — the
  ``reply-to`` and ``correlation-id`` headers of the port: a polyport queue's
  name, or ``amqp:{name}`` for a queue polyport did not make;
* headers: the sender's own (``traceparent`` among them when known), and
  polyport's, all named ``x-polyport-…``: ``sent`` (Unix milliseconds),
  ``attempts`` (runs that already failed), ``error`` (the last one's error),
  ``key`` (the ordering key), ``due`` (when a keyed message may run, Unix
  milliseconds), ``send`` (which send stored it, for deduplication),
  ``died`` (dead letters, Unix milliseconds).

A message another client published needs none of them: without a
``message_id`` it is named by a digest of its body and properties (the same
on every redelivery).
"""

from __future__ import annotations

import datetime
import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from aiormq import spec
from aiormq.abc import DeliveredMessage

from polyport.core.broker import OutgoingMessage

ID = "x-polyport-id"
SENT = "x-polyport-sent"
ATTEMPTS = "x-polyport-attempts"
ERROR = "x-polyport-error"
KEY = "x-polyport-key"
DUE = "x-polyport-due"
SEND = "x-polyport-send"
DIED = "x-polyport-died"
#: What RabbitMQ adds (redeliveries, dead-lettering): never shown as a message's headers.
_BROKER_HEADERS = ("x-delivery-count", "x-death", "x-first-death-", "x-last-death-")
#: The port's headers that travel as AMQP properties, not in the headers table.
_AS_PROPERTIES = frozenset(("content-type", "type", "reply-to", "correlation-id"))
#: The longest AMQP short string (message ids, types), in bytes.
SHORTSTR = 255


def _user_header(name: str) -> bool:
    return not name.startswith("x-polyport-") and not name.startswith(_BROKER_HEADERS)


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return orjson.dumps(value, default=str).decode()


def _ms(seconds: float) -> int:
    """A time as a header holds it: AMQP tables carry floats in single precision."""
    return round(seconds * 1000)


def _utc(seconds: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(int(seconds), datetime.UTC)


def reply_address(prefix: str, reply_to: str) -> str:
    """The AMQP queue a ``reply-to`` header names: ``amqp:{name}`` as it is, else the
    polyport queue's (under ``prefix``)."""
    return reply_to[5:] if reply_to.startswith("amqp:") else f"{prefix}.{reply_to}"


def reply_header(prefix: str, reply_to: str) -> str:
    """The ``reply-to`` header of an AMQP ``reply_to``: the inverse of :func:`reply_address`."""
    own = reply_to.removeprefix(f"{prefix}.")
    return own if own != reply_to else f"amqp:{reply_to}"


def amqp_id(id_: str) -> str:
    """A message id as ``message_id`` holds it: itself, or a digest of one longer than
    an AMQP short string (the id itself then travels in ``x-polyport-id``)."""
    if len(id_.encode()) <= SHORTSTR:
        return id_
    return "sha256:" + hashlib.sha256(id_.encode()).hexdigest()


def outgoing(
    message: OutgoingMessage,
    *,
    now: float,
    send: str,
    prefix: str,
    due: float | None = None,
) -> spec.Basic.Properties:
    """The properties a message is stored with when polyport sends it."""
    given = message.headers
    reply_to = given.get("reply-to")
    headers: dict[str, Any] = {
        name: value
        for name, value in given.items()
        if name not in _AS_PROPERTIES and _user_header(name)
    }
    headers[SENT] = _ms(now)
    headers[SEND] = send
    message_id = amqp_id(message.id)
    if message_id != message.id:
        headers[ID] = message.id
    if message.key is not None:
        headers[KEY] = message.key
    if due is not _KEEP:
        headers.pop(DUE, None)
        if isinstance(due, float | int):
            headers[DUE] = _ms(due)
    return spec.Basic.Properties(
        content_type=given.get("content-type", "application/json"),
        headers=headers,
        delivery_mode=2,
        correlation_id=given.get("correlation-id"),
        reply_to=reply_address(prefix, reply_to) if reply_to else None,
        message_id=message_id,
        timestamp=_utc(now),
        message_type=given.get("type"),
    )


@dataclass(frozen=True, slots=True)
class Received:
    """What polyport reads from a message it received or browsed."""

    id: str
    body: bytes
    #: The sender's headers with ``content-type`` and ``type`` (the port's view).
    headers: Mapping[str, str]
    key: str | None
    #: Runs that failed before this copy was stored (its ``x-polyport-attempts``).
    attempts: int
    #: How many times RabbitMQ gave this copy back (``x-delivery-count``).
    returns: int
    sent: float
    error: str | None
    due: float | None
    send: str | None
    died: float | None


def read(message: DeliveredMessage, *, prefix: str = "", classic: bool = False) -> Received:
    """A delivered message, whoever sent it."""
    props = message.header.properties
    raw: dict[str, Any] = dict(props.headers or {})
    headers = {name: _text(value) for name, value in raw.items() if _user_header(name)}
    if props.content_type:
        headers["content-type"] = props.content_type
    if props.message_type:
        headers["type"] = props.message_type
    if props.reply_to:
        headers["reply-to"] = reply_header(prefix, props.reply_to)
    if props.correlation_id:
        headers["correlation-id"] = props.correlation_id
    if classic:
        # Classic queues do not count; a redelivered message was given back once at least.
        returns = 1 if getattr(message.delivery, "redelivered", False) else 0
    else:
        returns = _int(raw.get("x-delivery-count"))
    sent = _seconds(raw.get(SENT))
    if sent is None:
        sent = props.timestamp.timestamp() if props.timestamp is not None else time.time()
    key = raw.get(KEY)
    error = raw.get(ERROR)
    send = raw.get(SEND)
    long_id = raw.get(ID)
    return Received(
        id=_text(long_id) if long_id is not None else props.message_id or foreign_id(message),
        body=message.body,
        headers=headers,
        key=_text(key) if key is not None else None,
        attempts=_int(raw.get(ATTEMPTS)),
        returns=returns,
        sent=sent,
        error=_text(error) if error is not None else None,
        due=_seconds(raw.get(DUE)),
        send=_text(send) if send is not None else None,
        died=_seconds(raw.get(DIED)),
    )


def foreign_id(message: DeliveredMessage) -> str:
    """The id of a message published without one: a digest of its body and properties."""
    props = message.header.properties
    digest = hashlib.sha256()
    for part in (
        props.correlation_id,
        props.message_type,
        props.timestamp.isoformat() if props.timestamp else None,
        orjson.dumps(props.headers or {}, default=str, option=orjson.OPT_SORT_KEYS),
    ):
        digest.update(orjson.dumps(part, default=str))
    digest.update(message.body)
    return "amqp-" + digest.hexdigest()[:32]


_KEEP = object()


def copy(
    message: DeliveredMessage,
    received: Received,
    *,
    attempts: int,
    error: str | object | None = _KEEP,
    due: float | object | None = _KEEP,
    died: float | None = None,
    sent: float | None = None,
) -> spec.Basic.Properties:
    """The properties of a copy of ``message``: the same message with its count of
    failed runs, and (when given) its error and due time (None: none), death or new
    send time.

    RabbitMQ's own headers are dropped (the copy starts a fresh count of
    returns), and so are ``expiration`` (a delay is polyport's) and
    ``user_id`` (RabbitMQ checks it against the publisher's user).
    """
    props = message.header.properties
    headers: dict[str, Any] = {
        name: value
        for name, value in (props.headers or {}).items()
        if not name.startswith(_BROKER_HEADERS) and name not in (ATTEMPTS, DIED)
    }
    if attempts:
        headers[ATTEMPTS] = attempts
    if error is not _KEEP:
        headers.pop(ERROR, None)
        if error is not None:
            headers[ERROR] = error
    if due is not _KEEP:
        headers.pop(DUE, None)
        if isinstance(due, float | int):
            headers[DUE] = _ms(due)
    if died is not None:
        headers[DIED] = _ms(died)
    if sent is not None:
        headers[SENT] = _ms(sent)
    else:
        headers.setdefault(SENT, _ms(received.sent))
    return spec.Basic.Properties(
        content_type=props.content_type,
        content_encoding=props.content_encoding,
        headers=headers,
        delivery_mode=2,
        priority=props.priority,
        correlation_id=props.correlation_id,
        reply_to=props.reply_to,
        message_id=amqp_id(received.id),
        timestamp=props.timestamp if sent is None else _utc(sent),
        message_type=props.message_type,
        app_id=props.app_id,
    )


def _int(value: Any) -> int:
    try:
        return max(0, int(value)) if value is not None else 0
    except (TypeError, ValueError):
        return 0


def _seconds(value: Any) -> float | None:
    """Seconds from a header of Unix milliseconds."""
    try:
        return float(value) / 1000 if value is not None else None
    except (TypeError, ValueError):
        return None


__all__ = [
    "ATTEMPTS",
    "DIED",
    "DUE",
    "ERROR",
    "ID",
    "KEY",
    "SEND",
    "SENT",
    "Received",
    "amqp_id",
    "copy",
    "foreign_id",
    "outgoing",
    "read",
    "reply_address",
    "reply_header",
]
