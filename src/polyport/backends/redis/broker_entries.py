"""What a message is on a Redis stream: the entry format clients polyport did not write read
and write (see ``docs/queues.md``).

An entry's fields (strings, but ``body``: the message's bytes as sent):

================  ===================================================================
``id``            the message id, which producer deduplication is by; an entry without
                  one is named by its stream entry ID
``body``          the message: the queue model's JSON
``type``          ``{service}.{queue}``
``content-type``  ``application/json``
``attempts``      receipts counted before this entry was added (``0`` when sent; a
                  retried or released message is added again with its count so far)
``key``           the ordering key, when it has one
``error``         what the last attempt failed with, after a failure
``sent``          when it was sent (or redriven): Unix seconds, three decimals
``traceparent``   the W3C trace context, when the sender gave one
================  ===================================================================

Every other field is a header of the message, so a foreign producer's own
fields reach the consumer's ``message.headers``. A header named like a field
polyport reserves (``id``, ``body``, ``attempts``, ``key``, ``error``,
``sent``, ``died``, ``due``) or beginning with ``header.`` travels as
``header.{name}``. A dead letter (on the queue's dead stream) has ``died``
as well, in the same form as ``sent``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from polyport.core.broker import OutgoingMessage

#: Fields with a meaning of their own; any other field is a header.
RESERVED = frozenset({"id", "body", "attempts", "key", "error", "sent", "died", "due"})
#: What a header whose name is reserved travels under, before its name.
HEADER = "header."


@dataclass(frozen=True, slots=True)
class StreamEntry:
    """An entry's fields, read."""

    id: str
    body: bytes
    headers: dict[str, str]
    key: str | None
    #: Receipts counted before the entry was added.
    attempts: int
    error: str | None
    sent: float
    #: When it became a dead letter (dead letters only).
    died: float | None


def fields_of(message: OutgoingMessage) -> list[str | bytes]:
    """The fields of a message to send, name then value; the scripts add ``sent``."""
    fields: list[str | bytes] = ["id", message.id, "body", message.body]
    for name, value in message.headers.items():
        reserved = name in RESERVED or name.startswith(HEADER)
        fields += [HEADER + name if reserved else name, value]
    fields += ["attempts", "0"]
    if message.key is not None:
        fields += ["key", message.key]
    return fields


def read_entry(entry_id: str, raw: Sequence[bytes] | Mapping[bytes, bytes]) -> StreamEntry:
    """An entry from its ID and its fields as Redis answers them (name, value, …), whoever
    wrote it: what is missing or unreadable takes its default, from the entry ID for the
    id and the time it was sent."""
    found: dict[str, bytes] = {}
    headers: dict[str, str] = {}
    pairs = raw.items() if isinstance(raw, Mapping) else zip(raw[::2], raw[1::2], strict=False)
    for raw_name, value in pairs:
        name = raw_name.decode(errors="replace")
        if name.startswith(HEADER):
            headers[name[len(HEADER) :]] = value.decode(errors="replace")
        elif name in RESERVED:
            found[name] = value
        else:
            headers[name] = value.decode(errors="replace")

    def text(name: str) -> str | None:
        value = found.get(name)
        return None if value is None else value.decode(errors="replace")

    key = text("key")
    return StreamEntry(
        id=text("id") or entry_id,
        body=found.get("body", b""),
        headers=headers,
        key=key or None,
        attempts=int(_number(text("attempts")) or 0),
        error=text("error"),
        sent=_number(text("sent")) or entry_time(entry_id),
        died=_number(text("died")),
    )


def entry_time(entry_id: str) -> float:
    """When Redis added an entry, from its ID (``{milliseconds}-{sequence}``)."""
    millis, _, _ = entry_id.partition("-")
    return int(millis) / 1000 if millis.isdigit() else 0.0


def _number(text: str | None) -> float | None:
    """A number field's value; None when absent or not a finite number."""
    try:
        value = float(text) if text is not None else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


__all__ = ["HEADER", "RESERVED", "StreamEntry", "entry_time", "fields_of", "read_entry"]
