"""Core errors as GraphQL errors: the design's table, and the edge's own request errors.

A field error is ``{"message", "locations", "path", "extensions": {"code", …}}``.
``extensions.code`` follows DESIGN.md's table; an internal error says only
"internal error" and the request id it was logged under.

Request errors (the document cannot be parsed, validated, or is over a
limit) have no ``path`` and no ``data`` beside them, and set the HTTP status
of GraphQL over HTTP (``status``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from graphql import GraphQLError

from polyport.core.errors import (
    Conflict,
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    RateLimited,
    RecoveryFailed,
    ServiceError,
    Unauthenticated,
    Unavailable,
)

#: core error → ``extensions.code`` (the most specific class first; anything else: INTERNAL).
CODES: tuple[tuple[type[ServiceError], str], ...] = (
    (InvalidArgument, "BAD_USER_INPUT"),
    (NotFound, "NOT_FOUND"),
    (Conflict, "CONFLICT"),
    (Unauthenticated, "UNAUTHENTICATED"),
    (PermissionDenied, "FORBIDDEN"),
    (RateLimited, "RATE_LIMITED"),
    (RecoveryFailed, "RECOVERY_FAILED"),
    (DeadlineExceeded, "DEADLINE_EXCEEDED"),
    (Unavailable, "UNAVAILABLE"),
)

# The edge's own codes, for what goes wrong before anything is called.
PARSE_FAILED = "GRAPHQL_PARSE_FAILED"
VALIDATION_FAILED = "GRAPHQL_VALIDATION_FAILED"
TOO_MANY_TOKENS = "TOO_MANY_TOKENS"
TOO_DEEP = "QUERY_TOO_DEEP"
TOO_COSTLY = "QUERY_TOO_COSTLY"
TIMEOUT = "TIMEOUT"
TOO_MANY_ALIASES = "TOO_MANY_ALIASES"
TOO_MANY_FIELDS = "TOO_MANY_FIELDS"
TOO_MANY_DIRECTIVES = "TOO_MANY_DIRECTIVES"
TOO_COMPLEX = "QUERY_TOO_COMPLEX"
VARIABLES_TOO_LARGE = "VARIABLES_TOO_LARGE"
BAD_REQUEST = "BAD_REQUEST"
OPERATION_NOT_FOUND = "OPERATION_RESOLUTION_FAILURE"
PERSISTED_QUERY_NOT_FOUND = "PERSISTED_QUERY_NOT_FOUND"
PERSISTED_QUERY_MISMATCH = "PERSISTED_QUERY_HASH_MISMATCH"
BAD_USER_INPUT = "BAD_USER_INPUT"

Location = tuple[int, int]

#: Longest message taken from graphql-core: its messages quote names from the document,
#: and a refusal is kept (by the document's hash) as well as sent.
MAX_MESSAGE = 1000


def code_of(error: ServiceError) -> str:
    for cls, code in CODES:
        if isinstance(error, cls):
            return code
    return "INTERNAL"


def field_error(
    error: ServiceError,
    path: Sequence[str | int] | None,
    locations: Sequence[Location] = (),
) -> dict[str, Any]:
    """The GraphQL error object for a core error raised while resolving a field."""
    extensions: dict[str, Any] = {"code": code_of(error)}
    if error.details:
        extensions["details"] = error.details
    if error.retry_after is not None:
        extensions["retryAfter"] = round(error.retry_after, 3)
    if error.request_id:
        extensions["requestId"] = error.request_id
    if isinstance(error, RecoveryFailed):
        extensions["earliest"] = error.earliest
        extensions["latest"] = error.latest
    out: dict[str, Any] = {"message": error.message}
    if locations:
        out["locations"] = [{"line": line, "column": column} for line, column in locations]
    if path is not None:
        out["path"] = list(path)
    out["extensions"] = extensions
    return out


class RequestError(Exception):
    """The request cannot be executed at all: a GraphQL response without ``data``."""

    def __init__(self, errors: list[dict[str, Any]], status: int = 400) -> None:
        super().__init__(errors[0]["message"] if errors else "request error")
        self.errors = errors
        self.status = status


def request_error(
    message: str,
    code: str,
    status: int = 400,
    locations: Sequence[Location] = (),
    **extensions: Any,
) -> RequestError:
    error: dict[str, Any] = {"message": message}
    if locations:
        error["locations"] = [{"line": line, "column": column} for line, column in locations]
    error["extensions"] = {"code": code, **extensions}
    return RequestError([error], status)


def from_graphql_errors(errors: Sequence[GraphQLError], code: str, status: int) -> RequestError:
    """graphql-core's errors (syntax, validation, variables) with our ``extensions.code``."""
    out = []
    for error in errors:
        message = error.message
        if len(message) > MAX_MESSAGE:
            message = message[: MAX_MESSAGE - 3] + "..."
        formatted: dict[str, Any] = {"message": message}
        if error.locations:
            formatted["locations"] = [
                {"line": loc.line, "column": loc.column} for loc in error.locations
            ]
        own = dict(error.extensions or {})
        formatted["extensions"] = {"code": own.pop("code", code), **own}
        out.append(formatted)
    return RequestError(out, status)
