"""polyport: one service contract, served over every API communication pattern.

Declare a :class:`Service` once — resources, methods, streams and event types
with type hints and Pydantic models — and serve it with ``polyport serve``.
"""

from polyport._version import __version__
from polyport.core.auth import Credentials
from polyport.core.context import Context, Principal
from polyport.core.contract import EventMessage, EventType, MethodKind, Page, Resource, Service
from polyport.core.errors import (
    ConfigError,
    Conflict,
    ContractError,
    DeadlineExceeded,
    Internal,
    InvalidArgument,
    MissingExtra,
    NotFound,
    OutOfRange,
    PayloadTooLarge,
    PermissionDenied,
    PolyportError,
    RateLimited,
    RecoveryFailed,
    ServiceError,
    Unauthenticated,
    Unavailable,
)
from polyport.core.events import Event
from polyport.core.raw import RawMessage
from polyport.settings import Settings, load_settings

__all__ = [
    "ConfigError",
    "Conflict",
    "Context",
    "ContractError",
    "Credentials",
    "DeadlineExceeded",
    "Event",
    "EventMessage",
    "EventType",
    "Internal",
    "InvalidArgument",
    "MethodKind",
    "MissingExtra",
    "NotFound",
    "OutOfRange",
    "Page",
    "PayloadTooLarge",
    "PermissionDenied",
    "PolyportError",
    "Principal",
    "RateLimited",
    "RawMessage",
    "RecoveryFailed",
    "Resource",
    "Service",
    "ServiceError",
    "Settings",
    "Unauthenticated",
    "Unavailable",
    "__version__",
    "load_settings",
]
