"""Where the webhook store keeps what, and how each piece is written.

:class:`~polyport.core.webhookqueue.QueuedWebhookStore` reads and writes
through these, and so does a backend moving an older file's tables into the
new storage (the SQLite migration), so the two always agree.

**The work queue.** An endpoint's deliveries are the queue
``webhooks/{endpoint_id}``, one item per event id. The payload is the message
(its type and time as JSON, length first, then the body as is). The last
attempt's outcome rides in the item too — the queue's ``error`` of a retried
or dead item, its ``result`` once done — so listing the delivery log reads
nothing else.

**The record store** (``webhooks/`` keys)::

    webhooks/endpoints/{id}                                     an endpoint, secrets sealed
    webhooks/endpoints.version                                  moved by every endpoint change
    webhooks/fanout                                             the fan-out cursor (a seq)
    webhooks/deliveries/{id}/{created µs}/{event id}/{n:06}    a failed attempt (the history)
    webhooks/deliveries/{id}/{created µs}/{event id}/round     a replayed delivery's new round

A delivery's records sort by its creation time under its endpoint, so a
purge finds those of the deliveries it dropped without reading the others.
A success lives only in its item until a replay copies it into the history,
one record less in the common case.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from polyport.core.webhookstore import Message, Owner, Secret, WebhookEndpoint

#: The work queue of each endpoint's deliveries: this and its id.
QUEUE_PREFIX = "webhooks/"
ENDPOINTS = "webhooks/endpoints/"
VERSION_KEY = "webhooks/endpoints.version"
FANOUT_KEY = "webhooks/fanout"
#: Who fans out every node's events where several nodes share the log, and until when.
LEADER_KEY = "webhooks/fanout.leader"
DELIVERIES = "webhooks/deliveries/"
ROUND = "round"

_META_LENGTH = struct.Struct(">I")


class SecretSeal(Protocol):
    """How endpoint secrets are stored (``polyport.webhooks.encryption.SecretCipher``)."""

    def seal(self, plain: str) -> str: ...

    def open(self, stored: str, what: str) -> str: ...

    def is_current(self, stored: str) -> bool: ...

    def is_sealed(self, stored: str) -> bool: ...


def queue_of(endpoint_id: str) -> str:
    return QUEUE_PREFIX + endpoint_id


def endpoint_key(endpoint_id: str) -> str:
    return ENDPOINTS + endpoint_id


def delivery_prefix(endpoint_id: str, created: float, event_id: str) -> str:
    """Where one delivery's records are: its attempts, then its round."""
    return f"{DELIVERIES}{endpoint_id}/{micros(created):020d}/{event_id}/"


def micros(at: float) -> int:
    return round(at * 1_000_000)


def attempt_key(endpoint_id: str, created: float, event_id: str, number: int) -> str:
    return f"{delivery_prefix(endpoint_id, created, event_id)}{number:06d}"


def round_key(endpoint_id: str, created: float, event_id: str) -> str:
    return delivery_prefix(endpoint_id, created, event_id) + ROUND


def created_of(key: str, endpoint_id: str) -> tuple[int, str]:
    """``(created µs, event id)`` of a delivery record's key under ``endpoint_id``."""
    rest = key[len(DELIVERIES) + len(endpoint_id) + 1 :]
    created, _, tail = rest.partition("/")
    return int(created), tail.rpartition("/")[0]


# -- the item ---------------------------------------------------------------------------


def encode_message(message: Message | None, type: str = "") -> bytes:
    """A delivery's payload: the message, or only its type when it was lost (older files)."""
    if message is None:
        meta = orjson.dumps({"type": type, "time": None})
        return _META_LENGTH.pack(len(meta)) + meta
    meta = orjson.dumps({"type": message.type, "time": message.time})
    return _META_LENGTH.pack(len(meta)) + meta + message.body


def decode_message(event_id: str, payload: bytes) -> tuple[str, Message | None]:
    """The event type of a delivery's payload, and its message if it has one."""
    (length,) = _META_LENGTH.unpack_from(payload)
    start = _META_LENGTH.size
    meta = orjson.loads(payload[start : start + length])
    if meta["time"] is None:
        return meta["type"], None
    body = payload[start + length :]
    return meta["type"], Message(event_id, meta["type"], meta["time"], body)


