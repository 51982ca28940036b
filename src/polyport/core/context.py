"""What a handler may ask for about the call it is serving.

A handler receives a :class:`Context` by declaring a parameter annotated with
it; polyport never passes protocol objects (requests, sockets) to handlers.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from polyport.core.queues import traceparent_of

if TYPE_CHECKING:
    from collections.abc import Mapping

    from polyport.core.contract import Service
    from polyport.core.queues import Queue, Sent


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a subject and the scopes granted to it.

    ``"*"`` in ``scopes`` grants everything (development mode, admin keys).
    """

    subject: str
    scopes: frozenset[str] = frozenset()
    anonymous: bool = False
    claims: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def has_scopes(self, required: frozenset[str]) -> bool:
        return "*" in self.scopes or required <= self.scopes


ANONYMOUS = Principal("anonymous", frozenset(), anonymous=True)


def new_request_id() -> str:
    return secrets.token_hex(8)


class Context:
    """The call being served: principal, request and trace ids, deadline, edge.

    Built only for handlers that ask for it, so calls that don't pay nothing.
    """

    __slots__ = ("_request_id", "_service", "deadline", "edge", "principal", "trace_id")

    def __init__(
        self,
        principal: Principal,
        edge: str,
        *,
        request_id: str | None = None,
        trace_id: str | None = None,
        deadline: float | None = None,
        service: Service | None = None,
    ) -> None:
        self.principal = principal
        self.edge = edge
        self._request_id = request_id
        self.trace_id = trace_id
        #: ``time.monotonic()`` value after which the caller no longer waits, or None.
        self.deadline = deadline
        self._service = service

    @property
    def request_id(self) -> str:
        if self._request_id is None:
            self._request_id = new_request_id()
        return self._request_id

    def remaining(self) -> float | None:
        """Seconds left before the deadline, or None when the caller set none."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.monotonic())

    async def publish(self, event: Any, data: Any = None, *, channel: str | None = None) -> Any:
        """Publish an event of this service (see :meth:`Service.publish`)."""
        if self._service is None:
            raise RuntimeError("this context is not bound to a service")
        return await self._service.publish(event, data, channel=channel)

    async def enqueue(
        self,
        queue: Queue | str,
        data: Any,
        *,
        id: str | None = None,
        key: str | None = None,
        delay: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Sent:
        """Send a message to one of this service's queues (see :meth:`Queue.send`).

        ``id`` deduplicates, ``key`` orders (one at a time per key), ``delay``
        holds it back; durable when this returns. The call's trace goes with it
        (a ``traceparent`` header), so the consumer's context continues it.
        """
        if self._service is None:
            raise RuntimeError("this context is not bound to a service")
        target = self._service.queues[queue] if isinstance(queue, str) else queue
        traced = traceparent_of(self.trace_id)
        if traced is not None and not (headers and "traceparent" in headers):
            headers = {**(headers or {}), "traceparent": traced}  # the call's trace goes on
        return await target.send(data, id=id, key=key, delay=delay, headers=headers)
