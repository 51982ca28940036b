"""The stream path of the dispatcher: deadlines, closing, errors and metrics of a StreamCall."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from polyport import Credentials, DeadlineExceeded, Internal, PermissionDenied, Service
from polyport.core.auth import Authenticator
from polyport.core.config import AuthConfig, RateLimitConfig
from polyport.core.dispatch import Caller, Dispatcher
from polyport.core.metrics import Metrics
from polyport.core.ratelimit import RateLimiter

#: What the handlers saw: "closed" once a generator's clean-up ran.
SEEN: list[str] = []


def make_dispatcher() -> Dispatcher:
    svc = Service("streams")

    @svc.method(public=True, timeout=0.2)
    async def ticks() -> AsyncIterator[int]:
        try:
            n = 0
            while True:
                n += 1
                yield n
                await asyncio.sleep(0.05)
        finally:
            SEEN.append("closed")

    @svc.stream(public=True)
    async def waits() -> AsyncIterator[int]:
        try:
            await asyncio.sleep(0.1)
            yield 1
            yield 2
        finally:
            SEEN.append("closed")

    @svc.stream(public=True)
    async def own_timeout() -> AsyncIterator[int]:
        yield 1
        raise TimeoutError("the handler's own, not the deadline")

    @svc.stream(scopes=["admin"])
    async def admin_only() -> AsyncIterator[int]:
        yield 1

    auth = AuthConfig.model_validate({"api_keys": [{"key": "user-key", "subject": "carol"}]})
    return Dispatcher(
        svc.spec(),
        authenticator=Authenticator(auth, dev=False),
        limiter=RateLimiter(RateLimitConfig(rate=1000, burst=1000)),
        metrics=Metrics(),
    )


ANON = Caller("test", peer="127.0.0.1")
USER = Caller("test", Credentials(api_key="user-key"), peer="127.0.0.1")


@pytest.fixture(autouse=True)
def forget() -> None:
    SEEN.clear()


async def test_a_deadline_passed_while_the_edge_wrote_ends_the_stream() -> None:
    """The edge was slow between items: the next one is DeadlineExceeded, the handler closed."""
    d = make_dispatcher()
    items = await d.open_stream(d.binding("ticks"), None, ANON)
    assert await anext(items) == 1
    await asyncio.sleep(0.25)  # past the method's 0.2 s, outside the handler
    with pytest.raises(DeadlineExceeded):
        await anext(items)
    assert SEEN == ["closed"]
    assert d.metrics.calls("test", "ticks", "DEADLINE_EXCEEDED") == 1
    await items.aclose()  # nothing more to count
    assert d.metrics.calls("test", "ticks", "OK") == 0


async def test_the_callers_timeout_wins_when_earlier() -> None:
    """Caller.timeout below the method's: the caller's deadline ends the stream."""
    d = make_dispatcher()
    caller = Caller("test", peer="127.0.0.1", timeout=0.08)
    items = await d.open_stream(d.binding("ticks"), None, caller)
    with pytest.raises(DeadlineExceeded, match=r"0\.08 s"):
        async for _ in items:
            pass


async def test_the_handlers_own_timeout_error_is_internal() -> None:
    """A TimeoutError the handler raises is its failure, not the caller's deadline."""
    d = make_dispatcher()
    items = await d.open_stream(d.binding("own_timeout"), None, ANON)
    with pytest.raises(Internal):
        async for _ in items:
            pass
    assert d.metrics.calls("test", "own_timeout", "INTERNAL") == 1


async def test_closing_while_another_task_awaits_an_item() -> None:
    """The edge closes the stream while its reader task waits (SSE does): no error, one OK,
    and the handler's generator is closed once the item it was making arrives."""
    d = make_dispatcher()
    items = await d.open_stream(d.binding("waits"), None, ANON)
    reader = asyncio.ensure_future(anext(items))
    await asyncio.sleep(0.01)
    await items.aclose()
    assert d.metrics.calls("test", "waits", "OK") == 1
    with pytest.raises(StopAsyncIteration):
        await reader
    assert SEEN == ["closed"]
    assert d.metrics.calls("test", "waits", "OK") == 1  # counted once


async def test_refusals_are_counted_and_a_given_principal_is_only_authorized() -> None:
    """open_stream counts a refusal; with the edge's principal it checks rights, no charge."""
    d = make_dispatcher()
    with pytest.raises(PermissionDenied):
        await d.open_stream(d.binding("admin_only"), None, USER)
    assert d.metrics.calls("test", "admin_only", "PERMISSION_DENIED") == 1
    principal = d.authenticate(USER)
    with pytest.raises(PermissionDenied):
        await d.open_stream(d.binding("admin_only"), None, USER, principal=principal)
    assert d.metrics.calls("test", "admin_only", "PERMISSION_DENIED") == 2
