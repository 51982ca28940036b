"""Core errors as XML-RPC faults: the codes of the fault-code interoperability
convention (-32700 …) for protocol errors, and the design's table for the rest."""

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
    """No method of that name (-32601)."""


FAULT_CODES: tuple[tuple[type[ServiceError], int], ...] = (
    (MethodNotFound, METHOD_NOT_FOUND),
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


def fault_code(error: ServiceError) -> int:
    if isinstance(error, InvalidArgument) and error.unparseable:
        return PARSE_ERROR
    return next((code for cls, code in FAULT_CODES if isinstance(error, cls)), INTERNAL_ERROR)


def fault_string(error: ServiceError) -> str:
    """``CODE: message`` so a client sees the protocol-neutral code too."""
    return f"{error.code}: {error.message}"
