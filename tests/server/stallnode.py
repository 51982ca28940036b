"""A node in a process of its own, for the slow-reader tests: ``python stallnode.py EDGES``.

``EDGES`` is a comma-separated list (``rest,sse``). The node prints its HTTP
port and its gRPC port (0 when gRPC is not served) on one line, then serves
until it is stopped. Everything else comes from ``POLYPORT_*`` variables, so
a test sets short send and stall timeouts the way an operator would.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel

from polyport import Service
from polyport.node import Node, bind_socket
from polyport.settings import load_settings

service = Service("stall", description="Big answers and events for clients that stop reading.")


class Blob(BaseModel):
    n: int
    data: str


Blobbed = service.event("blobs.added", Blob, channel="blobs")


@service.method
async def emit(count: int, size: int) -> int:
    """Publish ``count`` events of ``size`` bytes each, in batches of 10.

    Between batches the subscribers' tasks run, as they would between the
    publishes of a real service; a subscriber that does not keep up falls back
    on history, then on a "recovery failed" that ends its stream.
    """
    data = "x" * size
    for start in range(0, count, 10):
        end = min(count, start + 10)
        await Blobbed.publish_many(Blob(n=n, data=data) for n in range(start, end))
        await asyncio.sleep(0)
    return count


@service.stream
async def blobs(size: int) -> AsyncIterator[str]:
    """``size``-byte strings for ever, as fast as they are taken (or faster)."""
    data = "x" * size
    while True:
        yield data


@service.method
async def blob(size: int) -> str:
    """An answer of ``size`` bytes."""
    return "x" * size


@service.method
async def slow(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "done"


@service.method
async def echo(text: str) -> int:
    """The length of what was sent (a body goes in, little comes out)."""
    return len(text)


async def main(edges: list[str]) -> None:
    node = Node(service, load_settings(), edges=edges)
    sock = bind_socket("127.0.0.1", 0)
    started = asyncio.Event()
    serving = asyncio.create_task(node.serve(sock, ready=started))
    await started.wait()
    grpc: Any = next((e for e in node.edges if e.name == "grpc"), None)
    print(sock.getsockname()[1], grpc.port if grpc is not None else 0, flush=True)
    await serving


if __name__ == "__main__":
    from polyport.server import run

    run(main(sys.argv[1].split(",")))
