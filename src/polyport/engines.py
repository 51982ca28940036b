"""Engines by URL: where a node keeps its event log and work queue, alone or shared.

    polyport serve app:svc --engine redis://127.0.0.1:6379/0
    POLYPORT_ENGINE=postgresql://app@db.internal/app?schema=shop polyport serve app:svc

Like the edges, each shared engine is a module of its backend package
(``engine.py``) imported only when used, so a missing driver only matters to
the node that asks for it (and says which extra to install). Its
``build(url, options, history)`` gives the node four things: the event log,
its bus, the work queue that holds jobs, the receivers' inbox and webhook
deliveries, and the record store that holds webhook subscriptions (on one
connection pool where the engine has one). What each engine holds:

============================  ==========================================  =======
``engine``                    log, bus, work queue, records                shared
============================  ==========================================  =======
unset, or ``sqlite:///FILE``  SQLite file (``database``)                   no
``memory://``                 log in memory; the rest in the SQLite file   no
``postgresql://…``            PostgreSQL (``?schema=``, ``polyport``)      yes
``redis://…``                 Redis (``?prefix=``)                         yes
``nats://…``                  NATS JetStream (``?name=``)                  yes
============================  ==========================================  =======
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Protocol, cast
from urllib.parse import parse_qs, urlsplit, urlunsplit

from polyport.core.bus import Bus
from polyport.core.errors import ConfigError
from polyport.core.eventlog import EventLog, History
from polyport.core.records import RecordStore
from polyport.core.workqueue import WorkQueue
from polyport.settings import Settings

#: Every shared engine a node can run on, by URL scheme: its module, imported when used.
ENGINES: dict[str, str] = {
    "postgresql": "polyport.backends.postgresql.engine",
    "postgres": "polyport.backends.postgresql.engine",
    "redis": "polyport.backends.redis.engine",
    "rediss": "polyport.backends.redis.engine",
    "nats": "polyport.backends.nats.engine",
}
#: The schemes of the embedded engines, which the node builds itself.
EMBEDDED = ("sqlite", "memory")


@dataclass(frozen=True, slots=True)
class SharedEngine:
    """What a shared engine gives a node: the log, the bus that wakes its other nodes,
    and the work queue and records they share."""

    log: EventLog
    bus: Bus
    work_queue: WorkQueue
    records: RecordStore
    #: How the banner names it: the URL without a password.
    where: str


class EngineModule(Protocol):
    """A shared engine's ``engine.py``."""

    def build(
        self, url: str, options: dict[str, str], history: History
    ) -> tuple[EventLog, Bus, WorkQueue, RecordStore]:
        """From the URL without its query, the query's options and the history each
        channel keeps: the log, its bus, the work queue and the record store."""
        ...


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


def shared_engine(url: str, history: History) -> SharedEngine:
    """The log, bus and work queue of a shared engine (PostgreSQL, Redis, NATS) at ``url``.

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
    module = cast(EngineModule, importlib.import_module(ENGINES[scheme]))
    log, bus, work_queue, records = module.build(base, options, history)
    return SharedEngine(log, bus, work_queue, records, redacted(url))


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


__all__ = ["ENGINES", "SharedEngine", "embedded", "redacted", "scheme_of", "shared_engine"]
