"""A node in a process of its own, for the crash test: ``python crashnode.py DB``.

It prints its port, then serves REST (``POST /v1/emit {"n": …}`` publishes n
events and returns their ids) and the webhooks edge, until it is killed.
"""

from __future__ import annotations

import asyncio
import sys

from pydantic import BaseModel

from polyport import Service, Settings
from polyport.node import Node, bind_socket

service = Service("crashlab", description="Publishes events, then gets killed.")


class Tick(BaseModel):
    n: int


Ticked = service.event("ticks.created", Tick, channel="ticks")


@service.method
async def emit(n: int) -> list[str]:
    """Publish ``n`` events in one go."""
    return [(await service.publish(Ticked, {"n": i})).id for i in range(n)]


async def main(database: str) -> None:
    settings = Settings(
        dev=True,
        database=database,
        webhooks={
            "allow_private": ["127.0.0.1"],
            "retry_schedule": [0.0, 0.2, 0.2, 0.2],
            "jitter": 0.0,
            "poll_interval": 0.05,
            "timeout": 1.0,
            "lease_margin": 0.2,
            "concurrency": 4,
        },
    )
    node = Node(service, settings, edges=["rest", "webhooks"])
    sock = bind_socket("127.0.0.1", 0)
    print(sock.getsockname()[1], flush=True)
    await node.serve(sock)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
