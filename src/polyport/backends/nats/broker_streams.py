"""A queue's three streams and its durable consumer: made, checked, made again.

Every node asks for the same streams, so making them is idempotent: a
stream that exists with the configuration asked is taken as it is; one whose
``duplicate_window`` differs (the queue's dedup window changed) is updated;
one that differs otherwise is a configuration error, never silently changed.

The durable pull consumer ``polyport`` of the queue's stream is shared by
every node: it is made by the first receive, with ``AckWait`` = that
receive's lease (see :mod:`.broker`), and taken as it is afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from polyport.backends.nats.broker_wire import QueueNames
from polyport.backends.nats.client import (
    CONSUMER_NOT_FOUND,
    STREAM_NAME_IN_USE,
    STREAM_NOT_FOUND,
    ApiError,
    JetStreamClient,
    unavailable,
)
from polyport.core.broker import QueueOptions
from polyport.core.errors import ConfigError

#: The durable consumer every node shares.
DURABLE = "polyport"
#: The dead-letter stream's dedup window: long enough for a node to finish a dead
#: letter that another began and died in the middle of.
DEAD_DEDUP = 120.0
_NS = 1_000_000_000


@dataclass(frozen=True, slots=True)
class ConsumerState:
    """The durable consumer as a node found it."""

    #: Seconds a delivery is held without an ack or progress.
    ack_wait: float
    #: Its creation time: a consumer made again restarts its counts of deliveries.
    created: str


def work_config(names: QueueNames, options: QueueOptions, replicas: int) -> dict[str, Any]:
    return {
        "name": names.stream,
        "description": f"polyport queue {names.queue}",
        "subjects": [names.subject, names.keyed + "*"],
        "retention": "workqueue",
        "storage": "file",
        "num_replicas": replicas,
        "discard": "old",
        "duplicate_window": int(options.dedup_window * _NS),
        "allow_direct": True,
    }


def dead_config(names: QueueNames, replicas: int) -> dict[str, Any]:
    return {
        "name": names.dead_stream,
        "description": f"polyport queue {names.queue}: dead letters",
        "subjects": [names.dead + "*"],
        "retention": "limits",
        "storage": "file",
        "num_replicas": replicas,
        "discard": "old",
        "duplicate_window": int(DEAD_DEDUP * _NS),
        "allow_direct": True,
    }


def lease_config(names: QueueNames, replicas: int) -> dict[str, Any]:
    return {
        "name": names.lease_stream,
        "description": f"polyport queue {names.queue}: lease records",
        "subjects": [names.lease + "*"],
        "retention": "limits",
        "storage": "file",
        "num_replicas": replicas,
        "discard": "old",
        "max_msgs_per_subject": 1,
        "allow_direct": True,
    }


#: The settings a stream must have as asked; others (limits left at their defaults)
#: are the server's to fill in.
_CHECKED = ("subjects", "retention", "max_msgs_per_subject")


class QueueStreams:
    """Makes and finds the streams and consumers of one broker's queues."""

    def __init__(self, client: JetStreamClient, replicas: int) -> None:
        self.client = client
        self.replicas = replicas

    async def api(self, call: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            return await self.client.api(call, body)
        except ApiError as exc:
            raise unavailable(exc.description) from exc

    async def declare(self, names: QueueNames, options: QueueOptions) -> None:
        for config in (
            work_config(names, options, self.replicas),
            dead_config(names, self.replicas),
            lease_config(names, self.replicas),
        ):
            await self._stream(config)

    async def _stream(self, config: dict[str, Any]) -> None:
        name = config["name"]
        try:
            await self.client.api(f"STREAM.CREATE.{name}", config)
            return
        except ApiError as exc:
            if exc.err_code != STREAM_NAME_IN_USE:
                raise unavailable(exc.description) from exc
        found: dict[str, Any] = (await self.api(f"STREAM.INFO.{name}"))["config"]
        for setting in _CHECKED:
            if found.get(setting) != config.get(setting) and setting in config:
                raise ConfigError(
                    f"the NATS stream {name} exists with {setting}={found.get(setting)!r}, "
                    f"not {config[setting]!r}: delete it, or choose another prefix"
                )
        if found.get("duplicate_window") != config["duplicate_window"]:
            await self.api(
                f"STREAM.UPDATE.{name}",
                found | {"duplicate_window": config["duplicate_window"]},
            )

    async def consumer(self, names: QueueNames, lease: float) -> tuple[ConsumerState, bool]:
        """The queue's durable consumer, made with ``AckWait`` = ``lease`` if it is missing;
        and whether this call made it."""
        made = False
        try:
            info = await self.client.api(f"CONSUMER.INFO.{names.stream}.{DURABLE}")
        except ApiError as exc:
            if exc.err_code not in (CONSUMER_NOT_FOUND, STREAM_NOT_FOUND):
                raise unavailable(exc.description) from exc
            info, made = await self._make_consumer(names, lease)
        return ConsumerState(info["config"]["ack_wait"] / _NS, str(info["created"])), made

    async def _make_consumer(self, names: QueueNames, lease: float) -> tuple[dict[str, Any], bool]:
        config = {
            "durable_name": DURABLE,
            "description": "polyport nodes",
            "deliver_policy": "all",
            "ack_policy": "explicit",
            "ack_wait": int(lease * _NS),
            # Retries, releases, delays and ordering keys all nak: attempts are counted
            # in the lease records, and JetStream must never stop delivering on its own.
            "max_deliver": -1,
            # Messages naked for a delay stay pending: no cap may starve the others.
            "max_ack_pending": -1,
            "replay_policy": "instant",
        }
        body = {"stream_name": names.stream, "config": config}
        try:
            call = f"CONSUMER.DURABLE.CREATE.{names.stream}.{DURABLE}"
            return await self.client.api(call, body), True
        except ApiError as exc:
            if exc.err_code == STREAM_NOT_FOUND:
                raise unavailable(f"has no stream {names.stream} (purged?)") from exc
            # Another node made it first, perhaps with another lease: take theirs.
            try:
                return await self.client.api(f"CONSUMER.INFO.{names.stream}.{DURABLE}"), False
            except ApiError:
                raise unavailable(exc.description) from exc

    async def counts(self, names: QueueNames) -> tuple[int, int]:
        """How many messages the queue's stream and its dead-letter stream hold."""
        work = await self.api(f"STREAM.INFO.{names.stream}")
        dead = await self.api(f"STREAM.INFO.{names.dead_stream}")
        return int(work["state"]["messages"]), int(dead["state"]["messages"])

    async def first_seq(self, names: QueueNames) -> int:
        info = await self.api(f"STREAM.INFO.{names.stream}")
        return int(info["state"]["first_seq"])

    async def missing(self, names: QueueNames) -> bool:
        """Whether any of the queue's streams is gone (purged by another node)."""
        for stream in (names.stream, names.dead_stream, names.lease_stream):
            try:
                await self.client.api(f"STREAM.INFO.{stream}")
            except ApiError as exc:
                if exc.err_code == STREAM_NOT_FOUND:
                    return True
                raise unavailable(exc.description) from exc
        return False

    async def delete(self, names: QueueNames) -> None:
        """Delete the queue's streams (and so its consumer); missing ones are no error.

        The queue's own stream goes last: deleting it ends the consumer's pending pulls,
        and the nodes they belong to make all three streams again at once."""
        for stream in (names.lease_stream, names.dead_stream, names.stream):
            try:
                await self.client.api(f"STREAM.DELETE.{stream}")
            except ApiError as exc:
                if exc.err_code != STREAM_NOT_FOUND:
                    raise unavailable(exc.description) from exc

    async def delete_message(self, stream: str, seq: int) -> bool:
        try:
            await self.client.api(f"STREAM.MSG.DELETE.{stream}", {"seq": seq, "no_erase": True})
        except ApiError as exc:
            if exc.code == 400 or exc.code == 404:  # already gone
                return False
            raise unavailable(exc.description) from exc
        return True


__all__ = ["DURABLE", "ConsumerState", "QueueStreams"]
