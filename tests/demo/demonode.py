"""The demo shop in a process of its own, for the order flow's kill-9 test:
``python demonode.py DB`` prints its port and serves until it is killed."""

from __future__ import annotations

import asyncio
import sys

from polyport import Settings
from polyport.demo.shop import shop
from polyport.node import Node, bind_socket


async def main(database: str) -> None:
    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    settings = Settings.model_validate(
        {
            "dev": True,
            "port": port,  # the provider calls back the shop's own port
            "database": database,
            "rate_limit": {"enabled": False},
            "hooks": {"poll_interval": 0.05},
            "queues": {"poll_interval": 0.1},
        }
    )
    node = Node(shop, settings, edges=["rest", "hooks", "queues"])
    print(port, flush=True)
    await node.serve(sock)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
