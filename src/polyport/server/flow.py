"""A protocol that paces itself on its peer: write accounting, a send timeout, read holds.

:class:`FlowControl` is the half of a connection that does not care what it
carries. It counts what it hands the transport, so that every
``send_timeout`` seconds while it waits on the peer (the transport's buffer
over its high-water mark, or a close with bytes still unsent) it can tell a
slow reader, which goes on, from a stopped one, which is reset (nginx's
``send_timeout``). Reading is paused for named reasons and resumes when none
is left, so the HTTP pipeline and a WebSocket's queues never undo each
other's pause.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct

log = logging.getLogger("polyport.server")

#: SO_LINGER on, zero seconds: close() resets the connection and drops unsent bytes.
LINGER_RESET = struct.pack("ii", 1, 0)

# Why reading is paused: each reason is lifted on its own, reading resumes when none is left.
HOLD_PIPELINE = 1  # requests wait their turn (or parsing has ended)
HOLD_MESSAGES = 2  # a WebSocket handler is behind on the messages it was sent
HOLD_WRITES = 4  # a WebSocket peer does not take what we write (pongs, answers)


class FlowControl(asyncio.Protocol):
    """The transport, written through :meth:`write`, closed or reset, read when allowed."""

    def __init__(self, send_timeout: float) -> None:
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.peer: str | None = None
        self.send_timeout = send_timeout
        #: The connection is gone, or being dropped: nothing more is written.
        self.lost = False
        self.lost_future: asyncio.Future[None] = self.loop.create_future()
        self._holds = 0
        self._write_paused = False
        self._drained: asyncio.Future[None] | None = None
        self._closing = False
        # Bytes given to the transport, and how many had left it when the send
        # timer was last armed.
        self._written = 0
        self._send_mark = 0
        self._send_timer: asyncio.TimerHandle | None = None

    def connection_lost(self, exc: Exception | None) -> None:
        self._gone()
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    def write(self, data: bytes) -> None:
        """Hand ``data`` to the transport (nothing once the connection is lost)."""
        if not self.lost:
            self._written += len(data)
            self.transport.write(data)

    def buffered(self) -> int:
        """Bytes written and not yet taken by the socket."""
        return 0 if self.lost else self.transport.get_write_buffer_size()

    @property
    def write_paused(self) -> bool:
        """The transport's buffer is over its high-water mark."""
        return self._write_paused

    def pause_writing(self) -> None:
        self._write_paused = True
        self._watch_sending()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    async def drain(self) -> None:
        """Wait until the transport's write buffer is below its high-water mark."""
        if self._write_paused and not self.lost:
            if self._drained is None or self._drained.done():
                self._drained = self.loop.create_future()
            # Shared by every waiter: one cancelled waiter must not cancel the others'.
            await asyncio.shield(self._drained)

    def _watch_sending(self) -> None:
        if self._send_timer is None and not self.lost:
            self._send_mark = self._written - self.transport.get_write_buffer_size()
            self._send_timer = self.loop.call_later(self.send_timeout, self._check_sending)

    def _check_sending(self) -> None:
        """Abort a peer that took none of our bytes since the last check."""
        self._send_timer = None
        if self.lost:
            return
        unsent = self.transport.get_write_buffer_size()
        if not unsent or not (self._write_paused or self._closing):
            return  # caught up; pause_writing() or close() watches again
        if self._written - unsent > self._send_mark:
            self._watch_sending()  # slow, but reading: nginx's send_timeout is per write
            return
        log.debug(
            "aborting a connection from %s that read nothing for %g s (%d bytes unsent)",
            self.peer,
            self.send_timeout,
            unsent,
        )
        self.abort()

    def close(self) -> None:
        """Close once what is written has gone; a peer that takes none of it is aborted."""
        if self.lost or self._closing:
            return
        self._closing = True
        self.transport.close()
        if self.transport.get_write_buffer_size():
            self._watch_sending()

    def abort(self) -> None:
        """Drop the connection now, unsent bytes and all: the peer gets a reset.

        Without ``SO_LINGER`` 0 the kernel would go on offering what it holds
        to a peer that reads nothing, with no FIN until it is all taken.
        """
        if not self.lost:
            self._gone()
            sock = self.transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
            self.transport.abort()

    def _gone(self) -> None:
        self.lost = True
        if not self.lost_future.done():
            self.lost_future.set_result(None)
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def hold_reading(self, reason: int) -> None:
        """Stop reading for ``reason`` (one of the ``HOLD_*`` flags)."""
        if not self._holds and not self.lost and not self._closing:
            self.transport.pause_reading()
        self._holds |= reason

    def release_reading(self, reason: int) -> None:
        """Lift ``reason``; reading resumes once no reason is left."""
        if self._holds & reason:
            self._holds &= ~reason
            if not self._holds and not self.lost and not self._closing:
                self.transport.resume_reading()


__all__ = ["HOLD_MESSAGES", "HOLD_PIPELINE", "HOLD_WRITES", "FlowControl"]