@dataclass(frozen=True, slots=True)
class Outcome:
    """The last attempt of a delivery as its item keeps it (``time`` None: none was made,
    yet it failed — its endpoint was disabled)."""

    number: int
    time: float | None
    response_code: int | None
    latency: float | None
    error: str | None
    response_body: str | None


def encode_outcome(outcome: Outcome) -> str:
    return orjson.dumps(
        [
            outcome.number,
            outcome.time,
            outcome.response_code,
            outcome.latency,
            outcome.error,
            outcome.response_body,
        ]
    ).decode()


def decode_outcome(text: str | bytes | None) -> Outcome | None:
    if text is None:
        return None
    try:
        number, at, code, latency, error, body = orjson.loads(text)
    except (orjson.JSONDecodeError, ValueError, TypeError):
        # Not written by this store: keep what it says as the error.
        return Outcome(0, None, None, None, str(text), None)
    return Outcome(number, at, code, latency, error, body)


# -- records ----------------------------------------------------------------------------


def encode_round(base: int, last: Outcome | None) -> bytes:
    """A new round: the attempts before it, and the last one's outcome (shown until the
    round's own first attempt)."""
    return orjson.dumps([base, None if last is None else encode_outcome(last)])


def decode_round(value: bytes | None) -> tuple[int, Outcome | None]:
    if value is None:
        return 0, None
    base, last = orjson.loads(value)
    return base, decode_outcome(last)


def encode_attempt(outcome: Outcome) -> bytes:
    return encode_outcome(outcome).encode()


def endpoint_fields(endpoint: WebhookEndpoint, seal: SecretSeal) -> dict[str, Any]:
    """An endpoint as its record holds it (the id is in the key)."""
    secrets = orjson.dumps([[s.value, s.expires] for s in endpoint.secrets]).decode()
    return stored_fields(endpoint, seal.seal(secrets))


def stored_fields(endpoint: WebhookEndpoint, sealed_secrets: str) -> dict[str, Any]:
    """:func:`endpoint_fields` with the secrets as stored already (``endpoint.secrets``
    is not read)."""
    owner = endpoint.owner
    return {
        "url": endpoint.url,
        "description": endpoint.description,
        "event_types": list(endpoint.event_types),
        "secrets": sealed_secrets,
        "enabled": endpoint.enabled,
        "created": endpoint.created,
        "updated": endpoint.updated,
        "disabled_reason": endpoint.disabled_reason,
        "disabled_at": endpoint.disabled_at,
        "failing_since": endpoint.failing_since,
        "owner": None if owner is None else [owner.subject, list(owner.scopes), owner.via],
    }


def endpoint_from(endpoint_id: str, fields: dict[str, Any], seal: SecretSeal) -> WebhookEndpoint:
    secrets = orjson.loads(seal.open(fields["secrets"], f"webhook endpoint {endpoint_id}"))
    owner = fields["owner"]
    return WebhookEndpoint(
        id=endpoint_id,
        url=fields["url"],
        description=fields["description"],
        event_types=tuple(fields["event_types"]),
        secrets=tuple(Secret(value, expires) for value, expires in secrets),
        enabled=fields["enabled"],
        created=fields["created"],
        updated=fields["updated"],
        disabled_reason=fields["disabled_reason"],
        disabled_at=fields["disabled_at"],
        failing_since=fields["failing_since"],
        owner=None if owner is None else Owner(owner[0], tuple(owner[1]), owner[2]),
    )


__all__ = [
    "DELIVERIES",
    "ENDPOINTS",
    "FANOUT_KEY",
    "QUEUE_PREFIX",
    "VERSION_KEY",
    "Outcome",
    "SecretSeal",
    "attempt_key",
    "created_of",
    "decode_message",
    "decode_outcome",
    "decode_round",
    "delivery_prefix",
    "encode_attempt",
    "encode_message",
    "encode_outcome",
    "encode_round",
    "endpoint_fields",
    "endpoint_from",
    "endpoint_key",
    "micros",
    "queue_of",
    "round_key",
    "stored_fields",
]
