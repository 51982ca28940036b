"""The MQTT error table: core errors → MQTT 5 reason codes and MQTT 3.1.1 CONNACK codes.

MQTT 3.1.1 has no way to refuse a PUBLISH but to close the connection, and
a SUBACK has one failure code (0x80) for every refusal; MQTT 5 says which.
An internal error's message never leaves the process.
"""

from __future__ import annotations

from polyport.core.errors import (
    InvalidArgument,
    NotFound,
    PermissionDenied,
    RateLimited,
    ServiceError,
    Unauthenticated,
    Unavailable,
)
from polyport.edges.mqtt.packets import ConnectReturn, Reason

#: Most specific first: the first class an error is an instance of decides.
REASONS: tuple[tuple[type[ServiceError], Reason], ...] = (
    (InvalidArgument, Reason.PAYLOAD_FORMAT_INVALID),
    (NotFound, Reason.TOPIC_NAME_INVALID),
    (Unauthenticated, Reason.NOT_AUTHORIZED),
    (PermissionDenied, Reason.NOT_AUTHORIZED),
    (RateLimited, Reason.QUOTA_EXCEEDED),
    (Unavailable, Reason.IMPLEMENTATION_SPECIFIC_ERROR),
)

#: A refused CONNECT, per MQTT version: (MQTT 5 reason, MQTT 3.1.1 return code).
CONNECT_REFUSALS: tuple[tuple[type[ServiceError], Reason, ConnectReturn], ...] = (
    (Unauthenticated, Reason.BAD_USER_NAME_OR_PASSWORD, ConnectReturn.BAD_USER_NAME_OR_PASSWORD),
    (PermissionDenied, Reason.NOT_AUTHORIZED, ConnectReturn.NOT_AUTHORIZED),
    (RateLimited, Reason.QUOTA_EXCEEDED, ConnectReturn.SERVER_UNAVAILABLE),
    (Unavailable, Reason.SERVER_UNAVAILABLE, ConnectReturn.SERVER_UNAVAILABLE),
)


def reason_of(error: ServiceError) -> Reason:
    """The MQTT 5 reason code of a refused PUBLISH or SUBSCRIBE."""
    for kind, reason in REASONS:
        if isinstance(error, kind):
            return reason
    return Reason.UNSPECIFIED_ERROR


def connect_refusal(error: ServiceError) -> tuple[Reason, ConnectReturn]:
    """How a CONNECT is refused for ``error``, in MQTT 5 and in MQTT 3.1.1."""
    for kind, reason, code in CONNECT_REFUSALS:
        if isinstance(error, kind):
            return reason, code
    return Reason.UNSPECIFIED_ERROR, ConnectReturn.SERVER_UNAVAILABLE


def message_of(error: ServiceError) -> str:
    """What a reason string may say: a client error's message, never an internal one."""
    if isinstance(error, InvalidArgument) and error.details:
        first = error.details[0]
        if isinstance(first, dict) and "message" in first:
            where = first.get("field")
            return f"{where}: {first['message']}" if where else str(first["message"])
    return error.message if type(error).code != "INTERNAL" else "internal error"
