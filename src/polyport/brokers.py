"""Message brokers by URL: where a node's queues live when not in its work queue.

    polyport serve app:svc --broker amqp://guest:guest@127.0.0.1:5672/
    POLYPORT_QUEUES__BROKER=nats://127.0.0.1:4222 polyport serve app:svc

Unset (the default), a node's queues are queues of its work queue — the
SQLite file, or the engine's (see :mod:`polyport.core.queuebroker`). A
broker URL puts them on that broker instead, in its own native form, so
clients polyport did not write can produce and consume them (see
``docs/queues.md``). Like the engines, each broker is a module of its backend
package (``broker.py``), imported only when used, with
``build(url, options, *, owner, poll_interval) -> Broker``.

==============================  ===========================================
``queues.broker``               the queues are
==============================  ===========================================
unset                           queues of the node's work queue
``amqp://…``, ``amqps://…``     RabbitMQ queues (aio-pika)
``redis://…``, ``rediss://…``   Redis Streams with consumer groups
``nats://…``                    NATS JetStream work-queue streams
==============================  ===========================================
"""

from __future__ import annotations

import importlib
from typing import Protocol, cast
from urllib.parse import parse_qs, urlsplit, urlunsplit

from polyport.core.broker import Broker
from polyport.core.errors import ConfigError
from polyport.engines import redacted

#: Every broker a node can send to and consume from, by URL scheme: its module.
BROKERS: dict[str, str] = {
    "amqp": "polyport.backends.rabbitmq.broker",
    "amqps": "polyport.backends.rabbitmq.broker",
    "redis": "polyport.backends.redis.broker",
    "rediss": "polyport.backends.redis.broker",
    "nats": "polyport.backends.nats.broker",
}


#: What each scheme's broker is called where a node says where its queues live.
BROKER_NAMES: dict[str, str] = {
    "amqp": "RabbitMQ",
    "amqps": "RabbitMQ",
    "redis": "Redis Streams",
    "rediss": "Redis Streams",
    "nats": "NATS JetStream",
}


class BrokerModule(Protocol):
    """A broker backend's ``broker.py``."""

    def build(
        self, url: str, options: dict[str, str], *, owner: str, poll_interval: float
    ) -> Broker:
        """From the URL without its query and the query's options: the broker."""
        ...


def scheme_of(url: str) -> str:
    """The broker a URL names, or a one-line :class:`ConfigError` listing the known ones."""
    scheme = urlsplit(url).scheme.lower()
    if scheme not in BROKERS:
        known = ", ".join(f"{name}://" for name in BROKERS)
        raise ConfigError(f"queues.broker {redacted(url)!r}: unknown scheme; use one of {known}")
    return scheme


def describe(url: str) -> str:
    """Where a broker URL puts the queues, for the banner: ``RabbitMQ amqp://u:***@host/``."""
    scheme = urlsplit(url).scheme.lower()
    return f"{BROKER_NAMES.get(scheme, scheme)} {redacted(url)}"


def build_broker(url: str, *, owner: str, poll_interval: float) -> Broker:
    """The broker at ``url``; :class:`ConfigError` for a URL it cannot read, and
    :class:`~polyport.core.errors.MissingExtra` when its driver is not installed."""
    scheme = scheme_of(url)
    parts = urlsplit(url)
    options = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    base = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    try:
        module = cast(BrokerModule, importlib.import_module(BROKERS[scheme]))
    except ModuleNotFoundError as exc:
        if exc.name is not None and exc.name.startswith("polyport."):
            raise ConfigError(
                f"queues.broker {redacted(url)!r}: this polyport has no {scheme}:// broker yet"
            ) from None
        raise
    return module.build(base, options, owner=owner, poll_interval=poll_interval)


__all__ = ["BROKERS", "BROKER_NAMES", "build_broker", "describe", "scheme_of"]
