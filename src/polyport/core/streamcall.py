"""A streaming call's items, with what the pipeline does around a unary handler.

:meth:`Dispatcher.open_stream <polyport.core.dispatch.Dispatcher.open_stream>`
admits and validates a streaming call and hands the edge a :class:`StreamCall`
to iterate: gRPC server and client streams, SSE, the WebSocket session's
``call`` streams and GraphQL subscriptions all read their items from one,
so a stream gets the same deadline, checks, errors and metrics on every edge.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from polyport.core.errors import DeadlineExceeded, Internal, ServiceError
from polyport.core.hub import SERVING_HUB, EventHub
from polyport.core.metrics import Metrics

if TYPE_CHECKING:
    from polyport.core.dispatch import Binding, Caller

#: Turns an exception a handler did not mean for the client into the Internal error
#: it gets, logged under a request id (the dispatcher's ``internal_error``).
InternalError = Callable[[str, BaseException, "Caller | None"], Internal]


class StreamCall:
    """The items of one streaming call; iterate it, and ``aclose()`` it when done.

    * **Deadline**: the method's ``timeout=`` and the caller's, the earlier
      winning, bound the whole stream from its admission. Past it the
      handler's generator is cancelled where it waits and the stream ends
      with :class:`DeadlineExceeded`.
    * **Items** are held to their declared type, as a unary result is
      (:class:`~polyport.core.errors.OutOfRange` for an int beyond int64).
    * **Errors**: a :class:`ServiceError` of the handler passes as it is;
      any other exception becomes :class:`Internal`, logged, its message
      never sent. After an error the handler's generator is closed.
    * **Its node**: the handler runs as ``hub``'s node (:data:`~polyport.core.hub.SERVING_HUB`)
      from each request for an item to that item, in whichever task reads the
      stream, and no further — so what it publishes goes to the node serving it.
    * **Metrics**: the call is counted once, when it ends, in
      ``polyport_calls_total`` — ``OK`` when the handler finished or the
      client ended it early, else the error's code — and its time from
      admission to the end in ``polyport_call_seconds``.
    """

    __slots__ = (
        "_binding",
        "_busy",
        "_caller",
        "_check",
        "_deadline",
        "_ended",
        "_hub",
        "_internal",
        "_items",
        "_metrics",
        "_next",
        "_orphaned",
        "_reader",
        "_started",
        "_timeout",
    )

    def __init__(
        self,
        binding: Binding,
        items: AsyncIterator[Any],
        caller: Caller,
        *,
        metrics: Metrics,
        internal: InternalError,
        started: float,
        timeout: float | None,
        hub: EventHub | None = None,
    ) -> None:
        """``started`` is the ``time.perf_counter()`` of the admission; ``timeout`` in seconds."""
        self._binding = binding
        self._check = binding.check_result
        self._items = items
        self._next = items.__anext__
        self._caller = caller
        self._metrics = metrics
        self._internal = internal
        self._started = started
        self._timeout = timeout
        self._hub = hub
        self._deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        self._ended = False
        #: An item is being awaited (by a task of the edge's, maybe not the one closing).
        self._busy = False
        #: Closed while an item was being awaited: the handler's is closed after it.
        self._orphaned = False
        self._reader = self._read()

    def __aiter__(self) -> AsyncIterator[Any]:
        # The reading generator itself: an edge's ``async for`` runs at the speed of a
        # generator, without a coroutine of this object's per item.
        return self._reader

    def __anext__(self) -> Awaitable[Any]:
        """The next item (see :meth:`_read` for what it raises)."""
        return self._reader.__anext__()

    async def _read(self) -> AsyncGenerator[Any, None]:
        """The items, one by one, until the end.

        Raises:
            DeadlineExceeded: the deadline passed before the handler's next item.
            ServiceError: the handler raised one, or an item is out of range.
            Internal: the handler failed in any other way (logged).
        """
        next_item = self._next
        check = self._check
        try:
            while True:
                self._busy = True
                serving = SERVING_HUB.set(self._hub)
                try:
                    if self._deadline is None:
                        item = await next_item()
                    else:
                        item = await self._next_in_time()
                except StopAsyncIteration:
                    self._end("OK")
                    return
                finally:
                    SERVING_HUB.reset(serving)
                    self._busy = False
                if self._orphaned:  # closed by another task while this item was on its way
                    await self._close_items()
                    return
                if check is not None:
                    check(item)
                yield item
        except ServiceError as exc:
            await self._fail(exc)
            raise
        except Exception as exc:
            error = self._internal(f"stream {self._binding.name} failed", exc, self._caller)
            await self._fail(error)
            raise error from exc

    async def _next_in_time(self) -> Any:
        deadline = self._deadline
        assert deadline is not None
        # A deadline that passed while the edge was writing the last item ends the
        # stream before the handler is asked for another.
        if asyncio.get_running_loop().time() >= deadline:
            raise self._expired()
        scope = asyncio.timeout_at(deadline)
        try:
            async with scope:
                return await self._next()
        except TimeoutError:
            if not scope.expired():
                raise  # the handler's own TimeoutError: a failure like any other
            raise self._expired() from None

    def _expired(self) -> DeadlineExceeded:
        return DeadlineExceeded(f"{self._binding.name} did not finish within {self._timeout:g} s")

    async def aclose(self) -> None:
        """End the stream (the client went away, or the edge is done): close the handler's.

        While another task awaits an item, the handler's generator is running
        and cannot be closed: that task's cancellation ends it, or, if the item
        comes, the generator is closed then.
        """
        self._end("OK")
        if self._busy:
            self._orphaned = True
            return
        await self._reader.aclose()
        await self._close_items()

    async def _fail(self, error: ServiceError) -> None:
        self._end(error.code)
        await self._close_items()

    async def _close_items(self) -> None:
        close = getattr(self._items, "aclose", None)
        if close is None:
            return
        try:
            await close()
        except Exception as exc:  # the handler's clean-up failed: log it, the stream is over
            self._internal(f"closing stream {self._binding.name} failed", exc, self._caller)

    def _end(self, code: str) -> None:
        if not self._ended:
            self._ended = True
            self._metrics.observe_call(
                self._caller.edge, self._binding.name, code, time.perf_counter() - self._started
            )


__all__ = ["InternalError", "StreamCall"]
