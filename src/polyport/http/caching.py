"""HTTP caching for GETs: strong ETags from the body, ``If-None-Match`` → 304."""

from __future__ import annotations

import binascii
import hashlib


def etag_of(body: bytes) -> bytes:
    """A strong validator: 96 bits of BLAKE2b over the representation, in base64."""
    digest = hashlib.blake2b(body, digest_size=12).digest()
    return b'"' + binascii.b2a_base64(digest, newline=False) + b'"'


def not_modified(if_none_match: bytes | None, etag: bytes) -> bool:
    """Whether ``If-None-Match`` matches ``etag`` (weak comparison, as RFC 9110 says)."""
    if if_none_match is None:
        return False
    value = if_none_match.strip()
    if value == b"*":
        return True
    for candidate in value.split(b","):
        candidate = candidate.strip()
        if candidate.startswith(b"W/"):
            candidate = candidate[2:]
        if candidate == etag:
            return True
    return False


def cache_control(*, public: bool, max_age: int) -> bytes:
    """``private`` when the answer depends on credentials; revalidate unless ``max_age``."""
    scope = b"public" if public else b"private"
    if max_age > 0:
        return scope + b", max-age=" + str(max_age).encode()
    return scope + b", no-cache"
