"""One node of a cluster test, in a process of its own: ``python clusternode.py DB ENGINE [POLL]``.

It prints its port, then serves REST (``POST /v1/emit {"n": …, "tag": …}``
publishes n events on channel ``ticks/{tag}`` and answers their ids), polling
and SSE, with its event log on ENGINE (read every POLL seconds
when no announcement came, 0.2 by default), until it is stopped.
"""

from __future__ import annotations

import asyncio
import sys

from pydantic import BaseModel

from polyport import Service, Settings
from polyport.node import Node, bind_socket

service = Service("clusterlab", description="Publishes ticks on a shared engine.")


class Tick(BaseModel):
    tag: str
    n: int


Ticked = service.event("ticks.created", Tick, channel="ticks/{tag}")


@service.method
async def emit(tag: str, n: int) -> list[str]:
    """Publish ``n`` ticks tagged ``tag``."""
    return [e.id for e in await Ticked.publish_many([{"tag": tag, "n": i} for i in range(n)])]


async def main(database: str, engine: str, poll: float) -> None:
    settings = Settings.model_validate(
        {
            "dev": True,
            "database": database,
            "engine": engine,
            "engine_poll": poll,
            "rate_limit": {"enabled": False},
            # Every event of a test stays readable: loss, not retention, is what they count.
            "history": {"max_events": 1_000_000},
            "log": {"level": "error"},
        }
    )
    node = Node(service, settings, edges=["rest", "poll", "sse"])
    sock = bind_socket("127.0.0.1", 0)
    print(sock.getsockname()[1], flush=True)
    await node.serve(sock)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3]) if len(sys.argv) > 3 else 0.2))
