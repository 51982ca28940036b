"""Untyped events: bytes as a device sent them, under a topic prefix or on every topic.

    shop.event("legacy.raw", RawMessage, channel="legacy/#", publish_scopes=["devices"])

An untyped event type's channel template ends in ``#`` (``legacy/#``, or
``#`` for every channel). Its events carry a :class:`RawMessage`: the payload
as ``text`` when it is UTF-8, else as ``base64``, and what MQTT 5 said of it
(content type, payload format, user properties, response topic, correlation
data). Every pattern sees that JSON object as the event's ``data``, e.g.
``{"text": "21.5"}``; the MQTT edge sends the bytes back as they came.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator


class RawMessage(BaseModel):
    """An untyped event's data: a payload of bytes (``text`` or ``base64``) and its metadata."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: The payload, when it is UTF-8 (an empty payload is ``""``).
    text: str | None = None
    #: The payload in standard base64, when it is not UTF-8.
    base64: str | None = None
    content_type: str | None = None
    #: MQTT 5 Payload Format Indicator as the publisher gave it (1: UTF-8).
    payload_format: Literal[0, 1] | None = None
    #: MQTT 5 User Properties, in order, each ``[name, value]``.
    user_properties: list[list[str]] | None = None
    response_topic: str | None = None
    #: MQTT 5 Correlation Data, in standard base64.
    correlation_data: str | None = None
    #: The QoS it was published at over MQTT (it is delivered at no more than this).
    qos: Literal[0, 1, 2] | None = None
    #: Published as a retained message (MQTT's RETAIN 1).
    retain: Literal[True] | None = None
    #: MQTT 5 Message Expiry Interval, in seconds from the event's time: not delivered
    #: over MQTT after that.
    expiry: int | None = Field(default=None, ge=0, le=0xFFFFFFFF)

    @model_validator(mode="after")
    def _one_payload(self) -> RawMessage:
        if (self.text is None) == (self.base64 is None):
            raise ValueError("give the payload as exactly one of 'text' and 'base64'")
        if any(len(pair) != 2 for pair in self.user_properties or ()):
            raise ValueError("each of 'user_properties' is [name, value]")
        if self.base64 is not None:
            _b64(self.base64, "base64")
        if self.correlation_data is not None:
            _b64(self.correlation_data, "correlation_data")
        return self

    @classmethod
    def of(cls, payload: bytes, **metadata: Any) -> RawMessage:
        """The message for ``payload``: ``text`` if it is UTF-8, else ``base64``."""
        try:
            return cls(text=payload.decode("utf-8"), **metadata)
        except UnicodeDecodeError:
            return cls(base64=base64.b64encode(payload).decode("ascii"), **metadata)

    @property
    def payload(self) -> bytes:
        """The bytes as they were published."""
        if self.text is not None:
            return self.text.encode("utf-8")
        return base64.b64decode(self.base64 or "")

    @property
    def correlation(self) -> bytes | None:
        """The correlation data as bytes."""
        return None if self.correlation_data is None else base64.b64decode(self.correlation_data)

    def to_json(self) -> bytes:
        """The event data as JSON, without the fields that are not set."""
        return orjson.dumps(self.model_dump(exclude_none=True))


def _b64(value: str, name: str) -> None:
    try:
        base64.b64decode(value, validate=True)
    except binascii.Error:
        raise ValueError(f"{name!r} is not standard base64") from None


def is_untyped(model: object) -> bool:
    """Whether an event type's model makes it untyped."""
    return model is RawMessage
