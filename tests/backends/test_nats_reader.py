"""A follower's reads on the NATS event log: a node's tail, a few messages behind, reads
without asking for the stream's state, and gets what a checked read gets.

On a NATS server, with a log of the test's own (deleted afterwards).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from tests.conftest import require_service

from polyport.backends.nats import NatsEventLog, eventlog
from polyport.backends.nats.reader import SEQ_WINDOW
from polyport.core.eventlog import History, ReadResult
from polyport.core.events import Pattern

pytestmark = [pytest.mark.services, pytest.mark.timeout(30)]

URL = "nats://127.0.0.1:4222"


@pytest.fixture
async def log() -> AsyncIterator[NatsEventLog]:
    """A log of its own, counting the times it asks for the stream's state."""
    require_service("NATS", 4222)
    name = f"pptest-{uuid.uuid4().hex[:12]}"
    opened = NatsEventLog(URL, History(max_events=100_000, max_age=3600), name=name)
    await opened.open()
    api = opened.client.api
    opened.infos = 0  # type: ignore[attr-defined]

    async def counted(call: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        if call.startswith("STREAM.INFO."):
            opened.infos += 1  # type: ignore[attr-defined]
        return await api(call, body)

    opened.client.api = counted  # type: ignore[method-assign]
    yield opened
    await opened.close()
    import nats
    from nats.js.errors import NotFoundError

    nc = await nats.connect(URL)
    try:
        for stream in (name, f"KV_{name}-meta"):
            with contextlib.suppress(NotFoundError):
                await nc.jetstream().delete_stream(stream)
    finally:
        await nc.close()


def _same(a: ReadResult, b: ReadResult) -> None:
    assert [e.id for e in a.events] == [e.id for e in b.events]
    assert a.last_seq == b.last_seq


async def test_a_follower_reads_the_new_messages_without_the_streams_state(
    log: NatsEventLog,
) -> None:
    """Just after the stream was seen, an unchecked read a few messages behind asks no
    STREAM.INFO and gets what a checked read gets: matching events, up to the head."""
    await log.append("a", "t", b"0", 1.0)
    after = await log.head()
    for i in range(5):
        await log.append_many([("a", "t", b"%d" % i), ("b", "t", b"%d" % i)], 1.0)
    patterns = [Pattern.parse("a")]
    checked = await log.read(patterns, after, 100)
    infos = log.infos  # type: ignore[attr-defined]
    _same(await log.read(patterns, after, 100, check=False), checked)
    assert log.infos == infos  # type: ignore[attr-defined]
    assert checked.last_seq == await log.head()
    page = await log.read(patterns, after, 3, check=False)  # a full page ends at its last
    _same(page, await log.read(patterns, after, 3))


async def test_a_follower_reads_past_deleted_messages(log: NatsEventLog) -> None:
    """Messages deleted between (a channel's trim) leave holes in the stream's sequence: a
    follower's read goes past them, to what follows."""
    after = await log.head()
    for i in range(6):
        await log.append("gone", "t", b"%d" % i, 1.0)
        await log.append("kept", "t", b"%d" % i, 1.0)
    await log.client.api(
        f"STREAM.PURGE.{log.stream}",
        {"filter": log.subjects.subject("gone"), "seq": (await log.head() >> 10) + 1},
    )
    await log.head()  # seen lately
    patterns = [Pattern.parse("#")]
    result = await log.read(patterns, after, 100, check=False)
    assert [e.data for e in result.events] == [b"%d" % i for i in range(6)]
    _same(result, await log.read(patterns, after, 100))


async def test_a_follower_far_behind_or_not_checked_lately_reads_by_the_head(
    log: NatsEventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More than a window of messages behind, or with the stream not seen lately, an
    unchecked read asks for the stream's state, and reads as a checked read does."""
    after = await log.head()
    for i in range(SEQ_WINDOW + 5):
        await log.append("a", "t", b"%d" % i, 1.0)
    patterns = [Pattern.parse("a")]
    checked = await log.read(patterns, after, 1000)
    infos = log.infos  # type: ignore[attr-defined]
    _same(await log.read(patterns, after, 1000, check=False), checked)
    assert log.infos == infos + 1  # type: ignore[attr-defined]
    monkeypatch.setattr(eventlog, "CHECK_EVERY", 0.0)
    near = checked.events[-3].seq
    _same(await log.read(patterns, near, 10, check=False), await log.read(patterns, near, 10))
    assert log.infos == infos + 3  # type: ignore[attr-defined]
