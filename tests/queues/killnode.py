"""A node in a process of its own, for the queues' kill-9 tests: ``python killnode.py DB LOG
[BROKER_URL]`` (without a URL, the queues are in the SQLite file DB).

It prints its port, then serves ``POST /v1/queues/work`` until it is killed.
The consumer of ``work`` writes ``start N`` to LOG when it begins message N
and ``done N`` when it ends (each line written at once), taking 20 ms each (8 at once).
"""

from __future__ import annotations

import asyncio
import os
import sys

from pydantic import BaseModel

from polyport import Service, Settings
from polyport.core.queues import Backoff
from polyport.node import Node, bind_socket

service = Service("killqueues")


class Work(BaseModel):
    n: int


work = service.queue("work", Work, public=True)
LOG: int = -1


def note(line: str) -> None:
    os.write(LOG, line.encode() + b"\n")  # one write per line: lines never interleave


@work.consumer(concurrency=8, lease=2.0, backoff=Backoff(initial=0.05, max=0.2))
async def handle(item: Work) -> None:
    note(f"start {item.n}")
    await asyncio.sleep(0.02)
    note(f"done {item.n}")


async def main(database: str, log: str, broker: str | None) -> None:
    global LOG
    LOG = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    settings = Settings.model_validate(
        {
            "dev": True,
            "database": database,
            "rate_limit": {"enabled": False},
            "queues": {"poll_interval": 0.1, "broker": broker},
        }
    )
    node = Node(service, settings, edges=["queues"])
    sock = bind_socket("127.0.0.1", 0)
    print(sock.getsockname()[1], flush=True)
    await node.serve(sock)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None))
