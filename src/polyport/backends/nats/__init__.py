"""NATS JetStream: the event log in a stream that several nodes share.

nats-py is imported when a log opens, not here: without the ``nats`` extra,
opening raises :class:`~polyport.core.errors.MissingExtra` naming it.
"""

from polyport.backends.nats.eventlog import NatsEventLog

__all__ = ["NatsEventLog"]
