"""Node configuration: defaults, then a TOML file, then ``POLYPORT_*`` variables, then flags.

This module declares the node's own settings and the sections the core reads
(:class:`CoreSettings`); each edge declares its section beside it
(``edges/grpc/config.py``, …), and :class:`polyport.settings.Settings`
composes them all. The core names no edge: code that holds only
:class:`CoreSettings` reaches a section by its type (:meth:`CoreSettings.section`).

Nested settings are reached with ``__`` in variable names, for example
``POLYPORT_RATE_LIMIT__RATE=50`` or ``POLYPORT_AUTH__JWT__HS256_SECRET=…``.
Values that look like JSON (lists, objects, numbers, booleans) are parsed as JSON.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from polyport.core.errors import ConfigError

ENV_PREFIX = "POLYPORT_"


class Section(BaseModel):
    """One section of the settings (``[grpc]`` in a file, ``POLYPORT_GRPC__…``): no unknown keys."""

    model_config = ConfigDict(extra="forbid")


SectionT = TypeVar("SectionT", bound=Section)


class ApiKeyConfig(Section):
    """An API key: give the key itself, or (better) its SHA-256 hex digest."""

    key: SecretStr | None = None
    key_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    subject: str
    scopes: list[str] = []

    @model_validator(mode="after")
    def _one_key(self) -> ApiKeyConfig:
        if (self.key is None) == (self.key_sha256 is None):
            raise ValueError("give exactly one of 'key' and 'key_sha256'")
        return self


class JwtConfig(Section):
    """Bearer JWTs: HS256 with a shared secret and/or RS256 with a public key."""

    hs256_secret: SecretStr | None = None
    rs256_public_key: str | None = None  # PEM text, or a path to a PEM file
    issuer: str | None = None
    audience: str | None = None
    leeway: float = Field(default=30.0, ge=0, le=3600)
    scope_claim: str = "scope"
    subject_claim: str = "sub"

    @model_validator(mode="after")
    def _some_key(self) -> JwtConfig:
        if self.hs256_secret is None and self.rs256_public_key is None:
            raise ValueError("give 'hs256_secret' or 'rs256_public_key'")
        return self


class AuthConfig(Section):
    api_keys: list[ApiKeyConfig] = []
    jwt: JwtConfig | None = None
    #: Secret for short-lived tickets (``POST /auth/ticket``); random per process
    #: when unset, which is fine for one node (several nodes need the same one).
    ticket_secret: SecretStr | None = Field(default=None, min_length=32)
    ticket_ttl: float = Field(default=60.0, gt=0, le=3600)


class RateLimitConfig(Section):
    """A token bucket per principal: ``rate`` requests per second, bursts of ``burst``."""

    enabled: bool = True
    rate: float = Field(default=100.0, gt=0)
    burst: int = Field(default=200, ge=1)


class HistoryConfig(Section):
    """How much event history each channel keeps."""

    max_events: int = Field(default=1000, ge=1)
    max_age: float = Field(default=86400.0, gt=0)


class LimitsConfig(Section):
    max_body: int = Field(default=1024 * 1024, ge=1024)
    long_poll_max: float = Field(default=25.0, ge=0, le=3600)
    poll_max_events: int = Field(default=1000, ge=1)
    subscriber_buffer: int = Field(default=1000, ge=1)
    #: …and at most this many bytes of event data; a subscriber over either
    #: bound drops its buffer and catches up from the log.
    subscriber_buffer_bytes: int = Field(default=8 * 1024 * 1024, ge=64 * 1024)


class ServerConfig(Section):
    """polyport's own HTTP/1.1 and WebSocket server: per-connection limits and timeouts.

    See ``docs/server.md`` for what each one answers and why its default.
    """

    #: Seconds an idle keep-alive connection is kept open.
    keep_alive: float = Field(default=5.0, gt=0, le=3600)
    #: Seconds a client has to finish a request's headers once it has begun them.
    header_timeout: float = Field(default=30.0, gt=0, le=3600)
    #: Seconds a request's body has to arrive once the endpoint asks for it (then 408).
    body_timeout: float = Field(default=60.0, gt=0, le=3600)
    #: Seconds a client may take none of the bytes written to it before it is
    #: aborted (nginx's send_timeout): responses, streams and WebSocket frames alike.
    send_timeout: float = Field(default=60.0, gt=0, le=3600)
    #: Longest request target (path and query) in bytes; longer is answered 414.
    max_url: int = Field(default=32 * 1024, ge=256)
    #: Most header fields in one request; more is answered 431.
    max_headers: int = Field(default=100, ge=8, le=10_000)
    #: Most bytes of request line and headers together; more is answered 431.
    max_header_bytes: int = Field(default=64 * 1024, ge=1024)
    #: Pipelined requests queued behind the one being answered before reading stops.
    max_pipelined: int = Field(default=16, ge=1, le=1024)
    #: Connections served at once; more are answered 503. Unset: the open-file limit
    #: (RLIMIT_NOFILE) less a tenth of it (at least 64), kept for the database, gRPC, logs.
    max_connections: int | None = Field(default=None, ge=1)
    #: Addresses or networks (``127.0.0.1``, ``10.0.0.0/8``, ``fd00::/8``) of the proxies
    #: in front of the node. From these peers only, the client's address is read from
    #: ``forwarded_header`` (for rate limits and logs); empty: no header is believed.
    trusted_proxies: list[str] = Field(default_factory=list, max_length=1000)
    #: The header the trusted proxies write: ``x-forwarded-for`` or ``forwarded`` (RFC
    #: 7239). Only that one is read; reading whichever is present would believe a
    #: client that sends the one its proxy does not write.
    forwarded_header: Literal["x-forwarded-for", "forwarded"] = "x-forwarded-for"

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, entries: list[str]) -> list[str]:
        for entry in entries:
            try:
                ipaddress.ip_network(entry.strip(), strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or network") from None
        return entries


class JobsConfig(Section):
    concurrency: int = Field(default=4, ge=1, le=1000)
    retention: float = Field(default=7 * 86400.0, gt=0)
    retry_after: int = Field(default=1, ge=1)
    wait_max: float = Field(default=25.0, ge=0, le=3600)
    shutdown_grace: float = Field(default=10.0, ge=0, le=3600)
    #: How long a node's claim on a running job lasts unrenewed (it renews every third
    #: of it): a job whose node died on another host counts as interrupted after this.
    lease: float = Field(default=30.0, ge=1, le=3600)
    #: How often a node looks for jobs submitted elsewhere (or whose node is gone), and
    #: how often a wait looks at a job running on another node.
    poll_interval: float = Field(default=1.0, gt=0, le=60)


class QueuesConfig(Section):
    """Message queues declared with ``shop.queue(...)`` (see ``docs/queues.md``)."""

    #: How often a consumer looks for messages it was not told about (another node's
    #: sends, retries and leases that fell due).
    poll_interval: float = Field(default=1.0, gt=0, le=60)
    #: How long a stopping node lets running handlers finish before cancelling them
    #: (their messages are given back, not counted as attempts).
    shutdown_grace: float = Field(default=10.0, ge=0, le=3600)
    #: The largest message body, in bytes, a send accepts.
    max_message: int = Field(default=256 * 1024, ge=1024, le=64 * 1024 * 1024)
    #: Where the queues live, as a URL (see ``polyport.brokers``): unset keeps them in
    #: the node's work queue; ``amqp://…`` (RabbitMQ), ``redis://…`` (Redis Streams) or
    #: ``nats://…`` (JetStream) puts them on that broker.
    broker: str | None = Field(default=None, min_length=1, max_length=2048)


class MetricsConfig(Section):
    """``GET /metrics``, Prometheus text: calls, latencies and subscribers per edge and method."""

    #: Anyone may read the metrics, without credentials (a scraper on a private network).
    public: bool = False
    #: Otherwise a caller needs this scope (``*`` holds every scope; development mode's
    #: anonymous caller holds ``*``). A scraper sends its API key as a bearer token.
    scope: str = Field(default="metrics", min_length=1)


class LogConfig(Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "text"] = "json"
    access: bool = False


class CoreSettings(Section):
    """The node's settings and the core's sections (see ``docs/configuration.md``).

    A node is configured with :class:`polyport.settings.Settings`, which adds
    each edge's own section to these.
    """

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    dev: bool = False
    database: str = "polyport.sqlite3"
    #: Where the event log lives, as a URL (see ``polyport.engines``): unset or
    #: ``sqlite:///FILE`` (the embedded default), ``memory://``, or an engine
    #: several nodes share — ``postgresql://…``, ``redis://…``, ``nats://…``.
    engine: str | None = Field(default=None, min_length=1, max_length=2048)
    #: On a shared engine, how often a node reads the log for other nodes' events
    #: when its bus has told it nothing (a lost announcement waits this long).
    engine_poll: float = Field(default=1.0, gt=0, le=60)
    #: SQLite's ``synchronous``: ``normal`` keeps every commit when the process is
    #: killed; ``full`` also when the machine loses power (an fsync per group commit).
    database_sync: Literal["normal", "full"] = "normal"
    event_log: Literal["sqlite", "memory"] = "sqlite"
    cors_origins: list[str] = []
    history: HistoryConfig = HistoryConfig()
    limits: LimitsConfig = LimitsConfig()
    server: ServerConfig = ServerConfig()
    auth: AuthConfig = AuthConfig()
    rate_limit: RateLimitConfig = RateLimitConfig()
    jobs: JobsConfig = JobsConfig()
    queues: QueuesConfig = QueuesConfig()
    metrics: MetricsConfig = MetricsConfig()
    log: LogConfig = LogConfig()

    def section(self, kind: type[SectionT]) -> SectionT:
        """The one section of type ``kind``: ``runtime.settings.section(GrpcConfig)``.

        How an edge, given settings typed as :class:`CoreSettings`, reads its own
        section without the core naming it. Raises :class:`ConfigError` when
        these settings declare no section of that type, or several.
        """
        fields = type(self).model_fields
        names = [name for name, field in fields.items() if field.annotation is kind]
        if len(names) != 1:
            found = f"{len(names)} sections" if names else "no section"
            raise ConfigError(
                f"{type(self).__name__} has {found} of type {kind.__name__}; "
                "a node is configured with polyport.Settings, which has one for every edge"
            )
        value = getattr(self, names[0])
        if not isinstance(value, kind):
            raise ConfigError(f"settings section {names[0]} is not a {kind.__name__}")
        return value


SettingsT = TypeVar("SettingsT", bound=CoreSettings)


def _parse_env_value(raw: str) -> Any:
    text = raw.strip()
    if text[:1] in "[{" or text in ("true", "false", "null") or _is_number(text):
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            return raw
    return raw


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def env_overrides(environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Nested settings from ``POLYPORT_*`` variables, and which variable set each path."""
    data: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name in ("POLYPORT_REQUIRE_SERVICES",):
            continue
        path = [part.lower() for part in name[len(ENV_PREFIX) :].split("__")]
        if not all(path):
            continue
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{name}: conflicts with another POLYPORT_ variable")
        node[path[-1]] = _parse_env_value(raw)
        sources[".".join(path)] = name
    return data, sources


