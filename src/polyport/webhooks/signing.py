"""Standard Webhooks signatures: ``whsec_`` secrets and ``v1,<base64 HMAC-SHA256>``.

The signed content is ``{webhook-id}.{webhook-timestamp}.{body}``; the key is
the base64-decoded part of the secret after ``whsec_``. Several signatures
(during a secret rotation) go space-separated in one ``webhook-signature``.
See https://www.standardwebhooks.com/ — the outbound edge signs with this, and
the inbound ``StandardWebhooks`` verifier checks with it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Iterable

PREFIX = "whsec_"
#: Key bytes in a generated secret (the specification asks for 24 to 64).
KEY_BYTES = 32


_B64 = "[A-Za-z0-9+/]"
#: A secret :func:`secret_key` reads: ``whsec_`` and the base64 of 24 to 64 bytes (8 to 21
#: groups of four characters, the last possibly padded), for documents.
SECRET_PATTERN = (
    f"^whsec_(?:(?:{_B64}{{4}}){{8,21}}(?:{_B64}{{2}}==)?|(?:{_B64}{{4}}){{8,20}}{_B64}{{3}}=)$"
)


def new_secret() -> str:
    """A fresh random secret, ``whsec_`` + base64 of :data:`KEY_BYTES` random bytes."""
    return PREFIX + base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_…`` secret; ValueError when it is not one."""
    if not secret.startswith(PREFIX):
        raise ValueError("a webhook secret starts with 'whsec_'")
    try:
        key = base64.b64decode(secret[len(PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a webhook secret is 'whsec_' followed by base64") from None
    if not 24 <= len(key) <= 64:
        raise ValueError("a webhook secret holds 24 to 64 bytes of key")
    return key


def signed_content(msg_id: str, timestamp: int, body: bytes) -> bytes:
    return f"{msg_id}.{timestamp}.".encode() + body


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """One signature, ``v1,<base64>``."""
    digest = hmac.new(key, signed_content(msg_id, timestamp, body), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_header(keys: Iterable[bytes], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: one signature per key, space-separated."""
    content = signed_content(msg_id, timestamp, body)
    return " ".join(
        "v1," + base64.b64encode(hmac.new(k, content, hashlib.sha256).digest()).decode()
        for k in keys
    )


def matches(keys: Iterable[bytes], msg_id: str, timestamp: int, body: bytes, header: str) -> bool:
    """Whether any ``v1`` signature in ``header`` was made with any of ``keys`` (constant time)."""
    offered = []
    for part in header.split():
        version, _, value = part.partition(",")
        if version == "v1" and value:
            try:
                offered.append(base64.b64decode(value, validate=True))
            except (binascii.Error, ValueError):
                continue
    if not offered:
        return False
    content = signed_content(msg_id, timestamp, body)
    found = False
    for key in keys:
        expected = hmac.new(key, content, hashlib.sha256).digest()
        for candidate in offered:
            # No early exit: every comparison runs, so timing says nothing.
            found |= hmac.compare_digest(expected, candidate)
    return found
