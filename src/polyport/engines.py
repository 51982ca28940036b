"""Engines by URL: where a node keeps the event log its subscribers read, alone or shared.

    polyport serve app:svc --engine redis://127.0.0.1:6379/0
    POLYPORT_ENGINE=postgresql://app@db.internal/app?schema=shop polyport serve app:svc

Like the edges, each engine is a ``"module:function"`` imported only when
used, so a missing driver only matters to the node that asks for it (and says
which extra to install). What each engine holds today:

============================  =====================================  =======
``engine``                    event log (and bus, for shared logs)    shared
============================  =====================================  =======
unset, or ``sqlite:///FILE``  SQLite file (``database``)              no
``memory://``                 this process's memory                   no
``postgresql://…``            PostgreSQL (``?schema=``, ``polyport``)  yes
``redis://…``                 Redis Streams (``?prefix=``)            yes
``nats://…``                  NATS JetStream (``?name=``)             yes
============================  =====================================  =======

Jobs, webhook subscriptions and deliveries, and the receivers' inbox stay in
the node's SQLite file (``database``) whatever the engine: on a shared engine
they are not yet shared between nodes, and the node says so at start.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit, urlunsplit

from polyport.core.bus import Bus
from polyport.core.errors import ConfigError
from polyport.core.eventlog import EventLog, History
from polyport.settings import Settings

#: Every engine a node can run on, by URL scheme, imported only when used.
ENGINES: dict[str, str] = {
    "postgresql": "polyport.backends.postgresql.engine:event_log",
    "postgres": "polyport.backends.postgresql.engine:event_log",
    "redis": "polyport.backends.redis.engine:event_log",
    "rediss": "polyport.backends.redis.engine:event_log",
    "nats": "polyport.backends.nats.engine:event_log",
}
#: The schemes of the embedded engines, which the node builds itself.
EMBEDDED = ("sqlite", "memory")


@dataclass(frozen=True, slots=True)
class SharedLog:
    """What a shared engine gives a node: the log, the bus that wakes its other nodes."""

    log: EventLog
    bus: Bus
    #: How the banner names it: the URL without a password.
    where: str


#: A shared engine's maker, in its backend package: from the URL without its query,
#: the query's options and the history each channel keeps, the log and its bus.
Maker = Callable[[str, dict[str, str], History], tuple[EventLog, Bus]]


def scheme_of(url: str) -> str:
    """The engine a URL names, or a one-line :class:`ConfigError` listing the known ones."""
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ENGINES and scheme not in EMBEDDED:
        known = ", ".join(f"{name}://" for name in (*EMBEDDED, "postgresql", "redis", "nats"))
        raise ConfigError(f"engine {redacted(url)!r}: unknown scheme; use one of {known}")
    return scheme


def embedded(settings: Settings) -> Settings:
    """Settings with an embedded ``engine`` read into ``database`` and ``event_log``."""
    url = settings.engine
    if url is None:
        return settings
    scheme = scheme_of(url)
    if scheme == "memory":
        return settings.model_copy(update={"event_log": "memory"})
    if scheme == "sqlite":
        path = urlsplit(url).path
        # sqlite:///relative/file and sqlite:////absolute/file, as SQLAlchemy spells them.
        path = path[1:] if path.startswith("/") else path
        if not path:
            raise ConfigError(f"engine {url!r}: name the file, as sqlite:///polyport.sqlite3")
        return settings.model_copy(update={"database": path, "event_log": "sqlite"})
    return settings


def shared_log(url: str, history: History) -> SharedLog:
    """The log and bus of a shared engine (PostgreSQL, Redis, NATS) at ``url``.

    Raises :class:`ConfigError` for a URL it cannot read, and
    :class:`~polyport.core.errors.MissingExtra` when the engine's driver is
    not installed.
    """
    scheme = scheme_of(url)
    if scheme in EMBEDDED:
        raise ConfigError(f"engine {url!r} is embedded, not shared")
    parts = urlsplit(url)
    options = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    base = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    module_name, _, attribute = ENGINES[scheme].partition(":")
    maker: Maker = getattr(importlib.import_module(module_name), attribute)
    log, bus = maker(base, options, history)
    return SharedLog(log, bus, redacted(url))


def redacted(url: str) -> str:
    """``url`` without its password, for logs and the banner."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username}:***@{host}" if parts.username else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


__all__ = ["ENGINES", "SharedLog", "embedded", "redacted", "scheme_of", "shared_log"]
