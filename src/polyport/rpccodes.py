"""Core errors as the numeric codes of JSON-RPC 2.0 and XML-RPC: one table for both edges.

JSON-RPC 2.0 took its reserved codes from XML-RPC's fault-code
interoperability convention (-32700 parse error … -32603 internal error), so
one core error has one number on both wires: the JSON-RPC edge puts it in
``error.code``, the XML-RPC edge in ``faultCode``. The codes outside the
reserved range follow DESIGN.md's table (-32004 for NOT_FOUND, …):

    core error                                     code
    MethodNotFound (no method of that name)       -32601
    InvalidRequest (not a request object)         -32600
    PayloadTooLarge                                -32600
    InvalidArgument that could not be parsed       -32700
    InvalidArgument (OutOfRange too)               -32602
    NotFound                                       -32004
    Conflict                                       -32009
    Unauthenticated                                -32001
    PermissionDenied                               -32003
    RateLimited                                    -32029
    DeadlineExceeded                               -32008
    Unavailable                                    -32053
    anything else                                  -32603

The table lives beside ``xmlsafe.py``, outside both edges, because an edge
never imports another (DESIGN.md) and numbers of a wire are no business of
the core.
"""

from __future__ import annotations

from polyport.core.errors import (
    Conflict,
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    RateLimited,
    ServiceError,
    Unauthenticated,
    Unavailable,
)

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603


class MethodNotFound(NotFound):
    """No method of that name: -32601, not the -32004 of a handler's own NotFound."""

    default_message = "method not found"


class InvalidRequest(InvalidArgument):
    """The message parses but is not a request (JSON-RPC: no ``method``, a bad ``id``, …)."""

    default_message = "invalid request"


#: core error → code, the most specific class first (anything else: INTERNAL_ERROR).
CODES: tuple[tuple[type[ServiceError], int], ...] = (
    (MethodNotFound, METHOD_NOT_FOUND),
    (InvalidRequest, INVALID_REQUEST),
    # The request as a whole is refused, whatever its parameters.
    (PayloadTooLarge, INVALID_REQUEST),
    (InvalidArgument, INVALID_PARAMS),
    (NotFound, -32004),
    (Conflict, -32009),
    (Unauthenticated, -32001),
    (PermissionDenied, -32003),
    (RateLimited, -32029),
    (DeadlineExceeded, -32008),
    (Unavailable, -32053),
)


def rpc_code(error: ServiceError) -> int:
    """The JSON-RPC error code, and XML-RPC fault code, of ``error``."""
    if isinstance(error, InvalidArgument) and error.unparseable:
        return PARSE_ERROR
    for cls, code in CODES:
        if isinstance(error, cls):
            return code
    return INTERNAL_ERROR


__all__ = [
    "CODES",
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "METHOD_NOT_FOUND",
    "PARSE_ERROR",
    "InvalidRequest",
    "MethodNotFound",
    "rpc_code",
]
