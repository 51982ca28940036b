"""Script calls gathered into pipelines: many callers of one node, one connection at a time.

A node's workers call their backend concurrently (a worker acks each item of
its claim at once, say). Each call on a connection of its own costs a round
trip and a connection from redis-py's pool, which is bounded (redis-py 8 makes
at most 100 and then raises, which would read as Redis being unavailable). So
a :class:`ScriptPipeline` sends a call at once when nothing is in flight, and
otherwise gathers the calls made meanwhile and sends them all as one pipeline
when the round trip in flight returns, as the event log gathers its appends.
Each call still returns only once its own reply arrived. The price: a slow
call (a claim of many large payloads) delays the calls made behind it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from polyport.backends.redis.client import Script, connect, engine_errors
from polyport.core.errors import Unavailable

if TYPE_CHECKING:
    from redis.asyncio import Redis

_Args = tuple[str | bytes | int, ...]
#: A script, its number of keys, its keys and arguments, and the caller's future.
_Call = tuple[Script, int, _Args, "asyncio.Future[Any]"]


class ScriptPipeline:
    """Runs scripts on ``client``, at most one round trip in flight: the calls made while
    one is pending go together in the next, as a pipeline (not a transaction: each
    script is atomic on its own). Failures of Redis raise Unavailable naming ``what``."""

    def __init__(self, client: Redis, what: str) -> None:
        self._client = client
        self._what = what
        self._busy = False
        self._waiting: list[_Call] = []
        self._sending: set[asyncio.Task[None]] = set()

    async def __call__(self, script: Script, numkeys: int, *args: str | bytes | int) -> Any:
        """Run ``script`` with ``numkeys`` keys first in ``args``; its reply."""
        if not self._busy:
            self._busy = True
            try:
                with engine_errors(self._what):
                    return await script(self._client, numkeys, *args)
            finally:
                self._send_next()
        # A call cancelled while it waits is never sent (see _send_next); once sent, it
        # runs whatever happens to its caller, as a call on the wire would.
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.append((script, numkeys, args, future))
        return await future

    async def wait_idle(self) -> None:
        """Wait until every call made so far has its reply (before the client closes)."""
        while self._sending:  # each pipeline may start the next
            await asyncio.gather(*self._sending, return_exceptions=True)

    def _send_next(self) -> None:
        """The round trip in flight is over: send what gathered meanwhile, or go idle."""
        calls = [call for call in self._waiting if not call[3].done()]
        self._waiting = []
        if not calls:
            self._busy = False
            return
        task = asyncio.get_running_loop().create_task(self._send(calls))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, calls: list[_Call]) -> None:
        try:
            replies = await self._execute(calls)
        except BaseException as exc:
            error = exc if isinstance(exc, Exception) else Unavailable(f"{self._what}: cancelled")
            for *_, future in calls:
                if not future.done():
                    future.set_exception(error)
            if not isinstance(exc, Exception):
                raise
        else:
            for (*_, future), reply in zip(calls, replies, strict=True):
                if future.done():
                    continue
                if isinstance(reply, Exception):
                    future.set_exception(self._translated(reply))
                else:
                    future.set_result(reply)
        finally:
            self._send_next()

    async def _execute(self, calls: list[_Call]) -> list[Any]:
        """Each call's reply or error; a script Redis forgot is loaded and its calls sent
        again (refused by SHA1, they ran nothing), after the others: calls of one pipeline
        come from callers running concurrently, so no order among them is promised."""
        from redis.exceptions import NoScriptError

        with engine_errors(self._what):
            replies = await self._pipeline([call[:3] for call in calls])
            again = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
            if again:
                for script in {calls[i][0].sha: calls[i][0] for i in again}.values():
                    await self._client.script_load(script.source)
                retried = await self._pipeline([calls[i][:3] for i in again])
                for i, reply in zip(again, retried, strict=True):
                    replies[i] = reply
        return replies

    async def _pipeline(self, calls: list[tuple[Script, int, _Args]]) -> list[Any]:
        pipe = self._client.pipeline(transaction=False)
        for script, numkeys, args in calls:
            pipe.evalsha(script.sha, numkeys, *args)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies

    def _translated(self, error: Exception) -> Exception:
        """One call's error as a direct call would have raised it."""
        try:
            with engine_errors(self._what):
                raise error
        except Exception as exc:
            return exc


class ScriptedClient:
    """A store's Redis client and its scripts: made from a URL (then closed with the
    store) or given (then left open), its scripts loaded at each open, closed once
    every user that opened the store has closed it. What the Redis work queue, record
    store and Streams broker each hold."""

    def __init__(self, redis: str | Redis, what: str, scripts: Sequence[Script]) -> None:
        self._owned = isinstance(redis, str)
        self.client: Redis = connect(redis) if isinstance(redis, str) else redis
        #: The store's script calls, gathered into pipelines.
        self.calls = ScriptPipeline(self.client, what)
        self._what = what
        self._scripts = scripts
        self._opens = 0

    async def open(self) -> None:
        """Load the scripts into Redis (which checks that it answers). Raises Unavailable."""
        with engine_errors(self._what):
            pipe = self.client.pipeline(transaction=False)
            for script in self._scripts:
                pipe.script_load(script.source)
            await pipe.execute()
        self._opens += 1

    async def close(self) -> None:
        """Close the client made here, once every user that opened it has closed it."""
        self._opens = max(0, self._opens - 1)
        if self._opens == 0:
            await self.calls.wait_idle()
            if self._owned:
                await self.client.aclose()
