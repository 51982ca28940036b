"""Persistent MQTT sessions: subscriptions and a cursor into the event log per filter.

    CONNECT (Clean Start 0) ─▶ SessionStore.take ─▶ filters resume after their seq,
                                                     unacknowledged messages sent again (DUP)
    connection ends          ─▶ SessionStore.keep  (memory, and the records store)

A session does not hold the messages a client missed while away: it holds,
for each topic filter, the position in the event log up to which that filter
delivered, and the event log holds the rest. So a client away for an hour
gets the hour's events from history, however many, and when history no
longer reaches back that far it is told (see ``docs/mqtt.md``, "Persistent
sessions").

Sessions are kept in this node's memory, which alone holds the exact packets
still unacknowledged (to send again with DUP and their packet ids), and in
the records store (:mod:`polyport.core.records`: the SQLite file, or the
shared engine), which outlives the process and is read by every node sharing
it. A record's cursor of a filter stands before its oldest unacknowledged
event, so a session resumed from the record alone (another node, after a
restart) sends those again from history, with new packet ids. The record is
the truth when a store is there: a memory copy is used only while the record
is still the version this node wrote.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field

import orjson

from polyport.core.records import RecordStore, scan_all
from polyport.edges.mqtt.outbound import Inflight
from polyport.edges.mqtt.packets import TopicSubscription

log = logging.getLogger("polyport.mqtt")

PREFIX = "mqtt/session/"


def session_key(subject: str, client_id: str) -> str:
    """The record key of a session: client ids are any UTF-8, keys are short and printable."""
    digest = hashlib.sha256(f"{subject}\0{client_id}".encode()).hexdigest()
    return PREFIX + digest


@dataclass(slots=True)
class FilterState:
    """A subscription of a session: its options and the log seq it delivered up to."""

    options: TopicSubscription
    after: int


@dataclass(slots=True)
class Session:
    """What a persistent session keeps between connections."""

    subject: str
    client_id: str
    #: Seconds the session outlives its connection (MQTT 5 Session Expiry Interval).
    expiry: int
    #: The event log's epoch the filters' seqs belong to.
    epoch: str
    filters: dict[str, FilterState] = field(default_factory=dict)
    #: Our unacknowledged PUBLISH (and PUBREL) packets, by packet id, in order.
    inflight: dict[int, Inflight] = field(default_factory=dict)
    #: QoS 2 packet ids the client sent us and has not released yet.
    received: set[int] = field(default_factory=set)
    #: When it expires (Unix seconds); set when its connection ends.
    expires: float = 0.0
    #: The version of its record this node wrote last (None: not written).
    version: int | None = None

    @property
    def key(self) -> str:
        return session_key(self.subject, self.client_id)

    def record(self) -> bytes:
        """The record: each filter's cursor before its oldest unacknowledged event."""
        oldest: dict[str, int] = {}
        for entry in self.inflight.values():
            if entry.seq and entry.seq - 1 < oldest.get(entry.source, entry.seq):
                oldest[entry.source] = entry.seq - 1
        filters = [
            [
                text,
                state.options.qos,
                state.options.no_local,
                state.options.retain_as_published,
                state.options.retain_handling,
                min(state.after, oldest.get(text, state.after)),
                state.options.subscription_id,
            ]
            for text, state in self.filters.items()
        ]
        return orjson.dumps(
            {
                "subject": self.subject,
                "client_id": self.client_id,
                "expiry": self.expiry,
                "expires": self.expires,
                "epoch": self.epoch,
                "filters": filters,
                "received": sorted(self.received),
            }
        )

    @classmethod
    def from_record(cls, value: bytes, version: int) -> Session:
        data = orjson.loads(value)
        # A record written before subscription identifiers has six fields a filter.
        filters = {
            text: FilterState(
                TopicSubscription(text, qos, nl, rap, rh, (ident or [None])[0]), after
            )
            for text, qos, nl, rap, rh, after, *ident in data["filters"]
        }
        return cls(
            data["subject"],
            data["client_id"],
            int(data["expiry"]),
            str(data["epoch"]),
            filters,
            received=set(data["received"]),
            expires=float(data["expires"]),
            version=version,
        )


