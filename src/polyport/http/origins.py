"""The one origin rule of every WebSocket endpoint, and the credentials it lets count.

A browser opens a WebSocket to any site without a CORS preflight and sends
that site's cookies with the handshake. A page on ``evil.example`` can
therefore open ``wss://our-node/ws`` and act with the visitor's ticket cookie
(cross-site WebSocket hijacking). What a browser cannot forge is the
``Origin`` header of the handshake, so every WebSocket endpoint — ``/ws``,
``/jsonrpc``, ``graphql-transport-ws`` on ``/graphql``, any later one — asks
this module the same question before it reads a credential:

=====================================  ===========  ================
handshake                              connection   cookies count
=====================================  ===========  ================
no ``Origin`` (not a browser)          allowed      yes
same origin (``Origin`` = ``Host``)    allowed      yes
``Origin`` listed in ``cors_origins``  allowed      yes
``"*"`` in ``cors_origins``            allowed      **no**
any other ``Origin`` (``null`` too)    refused      —
=====================================  ===========  ================

``"*"`` never grants credentials, as browsers never send credentials to a
CORS ``*``: a page anywhere may then talk to the node, but only with a
credential it holds itself (a ``bearer.`` subprotocol, ``?access_token=``, an
``auth`` frame). Refusing unknown origins outright (rather than only
ignoring their cookies) also keeps pages on other sites away from a
development node, where an anonymous caller may do everything.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from urllib.parse import urlsplit

from polyport.core.auth import NO_CREDENTIALS, Credentials
from polyport.core.errors import PermissionDenied
from polyport.http.request import TOKEN_COOKIE, Request

#: A WebSocket subprotocol that carries a bearer token: ``bearer.<token>``.
BEARER_SUBPROTOCOL = "bearer."
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}

#: An origin as compared: scheme, host (lower case, no brackets), port.
Origin = tuple[str, str, int]


class Trust(Enum):
    """What a handshake's origin earns it."""

    #: Allowed, and credentials the browser attached by itself (cookies) count.
    CREDENTIALED = "credentialed"
    #: Allowed, but only credentials the page presented itself count.
    ANONYMOUS = "anonymous"
    #: Not allowed at all.
    REFUSED = "refused"


class OriginRefused(PermissionDenied):
    """The handshake came from a browser page on an origin this node does not allow."""

    def __init__(self, origin: str) -> None:
        super().__init__(
            f"WebSocket connections from origin {origin[:100]!r} are not allowed; "
            "list it in cors_origins"
        )


def parse_origin(text: str) -> Origin | None:
    """``scheme://host[:port]`` as compared, or None when it is not one (``null``, junk)."""
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname
    if scheme not in _DEFAULT_PORTS or not host or parts.path not in ("", "/"):
        return None
    return scheme, host.lower(), port if port is not None else _DEFAULT_PORTS[scheme]


def _same_origin(origin: Origin, host_header: str | None) -> bool:
    """Whether the page's origin is the node as the browser addressed it (``Host``)."""
    if not host_header:
        return False
    try:
        parts = urlsplit("//" + host_header.strip())
        port = parts.port
    except ValueError:
        return False
    host = parts.hostname
    if not host:
        return False
    scheme, origin_host, origin_port = origin
    # No port in Host means the default port of the scheme the page used.
    return host.lower() == origin_host and (port or _DEFAULT_PORTS[scheme]) == origin_port


@dataclass(frozen=True, slots=True)
class OriginPolicy:
    """The rule above for one node: its ``cors_origins``, parsed once."""

    allowed: frozenset[Origin] = frozenset()
    any_origin: bool = False

    @classmethod
    def from_settings(cls, cors_origins: Iterable[str]) -> OriginPolicy:
        listed = list(cors_origins)
        parsed = {parse_origin(entry) for entry in listed if entry != "*"}
        return cls(frozenset(o for o in parsed if o is not None), "*" in listed)

    def trust(self, request: Request) -> Trust:
        """What the handshake ``request`` earns (see the module's table)."""
        raw = request.header(b"origin")
        if raw is None:
            return Trust.CREDENTIALED  # not a browser: nothing was attached behind its back
        origin = parse_origin(raw)
        if origin is not None and (
            origin in self.allowed or _same_origin(origin, request.header(b"host"))
        ):
            return Trust.CREDENTIALED
        return Trust.ANONYMOUS if self.any_origin else Trust.REFUSED

    def check(self, request: Request) -> Trust:
        """:meth:`trust`, raising :class:`OriginRefused` instead of answering REFUSED."""
        trust = self.trust(request)
        if trust is Trust.REFUSED:
            raise OriginRefused(request.header(b"origin") or "")
        return trust


def websocket_credentials(
    request: Request, offered: Sequence[str], policy: OriginPolicy
) -> Credentials:
    """The credentials of a WebSocket handshake, after the origin rule.

    In order: an ``Authorization`` or ``X-API-Key`` header (non-browser
    clients), a ``bearer.<token>`` subprotocol, ``?access_token=``, and last
    the ticket cookie — which counts only from a credentialed origin.

    Raises:
        OriginRefused: the origin is not allowed at all.
        Unauthenticated: a malformed ``Authorization`` header.
    """
    trust = policy.check(request)
    headers = request.headers
    if b"authorization" in headers or b"x-api-key" in headers:
        return request.credentials()
    for protocol in offered:
        if protocol.startswith(BEARER_SUBPROTOCOL):
            return Credentials(bearer=protocol[len(BEARER_SUBPROTOCOL) :])
    token = request.query.get("access_token")
    if token:
        return Credentials(bearer=token)
    if trust is Trust.CREDENTIALED:
        cookie = request.cookie(TOKEN_COOKIE)
        if cookie:
            return Credentials(bearer=cookie)
    return NO_CREDENTIALS


__all__ = [
    "BEARER_SUBPROTOCOL",
    "OriginPolicy",
    "OriginRefused",
    "Trust",
    "parse_origin",
    "websocket_credentials",
]
