"""Short-lived tickets: credentials safe to put in a URL or a cookie.

Browsers cannot set headers on ``EventSource`` or ``WebSocket``. Rather than
put a long-lived API key or JWT in a URL (where proxies and logs keep it), a
client trades its credentials for a ticket that names the same principal and
expires in a minute: ``pt.<payload>.<signature>``, HMAC-SHA256 signed with the
node's ticket secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time

import orjson

from polyport.core.context import Principal
from polyport.core.errors import Unauthenticated

PREFIX = "pt."


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TicketIssuer:
    """Issues and verifies tickets with one secret (random per process unless configured)."""

    def __init__(self, secret: str | None = None, ttl: float = 60.0) -> None:
        self._key = (secret or secrets.token_hex(32)).encode()
        self.ttl = ttl

    def issue(self, principal: Principal) -> tuple[str, float]:
        """A ticket for ``principal`` and the time it expires."""
        expires = time.time() + self.ttl
        payload = _b64(
            orjson.dumps(
                {
                    "sub": principal.subject,
                    "scopes": sorted(principal.scopes),
                    "anon": principal.anonymous,
                    "exp": round(expires, 3),
                }
            )
        )
        return f"{PREFIX}{payload}.{self._sign(payload)}", expires

    def verify(self, ticket: str) -> Principal:
        body = ticket[len(PREFIX) :]
        payload, _, signature = body.partition(".")
        if not payload or not hmac.compare_digest(signature, self._sign(payload)):
            raise Unauthenticated("ticket is invalid", invalid_token=True)
        try:
            claims = orjson.loads(_unb64(payload))
        except (ValueError, orjson.JSONDecodeError):
            raise Unauthenticated("ticket is invalid", invalid_token=True) from None
        if claims["exp"] < time.time():
            raise Unauthenticated("ticket expired", invalid_token=True)
        return Principal(claims["sub"], frozenset(claims["scopes"]), anonymous=claims["anon"])

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest()[:24])