class SessionStore:
    """The sessions of clients not connected now, bounded in count and in time.

    At most ``limit`` are kept in memory; keeping one more forgets the one that
    would expire first (in memory and in the records store), as if it had
    expired. A client that comes back to a forgotten session is told so:
    CONNACK's Session Present is 0.
    """

    def __init__(self, records: RecordStore | None, *, limit: int) -> None:
        self.records = records
        self.limit = limit
        self.kept: dict[str, Session] = {}

    async def open(self) -> None:
        if self.records is not None:
            await self.records.open()

    async def close(self) -> None:
        if self.records is not None:
            await self.records.close()

    async def take(self, subject: str, client_id: str, now: float) -> Session | None:
        """The session of this client to resume, if one is kept and not expired."""
        key = session_key(subject, client_id)
        kept = self.kept.pop(key, None)
        session: Session | None
        version: int | None = None
        if self.records is None:
            session = kept
        else:
            try:
                found = await self.records.get(key)
            except Exception:
                log.exception("reading MQTT session %s failed", key)
                found = None
            if found is None:
                # Ended elsewhere (a clean start on another node, expired), or never
                # written: a copy only this node has is good only if never written.
                session = kept if kept is not None and kept.version is None else None
            elif kept is not None and kept.version == found.version:
                session, version = kept, found.version
            else:
                session, version = Session.from_record(found.value, found.version), found.version
        if session is None or session.subject != subject or session.client_id != client_id:
            return None  # none, or a hash collision: not this client's
        if session.expires and session.expires <= now:
            await self._forget(key, version)
            return None
        return session

    async def write(self, session: Session, now: float) -> None:
        """Write ``session``'s record (its connection still open: expiring ``expiry``
        seconds from now, should the node stop without saying goodbye)."""
        if self.records is None:
            return
        if not session.expires:
            session.expires = now + session.expiry
            value = session.record()
            session.expires = 0.0
        else:
            value = session.record()
        try:
            session.version = await self.records.put(session.key, value)
        except Exception:
            session.version = None
            log.exception("writing MQTT session %s failed", session.key)

    async def keep(self, session: Session, now: float) -> None:
        """Keep the session of a connection that ended, until it expires."""
        session.expires = now + session.expiry
        self.kept[session.key] = session
        await self.write(session, now)
        while len(self.kept) > self.limit:
            first = min(self.kept.values(), key=lambda s: s.expires)
            del self.kept[first.key]
            log.info(
                "MQTT session of %r forgotten: more than mqtt.max_sessions are kept",
                first.client_id,
                extra={"edge": "mqtt"},
            )
            await self._forget(first.key, first.version)

    async def discard(self, subject: str, client_id: str) -> None:
        """End a session for good (a clean start)."""
        key = session_key(subject, client_id)
        self.kept.pop(key, None)
        await self._forget(key, None)

    async def sweep(self, now: float) -> int:
        """Forget expired sessions, in memory and in the records store: how many."""
        expired = [key for key, s in self.kept.items() if s.expires <= now]
        for key in expired:
            del self.kept[key]
        count = len(expired)
        if self.records is None:
            return count
        for record in await scan_all(self.records, PREFIX):
            try:
                expires = float(orjson.loads(record.value)["expires"])
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                expires = 0.0
            if expires <= now and await self.records.delete(record.key, expect=record.version):
                count += 1
        return count

    async def _forget(self, key: str, version: int | None) -> None:
        if self.records is None:
            return
        try:
            await self.records.delete(key, expect=version)
        except Exception:
            log.exception("deleting MQTT session %s failed", key)
