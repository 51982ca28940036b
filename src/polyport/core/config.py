"""Node configuration: defaults, then a TOML file, then ``POLYPORT_*`` variables, then flags.

Nested settings are reached with ``__`` in variable names, for example
``POLYPORT_RATE_LIMIT__RATE=50`` or ``POLYPORT_AUTH__JWT__HS256_SECRET=…``.
Values that look like JSON (lists, objects, numbers, booleans) are parsed as JSON.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

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


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ApiKeyConfig(_Section):
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


class JwtConfig(_Section):
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


class AuthConfig(_Section):
    api_keys: list[ApiKeyConfig] = []
    jwt: JwtConfig | None = None
    #: Secret for short-lived tickets (``POST /auth/ticket``); random per process
    #: when unset, which is fine for one node (several nodes need the same one).
    ticket_secret: SecretStr | None = Field(default=None, min_length=32)
    ticket_ttl: float = Field(default=60.0, gt=0, le=3600)


class RateLimitConfig(_Section):
    """A token bucket per principal: ``rate`` requests per second, bursts of ``burst``."""

    enabled: bool = True
    rate: float = Field(default=100.0, gt=0)
    burst: int = Field(default=200, ge=1)


class HistoryConfig(_Section):
    """How much event history each channel keeps."""

    max_events: int = Field(default=1000, ge=1)
    max_age: float = Field(default=86400.0, gt=0)


class LimitsConfig(_Section):
    max_body: int = Field(default=1024 * 1024, ge=1024)
    long_poll_max: float = Field(default=25.0, ge=0, le=3600)
    poll_max_events: int = Field(default=1000, ge=1)
    subscriber_buffer: int = Field(default=1000, ge=1)
    #: …and at most this many bytes of event data; a subscriber over either
    #: bound drops its buffer and catches up from the log.
    subscriber_buffer_bytes: int = Field(default=8 * 1024 * 1024, ge=64 * 1024)


class ServerConfig(_Section):
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


class WebSocketConfig(_Section):
    """The WebSocket edge: keep-alive and limits per connection."""

    ping_interval: float = Field(default=25.0, gt=0, le=3600)
    ping_timeout: float = Field(default=8.0, gt=0, le=3600)
    max_message: int = Field(default=64 * 1024, ge=1024)
    max_subscriptions: int = Field(default=64, ge=1)
    send_buffer: int = Field(default=256 * 1024, ge=4096)
    stall_timeout: float = Field(default=5.0, gt=0, le=3600)


class SseConfig(_Section):
    """The Server-Sent Events edge."""

    heartbeat: float = Field(default=15.0, gt=0, le=3600)
    send_buffer: int = Field(default=256 * 1024, ge=4096)
    stall_timeout: float = Field(default=5.0, gt=0, le=3600)


class JsonRpcConfig(_Section):
    """JSON-RPC 2.0 over HTTP and WebSocket."""

    max_batch: int = Field(default=100, ge=1, le=10_000)


class XmlConfig(_Section):
    """Limits of the XML edges (XML-RPC, SOAP): parsing is hardened whatever these say."""

    max_depth: int = Field(default=64, ge=4, le=1000)
    max_elements: int = Field(default=100_000, ge=10)


class GrpcConfig(_Section):
    """The gRPC edge: its own HTTP/2 port."""

    enabled: bool = True
    host: str | None = None  # None: the node's host
    #: 0: any free port. When the default is taken the node serves gRPC on a free
    #: port and says so; a port set explicitly (file, variable) must be free.
    port: int = Field(default=50051, ge=0, le=65535)
    max_message: int = Field(default=4 * 1024 * 1024, ge=1024)


class GraphQLConfig(_Section):
    """The GraphQL edge."""

    introspection: bool = True
    #: graphql-transport-ws: seconds a client has to send ``connection_init`` (then 4408).
    connection_init_timeout: float = Field(default=3.0, gt=0, le=3600)
    #: graphql-transport-ws: operations running at once on one connection.
    max_subscriptions: int = Field(default=64, ge=1)
    #: Deepest selection nesting accepted (fields inside fields).
    max_depth: int = Field(default=12, ge=1, le=1000)
    #: Highest cost: one per field, multiplied by the page size of the lists around it.
    max_cost: int = Field(default=10_000, ge=1)
    #: Most aliases in one document.
    max_aliases: int = Field(default=30, ge=1)
    #: Most lexical tokens in one document, comments included (counted before parsing).
    max_tokens: int = Field(default=5_000, ge=100)
    #: Longest document, in characters (checked before anything else is done with it).
    max_length: int = Field(default=100_000, ge=1_000)
    #: Most fields in one document: as written, and again with every fragment expanded
    #: where it is spread, over all its operations (``__typename`` counts too).
    max_fields: int = Field(default=1_000, ge=1)
    #: Most selections (fields, fragment spreads, inline fragments) in one selection set.
    max_selections: int = Field(default=200, ge=1)
    #: Most directives in one document.
    max_directives: int = Field(default=50, ge=0)
    #: Work graphql-core's field-merging check (OverlappingFieldsCanBeMerged, quadratic
    #: by nature) may spend on one document, in its units: two per pair of fields compared.
    max_merge_work: int = Field(default=50_000, ge=1_000)
    #: Highest estimated size of a document's introspection answer (``__schema``,
    #: ``__type``). None: twice what the standard introspection query costs on this schema.
    max_introspection_cost: int | None = Field(default=None, ge=1)
    #: Most values (scalars, lists and objects, nested ones included) in one request's variables.
    max_variable_values: int = Field(default=5_000, ge=1)
    #: Seconds one request may take before it is answered with a TIMEOUT error.
    timeout: float = Field(default=30.0, gt=0, le=3600)
    #: Parsed, validated and planned documents kept (by text and by persisted hash),
    #: and as many refused documents (by the SHA-256 of their text).
    document_cache: int = Field(default=1_000, ge=1)


#: Svix's schedule: the delay before each attempt after the previous one failed.
DEFAULT_RETRY_SCHEDULE = [0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0]


class WebhooksConfig(_Section):
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


class HooksConfig(_Section):
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


class JobsConfig(_Section):
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


class MetricsConfig(_Section):
    """``GET /metrics``, Prometheus text: calls, latencies and subscribers per edge and method."""

    #: Anyone may read the metrics, without credentials (a scraper on a private network).
    public: bool = False
    #: Otherwise a caller needs this scope (``*`` holds every scope; development mode's
    #: anonymous caller holds ``*``). A scraper sends its API key as a bearer token.
    scope: str = Field(default="metrics", min_length=1)


class LogConfig(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "text"] = "json"
    access: bool = False


class Settings(_Section):
    """Everything a node can be configured with (see ``docs/configuration.md``)."""

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
    websocket: WebSocketConfig = WebSocketConfig()
    sse: SseConfig = SseConfig()
    jsonrpc: JsonRpcConfig = JsonRpcConfig()
    xml: XmlConfig = XmlConfig()
    grpc: GrpcConfig = GrpcConfig()
    graphql: GraphQLConfig = GraphQLConfig()
    webhooks: WebhooksConfig = WebhooksConfig()
    hooks: HooksConfig = HooksConfig()
    metrics: MetricsConfig = MetricsConfig()
    log: LogConfig = LogConfig()


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


def load_settings(
    file: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    base: Mapping[str, Any] | None = None,
) -> Settings:
    """Settings from ``base`` < ``file`` (TOML) < environment < ``overrides``.

    Raises :class:`ConfigError` with one line naming the bad value and its source.
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
        return Settings.model_validate(data)
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
