"""Core errors as HTTP responses: RFC 9457 ``application/problem+json``.

The one table every HTTP-based edge uses (REST, polling, jobs, …). Bodies
never carry internal messages: an :class:`~polyport.core.errors.Internal`
says only "internal error" and the request id to quote in a bug report.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

from polyport.core.errors import (
    Conflict,
    DeadlineExceeded,
    Internal,
    InvalidArgument,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    RateLimited,
    RecoveryFailed,
    ServiceError,
    Unauthenticated,
    Unavailable,
)

PROBLEM_JSON = b"application/problem+json"

# core error → (HTTP status, title); the most specific class comes first.
HTTP_STATUS: tuple[tuple[type[ServiceError], int, str], ...] = (
    (PayloadTooLarge, 413, "Payload Too Large"),
    (InvalidArgument, 422, "Unprocessable Content"),
    (NotFound, 404, "Not Found"),
    (Conflict, 409, "Conflict"),
    (Unauthenticated, 401, "Unauthorized"),
    (PermissionDenied, 403, "Forbidden"),
    (RateLimited, 429, "Too Many Requests"),
    (RecoveryFailed, 410, "Gone"),
    (DeadlineExceeded, 504, "Gateway Timeout"),
    (Unavailable, 503, "Service Unavailable"),
    (Internal, 500, "Internal Server Error"),
)

#: Every status an HTTP edge may answer with a problem, for generated documents.
PROBLEM_STATUSES = {status: title for _, status, title in HTTP_STATUS} | {
    400: "Bad Request",
    405: "Method Not Allowed",
    415: "Unsupported Media Type",
}


def status_of(error: ServiceError) -> tuple[int, str]:
    if error.code == "UNSUPPORTED_MEDIA_TYPE":
        return 415, "Unsupported Media Type"
    if isinstance(error, InvalidArgument) and error.unparseable:
        return 400, "Bad Request"
    for cls, status, title in HTTP_STATUS:
        if isinstance(error, cls):
            return status, title
    return 500, "Internal Server Error"


def problem_body(
    status: int,
    title: str,
    code: str,
    detail: str,
    *,
    instance: str | None = None,
    request_id: str | None = None,
    **members: Any,
) -> bytes:
    """An RFC 9457 problem document; ``members`` are extension members."""
    body: dict[str, Any] = {
        "type": f"urn:polyport:problem:{code.lower().replace('_', '-')}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }
    if instance:
        body["instance"] = instance
    if request_id:
        body["request_id"] = request_id
    body.update(members)
    return orjson.dumps(body)


def problem(
    error: ServiceError, *, instance: str | None = None, request_id: str | None = None
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """``(status, extra headers, body)`` for a core error."""
    status, title = status_of(error)
    members: dict[str, Any] = {}
    if error.details:
        members["errors"] = error.details
    headers: list[tuple[bytes, bytes]] = []
    if isinstance(error, RecoveryFailed):
        members["earliest"] = error.earliest
        members["latest"] = error.latest
    if isinstance(error, Unauthenticated):
        challenge = 'Bearer realm="polyport"'
        if error.invalid_token:
            description = error.message.replace('"', "'")
            challenge += f', error="invalid_token", error_description="{description}"'
        headers.append((b"www-authenticate", challenge.encode()))
    if error.retry_after is not None:
        headers.append((b"retry-after", str(max(1, math.ceil(error.retry_after))).encode()))
    code = "INVALID_ARGUMENT" if status in (400, 415) else error.code
    body = problem_body(
        status, title, code, error.message, instance=instance, request_id=request_id, **members
    )
    return status, headers, body
