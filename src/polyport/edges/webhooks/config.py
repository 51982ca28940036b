"""Outbound webhooks' settings: ``[webhooks]``, ``POLYPORT_WEBHOOKS__…``."""

from __future__ import annotations

import base64
import binascii
import ipaddress

from pydantic import Field, SecretStr, model_validator

from polyport.core.config import Section

#: Svix's schedule: the delay before each attempt after the previous one failed.
DEFAULT_RETRY_SCHEDULE = [0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0]


class WebhooksConfig(Section):
    """Outbound webhooks: subscriptions at ``/v{n}/webhooks``, delivered from an outbox."""

    #: Addresses or networks (``127.0.0.1``, ``10.0.0.0/8``, ``::1``) deliveries may
    #: reach although not public; everything non-public is refused otherwise.
    allow_private: list[str] = []
    #: Seconds to wait before each attempt; the first is usually 0 (at once).
    retry_schedule: list[float] = Field(
        default_factory=lambda: list(DEFAULT_RETRY_SCHEDULE), min_length=1, max_length=50
    )
    #: Each retry delay is stretched or shrunk by up to this fraction, at random.
    jitter: float = Field(default=0.2, ge=0, le=1)
    #: Longest ``Retry-After`` honoured, in seconds (a receiver cannot park a delivery forever).
    max_retry_after: float = Field(default=86400.0, ge=0)
    #: One attempt's limit: connect, send, and the whole response.
    timeout: float = Field(default=15.0, gt=0, le=300)
    #: Attempts in flight at once per endpoint.
    concurrency: int = Field(default=8, ge=1, le=1000)
    #: An endpoint failing this long (no success in between) is disabled: 5 days.
    disable_after: float = Field(default=5 * 86400.0, gt=0)
    #: After a rotation the previous secret still signs for this long.
    rotation_overlap: float = Field(default=86400.0, ge=0)
    #: Response body bytes kept in the delivery log per attempt.
    max_response_body: int = Field(default=2048, ge=0, le=1024 * 1024)
    #: How long delivered and failed deliveries (and their messages) are kept.
    retention: float = Field(default=30 * 86400.0, gt=0)
    #: How often the store is scanned for due retries and expired leases.
    poll_interval: float = Field(default=1.0, gt=0, le=60)
    #: Extra seconds a delivery lease outlives the attempt it covers.
    lease_margin: float = Field(default=10.0, gt=0, le=3600)
    #: Keys that encrypt endpoint secrets at rest (32 bytes, URL-safe base64 each): the
    #: first encrypts, every one decrypts. Empty: stored in plain text, which only
    #: development mode allows for new endpoints (see ``docs/webhooks.md``).
    secret_keys: list[SecretStr] = Field(default_factory=list, max_length=10)

    @model_validator(mode="after")
    def _check(self) -> WebhooksConfig:
        for i, key in enumerate(self.secret_keys):
            try:
                raw = base64.urlsafe_b64decode(key.get_secret_value().encode("ascii"))
            except (binascii.Error, UnicodeEncodeError, ValueError):
                raw = b""
            if len(raw) != 32:
                raise ValueError(
                    f"webhooks.secret_keys.{i}: a key is 32 random bytes in URL-safe base64 "
                    "(44 characters): python -c 'import base64, os; "
                    "print(base64.urlsafe_b64encode(os.urandom(32)).decode())'"
                )
        for entry in self.allow_private:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(
                    f"webhooks.allow_private: {entry!r} is not an IP address or network"
                ) from None
        if any(delay < 0 for delay in self.retry_schedule):
            raise ValueError("webhooks.retry_schedule: delays cannot be negative")
        return self
