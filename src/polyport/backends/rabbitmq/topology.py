"""Declaring a queue's queues, delay levels and bindings on RabbitMQ (see :mod:`.layout`).

Everything is durable. On a RabbitMQ that has them (3.10 and later) the
queues are **quorum queues** — replicated, and the only ones whose
dead-lettering (here: a delay level handing its expired messages on) is
at-least-once; before that, or with ``queue_type=classic``, classic durable
queues. Declaring is idempotent: every node declares what it uses at start,
and again after reconnecting. :func:`delete` removes what :func:`declare` made
(the tests and the bench, each under a prefix of its own, clean up with it).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from polyport.backends.rabbitmq.connection import AmqpConnection, unavailable
from polyport.backends.rabbitmq.layout import LEVELS, TICK, Layout
from polyport.core.errors import ConfigError

if TYPE_CHECKING:
    from aiormq.abc import AbstractChannel


def queue_arguments(classic: bool) -> dict[str, Any]:
    return {} if classic else {"x-queue-type": "quorum"}


def level_arguments(layout: Layout, k: int, *, classic: bool) -> dict[str, Any]:
    """Level ``k`` holds each message 2^k ticks, then hands it to the next level down."""
    arguments: dict[str, Any] = {
        **queue_arguments(classic),
        "x-message-ttl": round(TICK * 1000) << k,
        "x-dead-letter-exchange": layout.level(k - 1) if k else layout.delay_out,
    }
    if not classic:
        # Quorum queues dead-letter at least once only so (RabbitMQ 3.10+).
        arguments["x-dead-letter-strategy"] = "at-least-once"
        arguments["x-overflow"] = "reject-publish"
    return arguments


def bit_pattern(k: int, bit: str) -> str:
    """The topic pattern matching a delay key whose bit ``k`` is ``bit``."""
    return "*." * (LEVELS - 1 - k) + bit + ".#"


async def declare(connection: AmqpConnection, layout: Layout, *, classic: bool) -> None:
    """Declare every queue, exchange and binding of ``layout``; ConfigError if one of its
    queues exists with other arguments, Unavailable if RabbitMQ does not answer."""
    import aiormq

    channel = await connection.ctl()
    name = layout.main
    try:
        async with asyncio.timeout(connection.timeout * 4):
            if layout.temporary:
                # Deleted by RabbitMQ with the node's connection, even a killed node's.
                await channel.queue_declare(name, exclusive=True, durable=False)
                return
            for name in [layout.main, layout.dead]:
                await channel.queue_declare(name, durable=True, arguments=queue_arguments(classic))
            for n in range(layout.partitions):
                for name in (layout.part(n), layout.head(n)):
                    await channel.queue_declare(
                        name, durable=True, arguments=queue_arguments(classic)
                    )
            for name in layout.exchanges():
                await channel.exchange_declare(name, exchange_type="topic", durable=True)
            for k in range(LEVELS):
                name = layout.level(k)
                await channel.queue_declare(
                    name, durable=True, arguments=level_arguments(layout, k, classic=classic)
                )
                await channel.queue_bind(name, name, routing_key=bit_pattern(k, "1"))
                onward = layout.level(k - 1) if k else layout.delay_out
                await channel.exchange_bind(onward, name, routing_key=bit_pattern(k, "0"))
            await channel.queue_bind(layout.main, layout.delay_out, routing_key="#")
    except aiormq.ChannelPreconditionFailed as exc:
        raise ConfigError(
            f"RabbitMQ has {name!r} with other arguments than polyport declares "
            f"({'classic' if classic else 'quorum'} queues): {exc}; delete it, choose "
            "another prefix (?prefix=…) or queue type (?queue_type=…)"
        ) from exc
    except (aiormq.AMQPError, aiormq.ChannelInvalidStateError, TimeoutError, OSError) as exc:
        raise unavailable(f"did not declare {name}") from exc


async def delete(channel: AbstractChannel, layout: Layout) -> None:
    """Delete every durable queue, the id stream and every exchange of ``layout`` (deleting
    one that does not exist is no error); its messages go with them."""
    for name in [*layout.durable_queues(), layout.ids]:
        # Quorum queues refuse if_unused/if_empty (a connection error): a plain delete.
        await channel.queue_delete(name, if_unused=False, if_empty=False)
    for name in layout.exchanges():
        await channel.exchange_delete(name)


__all__ = ["bit_pattern", "declare", "delete", "level_arguments", "queue_arguments"]