def read_settings(
    model: type[SettingsT],
    file: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    base: Mapping[str, Any] | None = None,
) -> SettingsT:
    """Settings of class ``model`` from ``base`` < ``file`` (TOML) < environment < ``overrides``.

    Raises :class:`ConfigError` with one line naming the bad value and its source.
    (:func:`polyport.settings.load_settings` reads the node's full settings.)
    """
    data: dict[str, Any] = dict(base or {})
    sources: dict[str, str] = {}
    if file is not None:
        path = Path(file)
        try:
            loaded = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        data = _merge(data, loaded)
        sources.update(_paths(loaded, str(path)))
    env, env_sources = env_overrides(os.environ if environ is None else environ)
    data = _merge(data, env)
    sources.update(env_sources)
    clean_overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    data = _merge(data, clean_overrides)
    sources.update(_paths(clean_overrides, "command line"))
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        source = next(
            (src for path, src in sources.items() if where == path or where.startswith(path + ".")),
            None,
        )
        origin = f" (from {source})" if source else ""
        more = f"; and {exc.error_count() - 1} more" if exc.error_count() > 1 else ""
        raise ConfigError(f"bad config value for {where}{origin}: {first['msg']}{more}") from None


def _paths(data: Mapping[str, Any], source: str, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        out[path] = source
        if isinstance(value, Mapping):
            out.update(_paths(value, source, path + "."))
    return out
