"""The message broker on RabbitMQ: ``queues.broker = amqp://…`` (aio-pika).

    polyport serve app:svc --broker 'amqp://guest:guest@127.0.0.1:5672/?prefix=shop'

The URL is aio-pika's (``amqps://`` for TLS, the vhost as its path, its own
query options such as ``heartbeat``), plus polyport's options:

==================  =========  ==================================================
``prefix``          polyport   starts every queue and exchange name
``partitions``      8          partitions of the keyed messages of each queue
``queue_type``      (server)   ``quorum`` (RabbitMQ 3.10+, the default there) or
                               ``classic`` (durable classic queues)
==================  =========  ==================================================

How each guarantee of the :class:`~polyport.core.broker.Broker` port is kept
on RabbitMQ (``docs/queues.md`` has the same, for operators):

* **Durable sends.** Persistent messages in durable (quorum) queues, each
  send returning once RabbitMQ *confirmed* it (publisher confirms), and
  ``mandatory``: a message no queue takes is an error. A connection lost, a
  nack, a return: Unavailable, never a silent loss.
* **Deduplication within the window** (:mod:`.idlog`): a stream per queue
  keeps a record of every send; every node follows it. An id a node has read
  (or sent) within the window is refused; two sends of one id on two nodes
  within milliseconds may both be stored, and then consumers drop the copy
  the log names second — unless one received it before reading the first.
* **Leases** (:mod:`.held`): RabbitMQ redelivers what a node held at once
  when its connection closes (SIGKILL: immediately, better than a lease); a
  node that holds a message past its lease gives it back itself, and its later
  settlement answers False; ``extend`` renews.
* **Attempts**: a copy carries the runs that failed before it
  (``x-polyport-attempts``); quorum queues count their returns
  (``x-delivery-count``: a lost lease, a dead node), so a delivery's attempt is
  1 + the two. A retry or a release stores a copy with the right count and
  acknowledges the original, so a release is not counted. On classic queues
  RabbitMQ counts nothing: any number of returns counts as one.
* **Delays** (:mod:`.layout`, :mod:`.topology`): without the delayed-message
  plugin, a delay is rounded up to 0.1 s and spelled in binary; the message
  passes through the delay level of each set bit — level *k* a queue whose
  messages all wait 2^k ticks, so none waits behind a longer one — and is
  dead-lettered (at least once, on quorum queues) to the next, then to the
  queue. A retry keeps the body and headers and adds the error and the count.
* **Ordering keys** (:mod:`.partitions`): keyed messages go to partition
  ``crc32(key) % partitions``; a node takes a partition's messages one at a
  time, holding its lock (an exclusive queue RabbitMQ deletes with the
  node's connection); retries and delays keep their place at the partition's
  head. A key's messages run one at a time, in order, across nodes; a
  partition's other keys wait with them.
* **Request and reply**: a call's ``reply-to`` and ``correlation-id`` are
  AMQP's ``reply_to`` and ``correlation_id``; a node's reply queue (a
  ``temporary`` queue) is exclusive to its connection, gone when it stops or
  dies; a reply to a queue that is gone is NotFound.
* **Dead letters, redrive, peek, stats, purge** (:mod:`.operations`): with
  AMQP only (no management plugin). *In flight* in the stats is this node's;
  a purge deletes what is ready and what this node holds.
* **Reconnection** (:mod:`.connection`): a lost connection is made again
  with backoff; meanwhile sends raise Unavailable and what was held comes
  back to the queues (RabbitMQ returns it), settlements of it answer False.
"""

from __future__ import annotations

from polyport.backends.rabbitmq.layout import valid_prefix
from polyport.core.broker import Broker
from polyport.core.errors import ConfigError, MissingExtra
from polyport.engines import redacted

#: polyport's options in the URL's query; the rest are aio-pika's.
OPTIONS = ("prefix", "partitions", "queue_type")


def build(url: str, options: dict[str, str], *, owner: str, poll_interval: float) -> Broker:
    """The RabbitMQ broker at ``url`` (an ``amqp://`` or ``amqps://`` URL without its query;
    ``options`` is the query): MissingExtra without aio-pika, ConfigError for bad options."""
    try:
        import aio_pika  # noqa: F401  (the driver, checked before anything is built)
    except ImportError as exc:
        if exc.name and exc.name.split(".")[0] in ("aio_pika", "aiormq", "pamqp"):
            raise MissingExtra("rabbitmq", "the RabbitMQ broker") from exc
        raise
    from urllib.parse import urlencode

    from polyport.backends.rabbitmq.rabbitbroker import RabbitBroker

    where = f"queues.broker {redacted(url)!r}"
    prefix = options.get("prefix", "polyport")
    if not valid_prefix(prefix):
        raise ConfigError(f"{where}: prefix must be 1-100 letters, digits, '_', '-' or '.'")
    try:
        partitions = int(options.get("partitions", "8"))
    except ValueError:
        partitions = 0
    if not 1 <= partitions <= 256:
        raise ConfigError(f"{where}: partitions must be a whole number from 1 to 256")
    queue_type = options.get("queue_type")
    if queue_type not in (None, "quorum", "classic"):
        raise ConfigError(f"{where}: queue_type must be 'quorum' or 'classic'")
    rest = {key: value for key, value in options.items() if key not in OPTIONS}
    full = f"{url}?{urlencode(rest)}" if rest else url
    return RabbitBroker(
        full,
        prefix=prefix,
        partitions=partitions,
        queue_type=queue_type,
        owner=owner,
        poll_interval=poll_interval,
    )


__all__ = ["build"]
