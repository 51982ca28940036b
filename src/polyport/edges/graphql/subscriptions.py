"""Subscriptions: event types and server streams, each item projected through the plan.

An event-type field subscribes to the hub (``channel`` pattern, ``after``
cursor: the same resume rules as every push edge); a ``@service.stream``
field opens the method's stream. Each event or item becomes one execution
result by the same plan as queries (relations included, batched per item).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from graphql.execution.values import VariableValues

from polyport.core.context import Principal
from polyport.core.dispatch import Caller
from polyport.core.errors import InvalidArgument
from polyport.core.events import Event, Pattern, parse_patterns
from polyport.core.hub import Subscription as HubSubscription
from polyport.core.streamcall import StreamCall
from polyport.edges.graphql.plan import FieldPlan, OperationPlan
from polyport.edges.graphql.projection import map_enum
from polyport.edges.graphql.runner import ExecutionResult

if TYPE_CHECKING:
    from polyport.edges.graphql.execute import GraphQLRunner, Request


class Subscriptions:
    """Starts subscription operations for a runner."""

    def __init__(self, runner: GraphQLRunner) -> None:
        self.runner = runner
        #: (event, subscription field) → its result, shared by the subscribers of one event
        self._shared: dict[tuple[int, int], tuple[Any, ExecutionResult]] = {}
        #: (subscription field, first event, length) → a burst's results, shared likewise
        self._bursts: dict[
            tuple[int, int, int], tuple[FieldPlan, list[Event], list[ExecutionResult]]
        ] = {}

    async def start(
        self,
        plan: OperationPlan,
        variables: VariableValues | None,
        principal: Principal,
        caller: Caller,
    ) -> AsyncIterator[ExecutionResult]:
        field = plan.fields[0]
        source = field.source
        assert source is not None
        request = self.runner.new_request(principal, caller, variables)
        args = self.runner.arguments(field, request)
        dispatcher = self.runner.dispatcher
        if source.kind == "event":
            assert source.event is not None
            event = source.event.event
            channel = args.get("channel") or event.channel_pattern
            patterns = parse_patterns([channel])
            own = Pattern.parse(event.channel_pattern)
            if not all(p.overlaps(own) for p in patterns):
                raise InvalidArgument(f"{channel[:100]!r} is not a channel of {event.name}")
            types = frozenset({event.name})
            # The request was authenticated and charged once, before its document was read.
            dispatcher.admit_subscribe(patterns, caller, principal=principal, types=types)
            after = args.get("after") or "now"
            subscription = await self.runner.hub.subscribe(patterns, after=after, types=types)
            return EventResults(self, subscription, field, request)
        if source.kind == "stream":
            assert source.binding is not None
            items = await dispatcher.open_stream(source.binding, args, caller, principal=principal)
            return self._items(items, field, request)
        raise InvalidArgument(f"{field.name} is not a subscription field")

    async def result(self, event: Event, field: FieldPlan, request: Request) -> ExecutionResult:
        """One event through ``field``'s selection, shared by every subscriber who may share it."""
        shared = self._shared
        key = (id(event), id(field))
        hit = shared.get(key)
        if hit is not None and hit[0] is event:
            return hit[1]
        result = await self.runner.result_of(event.to_dict(), field, request)
        if field.sync and "errors" not in result:
            # Nothing below depends on who asks (no relation to authorize): every
            # subscriber of this document gets this very object, which the
            # transport then encodes once. An event wakes all of them in one loop
            # iteration; the entries live until the next.
            if not shared:
                asyncio.get_running_loop().call_soon(shared.clear)
            elif len(shared) >= 10_000:
                shared.clear()
            shared[key] = (event, result)
        return result

    async def results(
        self, events: list[Event], field: FieldPlan, request: Request
    ) -> list[ExecutionResult]:
        """A burst of events through ``field``'s selection, one result per event.

        The subscribers of one document read the same burst in the same loop
        iteration; when its results may be shared (see :meth:`result`) the
        first of them builds the list and the others get that very list (which
        nobody mutates), so a burst costs them no step per event here and one
        encoding in the transport.
        """
        if len(events) == 1:  # events one by one: the common case, its shared result inline
            event = events[0]
            shared = self._shared.get((id(event), id(field)))
            if shared is not None and shared[0] is event:
                return [shared[1]]
            return [await self.result(event, field, request)]
        bursts = self._bursts
        key = (id(field), id(events[0]), len(events))
        hit = bursts.get(key)
        # Events compare by identity: the same objects, in the same order.
        if hit is not None and hit[0] is field and hit[1] == events:
            return hit[2]
        results = [await self.result(event, field, request) for event in events]
        if field.sync and not any("errors" in result for result in results):
            if not bursts:
                asyncio.get_running_loop().call_soon(bursts.clear)
            elif len(bursts) >= 1_000:
                bursts.clear()
            bursts[key] = (field, events, results)  # holds the key's objects alive
        return results

    async def _items(
        self, items: StreamCall, field: FieldPlan, request: Request
    ) -> AsyncIterator[ExecutionResult]:
        """The stream's items through ``field``'s selection; the stream is closed at the end."""
        source = field.source
        assert source is not None and source.binding is not None
        binding = source.binding
        try:
            async for item in items:
                value = binding.dump_python(item)
                if source.enum is not None:
                    value = map_enum(value, source.enum)
                yield await self.runner.result_of(value, field, request)
        finally:
            await items.aclose()


class EventResults:
    """An event-type subscription's results, one by one or a burst at a time.

    ``batch()`` hands over every event the hub holds for this subscriber at
    once (as the WebSocket edge reads it), so a burst costs one wake-up per
    subscriber, not one per event; iterating works too. ``aclose()`` ends the
    hub subscription.
    """

    def __init__(
        self, owner: Subscriptions, source: HubSubscription, field: FieldPlan, request: Request
    ) -> None:
        self._owner = owner
        self._source = source
        self._field = field
        self._request = request
        self._pending: collections.deque[ExecutionResult] = collections.deque()

    def __aiter__(self) -> EventResults:
        return self

    async def __anext__(self) -> ExecutionResult:
        if not self._pending:
            self._pending.extend(await self.batch())
            if not self._pending:
                raise StopAsyncIteration
        return self._pending.popleft()

    async def batch(self) -> list[ExecutionResult]:
        """The next results: at least one, or none once the subscription has ended.

        The list may be the one other subscribers of the same burst get: read it only.
        """
        if self._pending:
            ready = list(self._pending)
            self._pending.clear()
            return ready
        events = await self._source.batch()
        if not events:
            return []
        return await self._owner.results(events, self._field, self._request)

    async def aclose(self) -> None:
        self._source.close()


__all__ = ["EventResults", "Subscriptions"]
