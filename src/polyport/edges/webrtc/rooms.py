"""Signaling rooms: who is in which room under which name, on this node, in memory.

A room exists while someone is in it. Each connection is in a room under one
name (its own choice, or ``peer-<n>``); names are unique within a room. The
registry only answers and relays: every frame it sends goes through the
member's ``send``, which never waits (a member that does not read is closed
by the WebSocket layer, not waited for), so one slow or hostile member cannot
hold up the others.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from polyport.core.errors import Conflict, NotFound, RateLimited


class Member:
    """One signaling connection: how to send it a frame, and the rooms it is in."""

    def __init__(self, send: Callable[[dict[str, Any]], None]) -> None:
        self.send = send
        #: room → this connection's name in it.
        self.rooms: dict[str, str] = {}


class Rooms:
    """Every room of this node."""

    def __init__(self, *, max_room_size: int, max_rooms: int) -> None:
        self.max_room_size = max_room_size
        self.max_rooms = max_rooms
        #: room → name → member.
        self.rooms: dict[str, dict[str, Member]] = {}
        self._names = itertools.count(1)

    def join(self, member: Member, room: str, name: str | None) -> tuple[str, list[str]]:
        """Put ``member`` in ``room``; its name and the others' names (before it joined).

        The others are told with a ``peer-joined`` frame.
        """
        if room in member.rooms:
            raise Conflict(f"already in room {room!r} as {member.rooms[room]!r}")
        if len(member.rooms) >= self.max_rooms:
            raise RateLimited(f"at most {self.max_rooms} rooms per connection")
        peers = self.rooms.get(room, {})
        if len(peers) >= self.max_room_size:
            raise RateLimited(f"room {room!r} is full ({self.max_room_size} peers)")
        if name is None:
            name = f"peer-{next(self._names)}"
            while name in peers:
                name = f"peer-{next(self._names)}"
        elif name in peers:
            raise Conflict(f"the name {name!r} is taken in room {room!r}")
        others = list(peers)
        for other in peers.values():
            other.send({"type": "peer-joined", "room": room, "peer": name})
        self.rooms.setdefault(room, {})[name] = member
        member.rooms[room] = name
        return name, others

    def leave(self, member: Member, room: str) -> str:
        """Take ``member`` out of ``room``; its name there. The others are told (``peer-left``)."""
        name = member.rooms.pop(room, None)
        if name is None:
            raise NotFound(f"not in room {room!r}")
        peers = self.rooms[room]
        del peers[name]
        if not peers:
            del self.rooms[room]
        for other in peers.values():
            other.send({"type": "peer-left", "room": room, "peer": name})
        return name

    def leave_all(self, member: Member) -> None:
        """The connection closed: leave every room it was in."""
        for room in list(member.rooms):
            self.leave(member, room)

    def relay(self, member: Member, room: str, to: str, frame: dict[str, Any]) -> None:
        """Send ``frame`` to ``to`` in ``room``, from ``member`` (named in ``from``)."""
        name = member.rooms.get(room)
        if name is None:
            raise NotFound(f"not in room {room!r}: join it first")
        target = self.rooms[room].get(to)
        if target is None:
            raise NotFound(f"no peer {to!r} in room {room!r}")
        if target is member:
            raise Conflict("a peer does not signal itself")
        target.send({**frame, "room": room, "from": name})

    @property
    def peers(self) -> int:
        """Names taken across every room."""
        return sum(len(peers) for peers in self.rooms.values())
