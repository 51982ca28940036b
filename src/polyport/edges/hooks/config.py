"""The webhook receivers' settings: ``[hooks]``, ``POLYPORT_HOOKS__…``."""

from __future__ import annotations

from pydantic import Field, SecretStr

from polyport.core.config import Section


class HooksConfig(Section):
    """Inbound webhook receivers at ``/hooks/{name}`` (see ``docs/webhook-receivers.md``)."""

    #: Largest body a receiver accepts; more is refused with 413 before reading it all
    #: (``limits.max_body`` still caps every request).
    max_body: int = Field(default=1024 * 1024, ge=1024)
    #: How far a signed timestamp may be from now, in seconds (replay protection).
    tolerance: float = Field(default=300.0, gt=0, le=86400)
    #: Signing secrets by receiver name, for verifiers declared without one.
    secrets: dict[str, SecretStr] = {}
    #: Handlers running at once on a node, over all receivers.
    concurrency: int = Field(default=4, ge=1, le=1000)
    #: A handler still running after this many seconds has failed (and is retried).
    timeout: float = Field(default=30.0, gt=0, le=86400)
    #: First retry delay in seconds; it doubles with each failure (with jitter)...
    retry_base: float = Field(default=1.0, gt=0, le=86400)
    #: ...up to this many seconds.
    retry_max: float = Field(default=3600.0, gt=0, le=7 * 86400)
    #: How long processed and dead deliveries are kept: the window in which a
    #: duplicate delivery id is recognised.
    retention: float = Field(default=7 * 86400.0, ge=60)
    #: How often a node looks for due work it was not told about (another node's).
    poll_interval: float = Field(default=1.0, gt=0, le=3600)
    #: How long a stopping node lets running handlers finish before cancelling them.
    shutdown_grace: float = Field(default=10.0, ge=0, le=3600)
