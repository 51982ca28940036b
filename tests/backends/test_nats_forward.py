"""Forwarding on the NATS event log: a node beaten on a channel hands its appends to the
node writing it, and takes them back whenever that node cannot send them.

The wire format is checked alone; the rest on a NATS server, with logs of the test's own
(deleted afterwards) sharing one stream as nodes do.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest
from tests.conftest import require_service

from polyport.backends.nats import NatsEventLog, forward
from polyport.backends.nats.messages import Meta, stream_seq_of
from polyport.core.errors import Unavailable
from polyport.core.events import Event, Pattern

URL = "nats://127.0.0.1:4222"


def _msg(headers: dict[str, str] | None, data: bytes) -> Any:
    """What read_request looks at of a nats-py message."""
    return SimpleNamespace(headers=headers, data=data)


def test_a_forward_reads_back_as_sent() -> None:
    """A forward's channel, epoch and runs (types, times and data with newlines) come back."""
    runs = [[(1.5, "t", b'"a"')], [(2.0, "x y/z", b'"b\\n"'), (2.0, "t", b"\n{}\n")]]
    headers, payload = forward.request("c/d", "abcdefghij", runs)
    read = forward.read_request(_msg(headers, payload))
    assert read == forward.Forward("c/d", "abcdefghij", runs)


@pytest.mark.parametrize(
    ("header", "payload"),
    [
        ("c e 1", b""),  # fewer events than the header says
        ("c e 2", b"1.0 t 1\nx\n"),
        ("c e 0", b""),
        ("c e x", b"1.0 t 1\nx\n"),
        ("c/+ e 1", b"1.0 t 1\nx\n"),  # not a channel
        ("c e", b"1.0 t 1\nx\n"),
        ("c e 1", b"1.0 t 5\nx\n"),  # a size past the payload
    ],
)
def test_what_is_not_a_forward_is_ignored(header: str, payload: bytes) -> None:
    """A malformed forward reads as none (the leader drops it), never raises."""
    assert forward.read_request(_msg({forward.HEADER: header}, payload)) is None
    assert forward.read_request(_msg(None, payload)) is None


def test_an_answer_reads_back_and_a_wrong_one_is_refused() -> None:
    """Each run's outcome and the messages' headers come back; an answer that places a run
    in no message named, or answers another number of runs, is a ValueError."""
    outcomes: list[forward.Outcome] = [
        forward.Stored([(7, 2, 3), (9, 0, 1)]),
        forward.Back("no"),
        forward.Failed("x"),
    ]
    metas = [Meta(7, 10, 5, 12, 1.5), Meta(9, 15, 1, 7 << 10 | 4, 2.5)]
    read, by_seq = forward.read_answer(forward.answer(outcomes, metas), 3)
    assert read == outcomes
    assert by_seq == {7: metas[0], 9: metas[1]}
    with pytest.raises(ValueError, match="an answer for 3 runs, not 2"):
        forward.read_answer(forward.answer(outcomes, metas), 2)
    with pytest.raises(ValueError, match="placed in no message"):
        forward.read_answer(forward.answer(outcomes, metas[:1]), 3)
    for wrong in (b"", b"[]", b'{"runs": [["at", 1]], "messages": []}', b'{"runs": [["?", 1]]}'):
        with pytest.raises(ValueError, match="answer"):
            forward.read_answer(wrong, 1)


@pytest.fixture
async def name() -> AsyncIterator[str]:
    """A log name no one else uses; its stream and buckets are deleted afterwards."""
    require_service("NATS", 4222)
    base = f"pptest-{uuid.uuid4().hex[:12]}"
    yield base
    import nats
    from nats.js.errors import NotFoundError

    nc = await nats.connect(URL)
    try:
        js = nc.jetstream()
        for stream in (base, f"KV_{base}-meta"):
            with contextlib.suppress(NotFoundError):
                await js.delete_stream(stream)
    finally:
        await nc.close()


@pytest.fixture
async def nodes(name: str) -> AsyncIterator[list[NatsEventLog]]:
    """Two nodes' logs on one stream."""
    logs = [NatsEventLog(URL, name=name, timeout=2.0) for _ in "ab"]
    for log in logs:
        await log.open()
    yield logs
    for log in logs:
        await log.close()


async def _writer_of(log: NatsEventLog, event: Event) -> str | None:
    """The nonce of the node that sent the message holding ``event``."""
    msg = await log.client.direct_get(log.stream, {"seq": stream_seq_of(event.seq)})
    assert msg is not None
    return forward.writer_of(msg)


