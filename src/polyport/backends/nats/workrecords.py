"""A work item as one KV record: names as key tokens, the record's header and body.

An item ``(queue, key)`` is the KV key ``i.{queue}.{key}`` of the work queue's
bucket, each name one token (see :func:`name_token`). Its record is one
message:

* a header ``Polyport-Work: {status} {due} {seq} {finished} {group}`` — what
  a headers-only consumer needs to index, list, count and purge items without
  their bodies (``seq`` ``0`` means the record's own revision: an enqueue
  cannot know the stream sequence it gets; ``{group}`` is the ordering group's
  token, absent for none — and in records from before groups);
* a body: a JSON object (attempts, created, lease, claimed, owner, and where
  the payload, result and error are), a newline, then the inline fields' bytes.

A field larger than :data:`INLINE_MAX` is a *blob* instead: chunks under
``b.{queue}.{key}.{nonce}.{n}``, written before the record that names them.
So a record stays far below the server's ``max_payload`` (1 MiB by default,
headers included: a 1 MiB payload cannot be one message), and a claim or an
outcome rewrites a small record, not a large payload.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from typing import Any

import orjson

from polyport.core.workqueue import WORK_STATUSES, WorkStatus

HEADER = "Polyport-Work"
#: Fields larger than this are stored as blobs, outside the record.
INLINE_MAX = 64 * 1024
#: An encoded name longer than this is written in base64 instead (subjects stay short).
READABLE_MAX = 600

_PLAIN = re.compile(r"[A-Za-z0-9_-]+")
_PLAIN_CHAR = re.compile(r"[A-Za-z0-9_-]")
_ESCAPED = re.compile(rb"=([0-9A-F]{2})")


def name_token(name: str) -> str:
    """A queue name or key as one KV key token; distinct names give distinct tokens.

    ``[A-Za-z0-9_-]`` stay as they are and every other character is its UTF-8
    bytes as ``=XX``, so a token is never empty and never holds ``.``, ``*``,
    ``>`` or a space. A name whose escaped form would pass
    :data:`READABLE_MAX` (many non-ASCII characters) is ``==`` and the
    unpadded base64url of its UTF-8 instead — which no escaped token starts
    with — so the subject of an item stays well within a NATS control line.
    """
    if _PLAIN.fullmatch(name):
        return name
    token = "".join(
        c if _PLAIN_CHAR.fullmatch(c) else "".join(f"={b:02X}" for b in c.encode()) for c in name
    )
    if len(token) <= READABLE_MAX:
        return token
    return "==" + base64.urlsafe_b64encode(name.encode()).rstrip(b"=").decode()


def token_name(token: str) -> str:
    """The name :func:`name_token` made ``token`` from."""
    if token.startswith("=="):
        return base64.urlsafe_b64decode(token[2:] + "=" * (-len(token) % 4)).decode()
    if "=" not in token:
        return token
    return _ESCAPED.sub(lambda m: bytes([int(m.group(1), 16)]), token.encode()).decode()


@dataclass(frozen=True, slots=True)
class Blob:
    """A field stored outside its record: ``chunks`` messages under one ``nonce``."""

    nonce: str
    size: int
    chunks: int


#: A field's bytes, inline in the record, or where its blob is.
Field = bytes | Blob


@dataclass(frozen=True, slots=True)
class Stored:
    """A record as the bucket holds it (``revision``: its stream sequence)."""

    revision: int
    seq: int
    status: WorkStatus
    due: float
    finished: float | None
    attempts: int
    created: float
    lease: str | None
    claimed: float | None
    payload: Field
    result: Field | None
    error: Field | None
    owner: str | None = None
    #: The ordering group, as its token (see :func:`name_token`).
    group: str | None = None

    @property
    def blobs(self) -> list[Blob]:
        return [f for f in (self.payload, self.result, self.error) if isinstance(f, Blob)]


def work_header(
    status: WorkStatus, due: float, seq: int, finished: float | None, group: str | None = None
) -> str:
    """The header of a record (``group`` a token: it holds no space)."""
    header = f"{status} {float(due)!r} {seq} {'-' if finished is None else repr(float(finished))}"
    return header if group is None else f"{header} {group}"


@dataclass(frozen=True, slots=True)
class Summary:
    """What a record's header says (enough to index, list, count and purge)."""

    status: WorkStatus
    due: float
    seq: int
    finished: float | None
    #: The ordering group's token, or None.
    group: str | None = None


def parse_header(value: str, revision: int) -> Summary:
    """The :func:`work_header` of a record at ``revision``; ValueError if it is not one."""
    status, due, seq, finished, *group = value.split(" ")
    if status not in WORK_STATUSES:
        raise ValueError(f"unknown work status {status!r}")
    if len(group) > 1 or group == [""]:
        raise ValueError("a work record's header has too many fields")
    return Summary(
        status,
        float(due),
        int(seq) or revision,
        None if finished == "-" else float(finished),
        group[0] if group else None,
    )


def _ref(field: Field | None) -> Any:
    if field is None:
        return None
    if isinstance(field, Blob):
        return [field.nonce, field.size, field.chunks]
    return len(field)


def encode_body(stored: Stored) -> bytes:
    """The record's body: its JSON, a newline, then the inline fields in order."""
    meta = {
        "a": stored.attempts,
        "c": float(stored.created),
        "l": stored.lease,
        "cl": None if stored.claimed is None else float(stored.claimed),
        "o": stored.owner,
        "p": _ref(stored.payload),
        "r": _ref(stored.result),
        "e": _ref(stored.error),
    }
    inline = [f for f in (stored.payload, stored.result, stored.error) if isinstance(f, bytes)]
    return b"".join([orjson.dumps(meta), b"\n", *inline])


def decode(header: str, body: bytes, revision: int) -> Stored:
    """A record from its header, body and revision; ValueError if it is not a work record."""
    summary = parse_header(header, revision)
    head, _, rest = body.partition(b"\n")
    try:
        meta = orjson.loads(head)
    except orjson.JSONDecodeError as exc:
        raise ValueError("not a work record") from exc
    view = memoryview(rest)
    offset = 0

    def field(ref: Any) -> Field | None:
        nonlocal offset
        if ref is None:
            return None
        if isinstance(ref, list):
            return Blob(str(ref[0]), int(ref[1]), int(ref[2]))
        size = int(ref)
        value = bytes(view[offset : offset + size])
        offset += size
        return value

    payload = field(meta["p"])
    result, error = field(meta["r"]), field(meta["e"])
    if payload is None or offset != len(rest):
        raise ValueError("a work record's body does not match its fields")
    return Stored(
        revision=revision,
        seq=summary.seq,
        status=summary.status,
        due=summary.due,
        finished=summary.finished,
        attempts=int(meta["a"]),
        created=float(meta["c"]),
        lease=meta["l"],
        claimed=meta["cl"],
        payload=payload,
        result=result,
        error=error,
        owner=meta.get("o"),
        group=summary.group,
    )


def error_bytes(error: str) -> bytes:
    # surrogatepass: an error text is whatever an exception said, even a lone surrogate.
    return error.encode("utf-8", "surrogatepass")


def error_text(data: bytes) -> str:
    return data.decode("utf-8", "surrogatepass")


__all__ = [
    "HEADER",
    "INLINE_MAX",
    "Blob",
    "Field",
    "Stored",
    "Summary",
    "decode",
    "encode_body",
    "error_bytes",
    "error_text",
    "name_token",
    "parse_header",
    "token_name",
    "work_header",
]
