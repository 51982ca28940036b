"""The message queues' format on JetStream: names, subjects and headers, both ways.

One queue ``{queue}`` under the prefix ``{prefix}`` is three streams:

==========================  ======================================  ==========================
stream                      subjects                                holds
==========================  ======================================  ==========================
``{prefix}_{queue}``        ``{prefix}.{queue}``,                   the messages (work-queue
                            ``{prefix}.{queue}.k.{key}``            retention: acked = gone)
``{prefix}_{queue}_DEAD``   ``{prefix}.{queue}.dead.{id}``          the dead letters
``{prefix}_{queue}_LEASES`` ``{prefix}.{queue}.lease.{seq}``        one lease record per
                                                                    message received
==========================  ======================================  ==========================

Queue names are lower case, so ``_DEAD`` and ``_LEASES`` never end a queue's own
stream name, and the prefix holds no ``_``, so the first ``_`` ends it. A key
or id is one subject token as :func:`~.workrecords.name_token` writes it
(``[A-Za-z0-9_-]`` as they are, anything else escaped).

A message's headers on the wire (the body is the model's JSON, untouched):

* ``Nats-Msg-Id`` — the message id: JetStream drops a second publish of it
  within the stream's ``duplicate_window`` (the queue's dedup window);
* ``Content-Type``, ``Polyport-Type`` (``{service}.{queue}``), and any other
  header the sender gave (``traceparent``) as they are;
* ``Polyport-Key`` — the ordering key, for readers (the subject decides);
* ``Polyport-Not-Before`` — Unix seconds before which it is not handled (a delay);
* ``Polyport-Id``, ``Polyport-Error`` — on a redriven message: its id (its
  ``Nats-Msg-Id`` is a new one, the old one being known to the stream) and the
  error it died with.

A dead letter keeps the message's body and headers and adds
``Polyport-Id``, ``Polyport-Key``, ``Polyport-Attempts``, ``Polyport-Error``,
``Polyport-Sent`` and ``Polyport-Died`` (Unix seconds).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from polyport.backends.nats.workrecords import name_token, token_name
from polyport.core.errors import InvalidArgument

if TYPE_CHECKING:
    from nats.aio.msg import Msg

_PREFIX = re.compile(r"[A-Za-z0-9-]{1,64}")
_QUEUE = re.compile(r"[a-z0-9_-]{1,100}")

MSG_ID = "Nats-Msg-Id"
CONTENT_TYPE = "Content-Type"
TYPE = "Polyport-Type"
KEY = "Polyport-Key"
NOT_BEFORE = "Polyport-Not-Before"
ID = "Polyport-Id"
ERROR = "Polyport-Error"
ATTEMPTS = "Polyport-Attempts"
SENT = "Polyport-Sent"
DIED = "Polyport-Died"
#: Headers the port's ``headers`` mapping names otherwise (lower case there).
_RENAMED = {"content-type": CONTENT_TYPE, "type": TYPE}
_UNRENAMED = {wire.lower(): name for name, wire in _RENAMED.items()}
_ESCAPE = re.compile(r"[\x00-\x1f\x7f\\]|^ | $")
_UNESCAPE = re.compile(r"\\(\\|x[0-9a-f]{2})")


def check_prefix(prefix: str) -> str:
    if not _PREFIX.fullmatch(prefix):
        raise InvalidArgument(f"invalid broker prefix {prefix!r}: use 1-64 of A-Za-z0-9-")
    return prefix


@dataclass(frozen=True, slots=True)
class QueueNames:
    """The streams and subjects of one queue."""

    queue: str
    stream: str
    dead_stream: str
    lease_stream: str
    #: Messages without a key.
    subject: str
    #: Subjects of keyed messages start with this, then the key's token.
    keyed: str
    dead: str
    lease: str

    @classmethod
    def of(cls, prefix: str, queue: str) -> QueueNames:
        if not _QUEUE.fullmatch(queue):
            raise InvalidArgument(f"invalid queue name {queue[:100]!r}")
        base = f"{prefix}.{queue}"
        stream = f"{prefix}_{queue}"
        return cls(
            queue=queue,
            stream=stream,
            dead_stream=f"{stream}_DEAD",
            lease_stream=f"{stream}_LEASES",
            subject=base,
            keyed=f"{base}.k.",
            dead=f"{base}.dead.",
            lease=f"{base}.lease.",
        )

    def subject_for(self, key: str | None) -> str:
        return self.subject if key is None else self.keyed + name_token(key)

    def key_of(self, subject: str) -> str | None:
        """The ordering key a message's subject names (None on the queue's own subject)."""
        if not subject.startswith(self.keyed):
            return None
        token = subject[len(self.keyed) :]
        try:
            return token_name(token)
        except ValueError:  # a foreign client's token that name_token never makes
            return token

    def dead_subject(self, id: str) -> str:
        return self.dead + name_token(id)

    def lease_subject(self, seq: int) -> str:
        return f"{self.lease}{seq}"


def header_text(text: str) -> str:
    """``text`` as a header value: control characters, ``\\`` and spaces at either
    end escaped (``\\xNN``, ``\\\\``), since headers are one line and trimmed."""
    if text.isprintable() and "\\" not in text and text[:1] != " " and text[-1:] != " ":
        return text  # the usual id: nothing to escape, found without the regex
    return _ESCAPE.sub(lambda m: "\\\\" if m.group() == "\\" else f"\\x{ord(m.group()):02x}", text)


def text_of(value: str) -> str:
    """The text :func:`header_text` made ``value`` from."""
    if "\\" not in value:
        return value
    return _UNESCAPE.sub(
        lambda m: "\\" if m.group(1) == "\\" else chr(int(m.group(1)[1:], 16)), value
    )


def wire_headers(
    id: str, headers: Mapping[str, str], key: str | None, not_before: float | None
) -> dict[str, str]:
    """The headers a message is published with (see the module's docstring)."""
    wire_id = header_text(id)
    out = {MSG_ID: wire_id}
    if wire_id != id:  # spaces at its ends, a backslash: the exact id goes beside it
        out[ID] = wire_id
    for name, value in headers.items():
        out[_RENAMED.get(name.lower(), name)] = value
    if key is not None:
        out[KEY] = header_text(key)
    if not_before is not None:
        out[NOT_BEFORE] = f"{not_before:.6f}"
    return out


def port_headers(wire: Mapping[str, str] | None) -> dict[str, str]:
    """The headers a consumer sees: lower-case names, without JetStream's and polyport's own."""
    out: dict[str, str] = {}
    for name, value in (wire or {}).items():
        lower = name.lower()
        if lower in _UNRENAMED:
            out[_UNRENAMED[lower]] = value
        elif not lower.startswith(("nats-", "polyport-")):
            out[lower] = value
    return out


def user_wire_headers(wire: Mapping[str, str] | None) -> dict[str, str]:
    """The headers of a message that travel with it (to the dead letters and back)."""
    return {
        name: value
        for name, value in (wire or {}).items()
        if name == TYPE or not name.lower().startswith(("nats-", "polyport-"))
    }


def message_id(wire: Mapping[str, str] | None, seq: int) -> str:
    """A message's id: ``Polyport-Id``, else ``Nats-Msg-Id``, else ``#{seq}`` (a foreign
    message published without one)."""
    wire = wire or {}
    id = wire.get(ID)
    if id is not None:
        return text_of(id)
    return wire.get(MSG_ID) or f"#{seq}"


def number(wire: Mapping[str, str] | None, name: str) -> float | None:
    value = (wire or {}).get(name)
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None


def optional_text(wire: Mapping[str, str] | None, name: str) -> str | None:
    value = (wire or {}).get(name)
    return None if value is None else text_of(value)


@dataclass(frozen=True, slots=True)
class Received:
    """What a delivered message says of itself (its metadata and headers)."""

    seq: int
    #: JetStream's count of deliveries of this message to the consumer (from 1).
    delivered: int
    #: When the stream stored it (the server's clock), Unix seconds.
    stored: float
    #: The stored time in nanoseconds, as the reply subject carries it.
    stored_ns: int
    reply: str
    subject: str
    wire: Mapping[str, str]
    body: bytes


def _ack_tokens(reply: str) -> list[str]:
    tokens = reply.split(".")
    # $JS.ACK.<stream>.<consumer>.<delivered>.<seq>.<cseq>.<ns>.<pending>, or with
    # <domain>.<account hash> after ACK and a random token at the end (12 tokens).
    if len(tokens) >= 12:
        tokens = tokens[:2] + tokens[4:]
    return tokens


def ack_stream(reply: str) -> str | None:
    """The stream a delivery's reply subject (``$JS.ACK.…``) names; None for another subject."""
    tokens = _ack_tokens(reply)
    return tokens[2] if len(tokens) >= 9 and tokens[:2] == ["$JS", "ACK"] else None


def received(msg: Msg) -> Received:
    """A message delivered by the consumer, from its reply subject (``$JS.ACK.…``)."""
    tokens = _ack_tokens(msg.reply)
    delivered, seq, stored_ns = int(tokens[4]), int(tokens[5]), int(tokens[7])
    return Received(
        seq=seq,
        delivered=delivered,
        stored=stored_ns / 1e9,
        stored_ns=stored_ns,
        reply=msg.reply,
        subject=msg.subject,
        wire=msg.headers or {},
        body=msg.data,
    )


__all__ = [
    "ATTEMPTS",
    "CONTENT_TYPE",
    "DIED",
    "ERROR",
    "ID",
    "KEY",
    "MSG_ID",
    "NOT_BEFORE",
    "SENT",
    "TYPE",
    "QueueNames",
    "Received",
    "ack_stream",
    "check_prefix",
    "header_text",
    "message_id",
    "number",
    "optional_text",
    "port_headers",
    "received",
    "text_of",
    "user_wire_headers",
    "wire_headers",
]