async def _beaten(a: NatsEventLog, b: NatsEventLog) -> list[Event]:
    """Have ``a`` lose a round on channel ``hot`` to ``b``: ``a`` then follows ``b``."""
    events = [await a.append("hot", "t", b"1", 1.0)]
    events.append(await b.append("hot", "t", b"2", 1.0))
    events.append(await a.append("hot", "t", b"3", 1.0))  # expected 1 as the end: beaten
    assert a._tail("hot").leader == b.writer._nonce
    return events


async def _check_stored(log: NatsEventLog, events: list[Event]) -> None:
    """The channel holds exactly ``events``, offsets gapless, as they were acknowledged."""
    stored = (await log.read([Pattern.parse("hot")], 0, 100)).events
    assert [(e.offset, e.seq, e.data) for e in stored] == [
        (e.offset, e.seq, e.data) for e in events
    ]
    assert [e.offset for e in stored] == list(range(1, len(stored) + 1))


@pytest.mark.services
async def test_a_beaten_node_forwards_its_appends_to_the_channel_writer(
    nodes: list[NatsEventLog],
) -> None:
    """After losing a round, a node's appends (singles and a call's run) are sent by the node
    that beat it, in its messages, and come back with their places."""
    a, b = nodes
    events = await _beaten(a, b)
    events.append(await a.append("hot", "t", b"4", 1.0))
    events += await a.append_many([("hot", "t", b"5"), ("hot", "t", b"6")], 2.0)
    assert [await _writer_of(a, e) for e in events[3:]] == [b.writer._nonce] * 3
    assert stream_seq_of(events[4].seq) == stream_seq_of(events[5].seq)  # one call together
    await _check_stored(b, events)
    assert a.is_next(events[3].seq, events[4].seq)  # the leader's message count is known


@pytest.mark.services
async def test_a_forward_to_a_stopped_node_is_sent_by_the_node_itself(
    nodes: list[NatsEventLog],
) -> None:
    """The leader gone (no responders), a node sends its append itself at once."""
    a, b = nodes
    events = await _beaten(a, b)
    await b.close()
    events.append(await a.append("hot", "t", b"4", 1.0))
    assert await _writer_of(a, events[-1]) == a.writer._nonce
    assert a._tail("hot").leader is None
    await _check_stored(a, events)
    await b.open()  # for the fixture to close


