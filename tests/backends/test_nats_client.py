"""The NATS client's replies: one timer gives up on every unanswered request, answers taken
later by a handler, and what a closing connection does to requests still awaited."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from tests.conftest import require_service

from polyport.backends.nats.client import JetStreamClient
from polyport.core.errors import Unavailable

pytestmark = [pytest.mark.services, pytest.mark.timeout(30)]

URL = "nats://127.0.0.1:4222"


@pytest.fixture
async def client() -> AsyncIterator[JetStreamClient]:
    """A client with a short timeout, and a subject of the test's own that never answers."""
    require_service("NATS", 4222)
    opened = JetStreamClient(URL, timeout=0.3)
    await opened.connect("polyport test")
    yield opened
    await opened.close()


@pytest.fixture
async def silent(client: JetStreamClient) -> AsyncIterator[str]:
    """A subject someone listens on (so no "no responders" status) but never answers."""
    subject = f"pptest.silent.{uuid.uuid4().hex}"
    sub = await client.conn.subscribe(subject)
    yield subject
    if client.connected:  # a test may have closed the client
        await sub.unsubscribe()


@pytest.fixture
async def echo(client: JetStreamClient) -> AsyncIterator[str]:
    """A subject whose listener answers every request with its payload."""
    subject = f"pptest.echo.{uuid.uuid4().hex}"

    async def answer(msg: object) -> None:
        await client.conn.publish(msg.reply, msg.data)  # type: ignore[attr-defined]

    sub = await client.conn.subscribe(subject, cb=answer)
    yield subject
    await sub.unsubscribe()


async def test_requests_are_answered_and_unanswered_ones_time_out(
    client: JetStreamClient, silent: str, echo: str
) -> None:
    """Each of many requests gets its own answer; those nobody answers are Unavailable
    after about the timeout, all of them (one timer for every request)."""
    answers = await client.request_many([(echo, b"%d" % n, None) for n in range(50)])
    assert [msg.data for msg in answers] == [b"%d" % n for n in range(50)]
    started = time.monotonic()
    results = await asyncio.gather(
        *(client.request(silent, b"x") for _ in range(20)), return_exceptions=True
    )
    assert all(isinstance(result, Unavailable) for result in results)
    assert 0.25 <= time.monotonic() - started < 3.0
    # Answered or given up, nothing is left waiting.
    assert not client._answers
    assert (await client.request(echo, b"after")).data == b"after"


async def test_a_request_on_a_subject_of_two_tokens_times_out_as_unavailable(
    client: JetStreamClient,
) -> None:
    """The error names what did not answer, even for a subject too short to name a
    JetStream call (a queue's own subject: ``{prefix}.{queue}``)."""
    subject = f"pptest-{uuid.uuid4().hex}.q"
    sub = await client.conn.subscribe(subject)
    try:
        with pytest.raises(Unavailable, match="did not answer"):
            await client.request(subject, b"x")
    finally:
        await sub.unsubscribe()


async def test_an_answer_later_goes_to_its_handler_and_one_never_given_is_forgotten(
    client: JetStreamClient, silent: str, echo: str
) -> None:
    """``answer_later``: the sender goes on; the handler takes the answer when it comes, and
    an answer that never comes is dropped after the timeout without a word."""
    got: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def take(msg: object) -> None:
        got.set_result(msg.data)  # type: ignore[attr-defined]

    await client.send(echo, b"later", client.answer_later(take))
    assert await asyncio.wait_for(got, 5) == b"later"

    async def never(msg: object) -> None:
        raise AssertionError("no answer was sent")

    await client.send(silent, b"x", client.answer_later(never))
    await asyncio.sleep(0.5)
    await client.request(echo, b"tick")  # a new request forgets what was given up
    assert not client._answers


async def test_closing_fails_the_requests_still_awaited(
    client: JetStreamClient, silent: str
) -> None:
    """A request awaiting its answer when the connection closes is Unavailable at once,
    not left waiting for an answer that cannot come."""
    client.timeout = 30.0
    waiting = asyncio.ensure_future(client.request(silent, b"x"))
    await asyncio.sleep(0.1)
    await client.close()
    with pytest.raises(Unavailable):
        await asyncio.wait_for(waiting, 2)
