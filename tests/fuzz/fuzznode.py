"""The demo shop on every edge, in a process of its own, for the fuzz tests.

``python fuzznode.py DATABASE`` prints ``HTTP_PORT GRPC_PORT`` once serving
(both chosen by the system), then serves until killed. Rate limiting is off, so
every example reaches the decoders; development mode lets anonymous input go
as deep as it can; its loopback peer is a trusted proxy, so forwarding headers
are parsed too.
"""

from __future__ import annotations

import asyncio
import sys

from polyport import Settings
from polyport.demo.shop import shop
from polyport.node import Node, bind_socket


async def main(database: str) -> None:
    settings = Settings.model_validate(
        {
            "dev": True,
            "database": database,
            "rate_limit": {"enabled": False},
            "grpc": {"port": 0},
            # Its clients' forwarding headers are read, so they are fuzzed too.
            "server": {"trusted_proxies": ["127.0.0.1"]},
            "log": {"level": "error"},
        }
    )
    node = Node(shop, settings)
    sock = bind_socket("127.0.0.1", 0)
    ready = asyncio.Event()
    serving = asyncio.create_task(node.serve(sock, ready=ready))
    await ready.wait()
    grpc = next((e for e in node.edges if type(e).__name__ == "GrpcEdge"), None)
    print(sock.getsockname()[1], getattr(grpc, "port", 0), flush=True)
    await serving


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