@pytest.mark.services
async def test_runs_the_leader_did_not_send_in_time_come_back(
    nodes: list[NatsEventLog], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A forwarded run that waited past its window in the leader's queue is taken back, not
    sent: its node sends it itself, once."""
    a, b = nodes
    events = await _beaten(a, b)
    monkeypatch.setattr(forward, "WINDOW", -1.0)  # every forwarded run is late at once
    events.append(await a.append("hot", "t", b"4", 1.0))
    assert await _writer_of(a, events[-1]) == a.writer._nonce
    await _check_stored(b, events)


@pytest.mark.services
async def test_a_node_that_forwards_refuses_forwards(nodes: list[NatsEventLog]) -> None:
    """Two nodes each taking the other for the channel's writer: each forward comes back
    (no chains, no loop) and every append is stored once, by someone."""
    a, b = nodes
    events = await _beaten(a, b)
    b._tail("hot").leader = a.writer._nonce
    first, second = await asyncio.gather(
        a.append("hot", "t", b"4", 1.0), b.append("hot", "t", b"5", 1.0)
    )
    events += sorted([first, second], key=lambda e: e.offset)
    await _check_stored(a, events)


@pytest.mark.services
async def test_a_leader_that_never_answers_fails_the_append_in_time(
    nodes: list[NatsEventLog], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A forward nobody answers is Unavailable after the window and the timeout; the node
    then sends its appends itself."""
    a, b = nodes
    await _beaten(a, b)
    monkeypatch.setattr(forward, "WINDOW", 0.1)
    silent = await a.client.conn.subscribe(forward.inbox(a.stream, "0123456789abcdef"))
    a._tail("hot").leader = "0123456789abcdef"
    try:
        async with asyncio.timeout(5):
            with pytest.raises(Unavailable):
                await a.append("hot", "t", b"lost?", 1.0)
        event = await a.append("hot", "t", b"4", 1.0)
        assert await _writer_of(a, event) == a.writer._nonce
    finally:
        await silent.unsubscribe()


@pytest.mark.services
async def test_a_malformed_forward_is_ignored(nodes: list[NatsEventLog]) -> None:
    """A message on a node's forward inbox that is no forward gets no answer and does
    not disturb the node."""
    a, b = nodes
    with pytest.raises(Unavailable):
        await a.client.request(
            forward.inbox(b.stream, b.writer._nonce), b"junk", {forward.HEADER: "hot e 9"}
        )
    events = await _beaten(a, b)
    events.append(await a.append("hot", "t", b"4", 1.0))
    await _check_stored(b, events)


@pytest.mark.services
async def test_nodes_racing_on_one_channel_end_with_one_writer(name: str) -> None:
    """Three nodes, many appends in flight each on one channel: those that lose forward to
    the winner, so messages hold several nodes' events; each acknowledged event is stored
    once, offsets are gapless, and each writer's order is kept."""
    logs = [NatsEventLog(URL, name=name) for _ in range(3)]
    for log in logs:
        await log.open()
    try:

        async def write(log: NatsEventLog, who: int, task: int) -> list[Event]:
            return [
                await log.append("hot", "t", b'"%d.%d.%d"' % (who, task, i), 1.0) for i in range(40)
            ]

        results = await asyncio.gather(
            *(write(log, who, task) for who, log in enumerate(logs) for task in range(8))
        )
        stored = (await logs[0].read([Pattern.parse("hot")], 0, 10_000)).events
        acked = [event for events in results for event in events]
        assert sorted((e.offset, e.seq, e.data) for e in acked) == [
            (e.offset, e.seq, e.data) for e in stored
        ]
        assert [e.offset for e in stored] == list(range(1, len(acked) + 1))
        for events in results:
            assert [e.offset for e in events] == sorted(e.offset for e in events)
        by_message: dict[int, set[bytes]] = {}
        for event in stored:
            by_message.setdefault(stream_seq_of(event.seq), set()).add(event.data[1:2])
        assert any(len(writers) > 1 for writers in by_message.values())  # forwarded
    finally:
        for log in logs:
            await log.close()


@pytest.mark.services
async def test_what_the_leader_answers_is_what_the_append_gets(nodes: list[NatsEventLog]) -> None:
    """A run the leader failed fails the append (Unavailable, with the leader's reason) and
    the node keeps following; an answer that is none fails it too, and the node then sends
    its appends itself."""
    a, b = nodes
    await _beaten(a, b)
    answers = [forward.answer([forward.Failed("the leader's reason")], []), b"not an answer"]

    async def leader(msg: Any) -> None:
        await a.client.publish(msg.reply, answers.pop(0))

    fake = "fedcba9876543210"
    sub = await a.client.conn.subscribe(forward.inbox(a.stream, fake), cb=leader)
    a._tail("hot").leader = fake
    try:
        with pytest.raises(Unavailable, match="the leader's reason"):
            await a.append("hot", "t", b"x", 1.0)
        assert a._tail("hot").leader == fake
        with pytest.raises(Unavailable, match="answered an append wrongly"):
            await a.append("hot", "t", b"y", 1.0)
        assert a._tail("hot").leader is None
        event = await a.append("hot", "t", b"4", 1.0)
        assert (event.offset, await _writer_of(a, event)) == (4, a.writer._nonce)
    finally:
        await sub.unsubscribe()


@pytest.mark.services
async def test_a_leader_that_stops_gives_back_what_it_had_not_sent(
    nodes: list[NatsEventLog], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The leader stops with a forwarded run still in its queue (its own message in
    flight): the run comes back, and its node sends it itself, once."""
    a, b = nodes
    events = await _beaten(a, b)
    gate = asyncio.Event()
    send = b.client.send
    hot = b.subjects.subject("hot")

    async def slow(subject: str, *args: Any) -> None:
        if subject == hot:  # the leader's own message, in flight (never let go)
            await gate.wait()
        await send(subject, *args)

    monkeypatch.setattr(b.client, "send", slow)
    own = asyncio.create_task(b.append("hot", "t", b"b", 1.0))
    forwarded = asyncio.create_task(a.append("hot", "t", b"4", 1.0))
    async with asyncio.timeout(5):
        while not b._tail("hot").queue:
            await asyncio.sleep(0.01)
    await b.close()
    with pytest.raises(Unavailable):
        await own
    events.append(await forwarded)
    assert await _writer_of(a, events[-1]) == a.writer._nonce
    assert a._tail("hot").leader is None
    await _check_stored(a, events)
    await b.open()  # for the fixture to close


@pytest.mark.services
async def test_appends_waiting_while_the_channels_end_is_read_fail_when_the_log_closes(
    nodes: list[NatsEventLog], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Closing the log while its writer reads a channel's end (before a round) fails the
    appends queued for it, rather than leaving their callers waiting."""
    a, _ = nodes
    gate = asyncio.Event()

    async def stuck(tail: Any) -> None:
        await gate.wait()

    monkeypatch.setattr(a.writer, "refresh", stuck)
    waiting = asyncio.create_task(a.append("hot", "t", b"1", 1.0))
    async with asyncio.timeout(5):
        while a._tail("hot").sender is None:
            await asyncio.sleep(0.01)
        await a.close()
        with pytest.raises(Unavailable):
            await waiting
    await a.open()  # for the fixture to close
