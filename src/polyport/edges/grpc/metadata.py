"""gRPC call metadata → the core's :class:`~polyport.core.dispatch.Caller`.

authorization: Bearer <token>    → Credentials.bearer
x-api-key: <key>                 → Credentials.api_key
x-request-id, traceparent        → request and trace ids
the call's deadline              → Caller.timeout (seconds left)
context.peer()                   → Caller.peer (the address, without the port)
"""

from __future__ import annotations

from typing import Any

from polyport.core.auth import NO_CREDENTIALS, Credentials
from polyport.core.dispatch import Caller
from polyport.core.errors import Unauthenticated

EDGE = "grpc"
_KNOWN = frozenset({"authorization", "x-api-key", "x-request-id", "traceparent"})


_PEERS: dict[str, str | None] = {}


def peer_address(peer: str | None) -> str | None:
    """``ipv4:127.0.0.1:5000`` → ``127.0.0.1``; ``ipv6:[::1]:5000`` → ``::1``."""
    if not peer:
        return None
    found = _PEERS.get(peer, "")
    if found != "":
        return found
    _, _, address = peer.partition(":")
    if address.startswith("["):
        host: str | None = address[1 : address.find("]")]
    else:
        name, sep, _ = address.rpartition(":")
        host = name if sep else address
    if len(_PEERS) >= 4096:  # one entry per connection: keep it bounded
        _PEERS.clear()
    _PEERS[peer] = host
    return host


def caller_of(context: Any) -> Caller:
    """Who is calling and how long they wait, from a servicer context."""
    bearer = api_key = request_id = trace_id = None
    for key, value in context.invocation_metadata() or ():
        if key not in _KNOWN:
            continue
        if key == "authorization":
            scheme, _, token = str(value).partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthenticated(
                    "the authorization metadata must be 'Bearer <token>'", invalid_token=True
                )
            bearer = token.strip()
        elif key == "x-api-key":
            api_key = str(value)
        elif key == "x-request-id":
            request_id = str(value)[:128]
        elif key == "traceparent":
            parts = str(value).split("-")
            if len(parts) == 4 and len(parts[1]) == 32:
                trace_id = parts[1]
    timeout = context.time_remaining()
    if bearer is None and api_key is None and request_id is None and trace_id is None:
        if timeout is None:
            return _anonymous(context.peer())
        credentials = NO_CREDENTIALS
    else:
        credentials = Credentials(bearer=bearer, api_key=api_key)
    return Caller(EDGE, credentials, peer_address(context.peer()), request_id, trace_id, timeout)


_ANONYMOUS: dict[str, Caller] = {}


def _anonymous(peer: str | None) -> Caller:
    """The caller of a call with no credentials, ids or deadline: one per connection, kept.

    Shared by that connection's calls, which is safe because nothing after the edge
    changes a Caller (the HTTP and SOAP edges fill in their own before dispatching).
    """
    key = peer or ""
    caller = _ANONYMOUS.get(key)
    if caller is None:
        if len(_ANONYMOUS) >= 4096:  # one entry per connection: keep it bounded
            _ANONYMOUS.clear()
        caller = _ANONYMOUS[key] = Caller(EDGE, NO_CREDENTIALS, peer_address(peer))
    return caller
