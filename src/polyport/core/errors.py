"""The protocol-neutral error hierarchy.

    PolyportError
    ├── ContractError            a service was declared wrongly (raised at start-up)
    ├── ConfigError              a configuration value is wrong (raised at start-up)
    ├── MissingExtra             an optional dependency group is not installed
    └── ServiceError             what a caller may see; each edge maps it to its wire form
        ├── InvalidArgument      the caller's fault: bad or unparseable arguments
        │   ├── PayloadTooLarge  the request body or frame is over the limit
        │   └── OutOfRange       a result its declared type cannot hold (int64 overflow)
        ├── NotFound
        ├── Conflict
        ├── Unauthenticated      no or bad credentials
        ├── PermissionDenied     good credentials, not enough scopes
        ├── RateLimited          the principal's budget is spent (retry_after)
        ├── RecoveryFailed       a resume cursor older than the history kept
        ├── DeadlineExceeded     the caller's deadline passed
        ├── Unavailable          the world's fault: try again later (retry_after)
        └── Internal             anything else; its message never leaves the process

Handlers raise these; edges translate them with one declarative table each and
never show a client the message of an exception that is not a ``ServiceError``.
"""

from __future__ import annotations

from typing import Any, ClassVar


class PolyportError(Exception):
    """Base of every error polyport raises."""


class ContractError(PolyportError):
    """A service contract is declared in a way polyport cannot serve."""


class ConfigError(PolyportError):
    """A configuration value is missing or invalid."""


class MissingExtra(PolyportError):
    """An optional dependency group is needed but not installed."""

    def __init__(self, extra: str, purpose: str) -> None:
        super().__init__(f"{purpose} needs the '{extra}' extra: pip install 'polyport[{extra}]'")
        self.extra = extra


class ServiceError(PolyportError):
    """An error a caller is allowed to see.

    ``code`` is the stable, protocol-neutral name edges put on the wire
    (WebSocket frames, GraphQL ``extensions.code``); ``details`` is an optional
    JSON-serialisable list of specifics, for instance one entry per invalid field.
    """

    code: ClassVar[str] = "INTERNAL"
    default_message: ClassVar[str] = "internal error"

    def __init__(
        self,
        message: str | None = None,
        *,
        details: list[dict[str, Any]] | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.message = message or self.default_message
        self.details = details
        self.retry_after = retry_after
        #: Set on internal errors: the id under which the cause was logged.
        self.request_id: str | None = None
        super().__init__(self.message)


class InvalidArgument(ServiceError):
    """The arguments are malformed, of the wrong type or out of range."""

    code = "INVALID_ARGUMENT"
    default_message = "invalid argument"

    def __init__(
        self,
        message: str | None = None,
        *,
        details: list[dict[str, Any]] | None = None,
        unparseable: bool = False,
    ) -> None:
        super().__init__(message, details=details)
        # The payload could not even be parsed (bad JSON, bad XML): some
        # protocols report that differently (HTTP 400 vs 422, JSON-RPC -32700).
        self.unparseable = unparseable


class PayloadTooLarge(InvalidArgument):
    """The request body or frame exceeds the configured size limit."""

    code = "PAYLOAD_TOO_LARGE"
    default_message = "payload too large"


class OutOfRange(InvalidArgument):
    """The arguments lead to a result outside the range of its declared type.

    ``multiply(2**62, 4)`` declared ``-> int``: every wire carries an ``int`` as
    a 64-bit integer, so the product cannot be answered. A kind of
    :class:`InvalidArgument` (the arguments are why), which gRPC tells apart as
    ``OUT_OF_RANGE``.
    """

    code = "OUT_OF_RANGE"
    default_message = "out of range"


class NotFound(ServiceError):
    """The addressed resource, method, job or route does not exist."""

    code = "NOT_FOUND"
    default_message = "not found"


class Conflict(ServiceError):
    """The request conflicts with the current state (duplicate, stale version)."""

    code = "CONFLICT"
    default_message = "conflict"


class Unauthenticated(ServiceError):
    """Credentials are missing, malformed, expired or unknown.

    ``invalid_token`` is True when credentials were given but rejected (as
    opposed to absent), which HTTP reports in ``WWW-Authenticate``.
    """

    code = "UNAUTHENTICATED"
    default_message = "authentication required"

    def __init__(self, message: str | None = None, *, invalid_token: bool = False) -> None:
        super().__init__(message)
        self.invalid_token = invalid_token


class PermissionDenied(ServiceError):
    """The principal is known but lacks a scope the operation requires."""

    code = "PERMISSION_DENIED"
    default_message = "permission denied"


class RateLimited(ServiceError):
    """The principal has spent its request budget; ``retry_after`` says when to return."""

    code = "RATE_LIMITED"
    default_message = "rate limit exceeded"


class RecoveryFailed(ServiceError):
    """A resume cursor points before the history the log still holds.

    ``earliest`` is the oldest cursor still resumable and ``latest`` the
    current end, so a client can choose between a gap and a reload.
    """

    code = "RECOVERY_FAILED"
    default_message = "history no longer holds the requested position"

    def __init__(
        self, message: str | None = None, *, earliest: str | None = None, latest: str | None = None
    ) -> None:
        super().__init__(message)
        self.earliest = earliest
        self.latest = latest


class DeadlineExceeded(ServiceError):
    """The caller's deadline passed before the handler finished."""

    code = "DEADLINE_EXCEEDED"
    default_message = "deadline exceeded"


class Unavailable(ServiceError):
    """A dependency is down or the node is overloaded; retrying later may work."""

    code = "UNAVAILABLE"
    default_message = "service unavailable"


class Internal(ServiceError):
    """An unexpected failure; the original exception is logged, never sent."""

    code = "INTERNAL"
    default_message = "internal error"
