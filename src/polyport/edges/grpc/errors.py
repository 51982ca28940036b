"""The gRPC error table: core errors → status codes, with google.rpc details.

Every error carries a ``google.rpc.Status`` in the ``grpc-status-details-bin``
trailer (what ``grpc_status.rpc_status.from_call`` reads), holding:

* ``ErrorInfo`` — ``reason`` is the core error code (``NOT_FOUND``,
  ``RECOVERY_FAILED``, …), ``domain`` is ``polyport``, ``metadata`` the
  specifics (``request_id`` of an internal error, ``earliest``/``latest`` of a
  failed recovery);
* ``BadRequest`` — one field violation per invalid argument, for
  ``INVALID_ARGUMENT``;
* ``RetryInfo`` — when the error says when to retry (rate limits, unavailability).

An internal error's own message never leaves the process: the client sees
"internal error" and the request id under which it was logged.
"""

from __future__ import annotations

import math
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from polyport.core.errors import (
    Conflict,
    DeadlineExceeded,
    Internal,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PayloadTooLarge,
    PermissionDenied,
    RateLimited,
    RecoveryFailed,
    ServiceError,
    Unauthenticated,
    Unavailable,
)

DOMAIN = "polyport"
DETAILS_KEY = "grpc-status-details-bin"

#: Most specific first: the first class an error is an instance of decides.
STATUS: tuple[tuple[type[ServiceError], grpc.StatusCode], ...] = (
    (PayloadTooLarge, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (OutOfRange, grpc.StatusCode.OUT_OF_RANGE),
    (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (Conflict, grpc.StatusCode.ALREADY_EXISTS),
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (RateLimited, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (RecoveryFailed, grpc.StatusCode.OUT_OF_RANGE),
    (DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
    (Unavailable, grpc.StatusCode.UNAVAILABLE),
    (Internal, grpc.StatusCode.INTERNAL),
)


def status_code(error: ServiceError) -> grpc.StatusCode:
    for cls, code in STATUS:
        if isinstance(error, cls):
            return code
    return grpc.StatusCode.INTERNAL


def _packed(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def rich_status(error: ServiceError) -> tuple[grpc.StatusCode, str, status_pb2.Status]:
    """The status code, message and ``google.rpc.Status`` for ``error``."""
    code = status_code(error)
    internal = code is grpc.StatusCode.INTERNAL
    message = "internal error" if internal else error.message
    metadata: dict[str, str] = {}
    if error.request_id is not None:
        metadata["request_id"] = error.request_id
    if isinstance(error, RecoveryFailed):
        metadata.update(
            {k: v for k, v in (("earliest", error.earliest), ("latest", error.latest)) if v}
        )
    details = [
        _packed(
            error_details_pb2.ErrorInfo(
                reason="INTERNAL" if internal else error.code, domain=DOMAIN, metadata=metadata
            )
        )
    ]
    if isinstance(error, InvalidArgument) and error.details:
        violations = [
            error_details_pb2.BadRequest.FieldViolation(
                field=str(d.get("field", "")),
                description=str(d.get("message", "")),
                reason=str(d.get("type", "")),
            )
            for d in error.details
        ]
        details.append(_packed(error_details_pb2.BadRequest(field_violations=violations)))
    if error.retry_after is not None and math.isfinite(error.retry_after):
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(max(0, int(error.retry_after * 1000)))
        details.append(_packed(error_details_pb2.RetryInfo(retry_delay=delay)))
    status = status_pb2.Status(code=_CODES[code], message=message, details=details)
    return code, message, status


_CODES = {code: code.value[0] for code in grpc.StatusCode}


async def abort(context: grpc.aio.ServicerContext, error: ServiceError) -> None:
    """End the call with ``error``'s status and details (raises, as ``context.abort`` does)."""
    code, message, status = rich_status(error)
    await context.abort(
        code, message, trailing_metadata=((DETAILS_KEY, status.SerializeToString()),)
    )
