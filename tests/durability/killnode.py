"""A node in a process of its own, for the kill-9 test: ``python killnode.py DB``.

It prints its port, then serves REST (``POST /v1/emit {"writer": w, "first": i,
"n": k}`` publishes k events ``{"writer": w, "i": i…}`` on channel ``ticks/{w}``
and answers their ids), polling and SSE, until it is killed.
"""

from __future__ import annotations

import asyncio
import sys

from pydantic import BaseModel

from polyport import Service, Settings
from polyport.node import Node, bind_socket

service = Service("killlab", description="Publishes events, then gets killed.")


class Tick(BaseModel):
    writer: int
    i: int


Ticked = service.event("ticks.created", Tick, channel="ticks/{writer}")


@service.method
async def emit(writer: int, first: int, n: int) -> list[str]:
    """Publish ``n`` ticks of ``writer``, numbered from ``first``: one by one, or as a batch."""
    if n == 1:
        return [(await service.publish(Ticked, {"writer": writer, "i": first})).id]
    ticks = [{"writer": writer, "i": first + k} for k in range(n)]
    return [event.id for event in await Ticked.publish_many(ticks)]


async def main(database: str) -> None:
    settings = Settings.model_validate(
        {
            "dev": True,
            "database": database,
            "rate_limit": {"enabled": False},
            "history": {"max_events": 100_000},
        }
    )
    node = Node(service, settings, edges=["rest", "poll", "sse"])
    sock = bind_socket("127.0.0.1", 0)
    print(sock.getsockname()[1], flush=True)
    await node.serve(sock)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
