"""The bus on a core NATS subject: nodes of one log wake each other on ``polyport-bus.{name}``.

Core NATS, not JetStream: a bus is at-most-once by design (see
:mod:`polyport.core.bus`), and a core publish costs the server no storage and
no acknowledgement. The subject is named from the log's name, outside the
log's own subjects (``polyport.{name}.>``, which its stream captures: a bus
message there would be stored as an event), so logs of different names never
hear each other and the stream never holds an announcement.

One connection of its own, with ``no_echo``: the server does not send a
node's own announcements back to it. nats-py's own reconnection is off: when
the connection breaks, nats-py closes it, and
:class:`~polyport.backends.enginebus.EngineBus` connects and subscribes anew
with its backoff, as for the other engines — and logs once per outage, where
nats-py would buffer publishes meanwhile and send them late. The server is
pinged every ``heartbeat`` seconds, so a
connection that died without a word is closed after two unanswered pings.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from polyport.backends.enginebus import TIMEOUT, EngineBus
from polyport.backends.nats.client import _driver, engine_errors
from polyport.core.errors import InvalidArgument

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS
    from nats.aio.msg import Msg

log = logging.getLogger("polyport.bus")

_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")  # a log's name, as NatsEventLog takes it


class NatsBus(EngineBus):
    """A :class:`~polyport.core.bus.Bus` on a core NATS subject, for the log named ``name``."""

    engine = "NATS"
    frame_limit = 65536  # far below a server's max_payload (1 MiB by default)

    def __init__(
        self, servers: str | Sequence[str] = "nats://127.0.0.1:4222", *, name: str = "polyport"
    ) -> None:
        if not _NAME.fullmatch(name):
            raise InvalidArgument(f"invalid event log name {name!r}: use 1-64 of A-Za-z0-9_-")
        self.servers = [servers] if isinstance(servers, str) else list(servers)
        self.subject = f"polyport-bus.{name}"
        super().__init__(f"subject {self.subject}")
        self._nc: NATS | None = None
        self._lost: asyncio.Future[None] | None = None

    async def _connect(self) -> None:
        with engine_errors("connect the bus"):
            await self._subscribe()

    async def _subscribe(self) -> None:
        nats = _driver()
        lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def closed() -> None:
            if not lost.done():
                lost.set_result(None)

        async def error(exc: Exception) -> None:
            log.debug("NATS error on %s: %s", self, exc)  # the outage is logged once, by the bus

        self._lost = lost
        self._nc = await nats.connect(
            self.servers,
            name=f"polyport bus {self.subject}",
            no_echo=True,
            allow_reconnect=False,
            # Without reconnection these bound the first connection's tries: each
            # server twice (at 0 nats-py would try forever), 0.1 s apart.
            max_reconnect_attempts=1,
            reconnect_time_wait=0.1,
            connect_timeout=max(1, int(TIMEOUT)),
            ping_interval=max(1, round(self.heartbeat)),  # nats-py counts whole seconds
            max_outstanding_pings=2,
            disconnected_cb=closed,
            closed_cb=closed,
            error_cb=error,
        )
        await self._nc.subscribe(self.subject, cb=self._message)
        await self._nc.flush(timeout=int(TIMEOUT))  # the server has the subscription

    async def _message(self, msg: Msg) -> None:
        self._heard(msg.data)

    async def _receive(self) -> None:
        lost = self._lost
        assert lost is not None
        await lost
        raise ConnectionError("NATS closed the connection")

    async def _resubscribe(self) -> None:
        await self._unsubscribe()
        await self._subscribe()

    async def _unsubscribe(self) -> None:
        nc, self._nc = self._nc, None
        if nc is not None and not nc.is_closed:
            with contextlib.suppress(Exception):
                await nc.close()

    async def _send(self, messages: list[bytes]) -> None:
        nc = self._nc
        if nc is None or not nc.is_connected:
            raise ConnectionError("not connected to NATS")
        for message in messages:
            await nc.publish(self.subject, message)

    async def _disconnect(self) -> None:
        await self._unsubscribe()


__all__ = ["NatsBus"]
