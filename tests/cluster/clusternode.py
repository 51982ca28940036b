"""One node of a cluster test, in a process of its own: ``python clusternode.py DB ENGINE [POLL]``.

It prints its HTTP port, then serves REST (``POST /v1/emit {"n": …, "tag": …}``
publishes n events on channel ``ticks/{tag}`` and answers their ids;
``POST /v1/emit_at`` does the same and names the node, by its database file's
stem; ``POST /v1/jobs/run_once {"token": …}`` runs a job that records which
node ran it as an event on ``runs/{token}``), polling, SSE, WebSocket, webhook
subscriptions (``/v1/webhooks``), the webhook receiver ``/hooks/inbound``
(Standard Webhooks, :data:`HOOK_SECRET`), whose handler records each delivery
it handles on ``hooked/{delivery id}``, GraphQL (queries and
``graphql-transport-ws`` subscriptions) and gRPC (the event stream included)
on a free port of its own, which it prints on a second line, ``grpc
HOST:PORT``, once it serves — with its event log on ENGINE (read every POLL
seconds when no announcement came, 0.2 by default), until it is stopped.
Other settings come from ``POLYPORT_*`` variables (``POLYPORT_SERVER__TRUSTED_PROXIES``,
``POLYPORT_LOG__ACCESS``), with logs on stderr as ``polyport serve`` writes them.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from pydantic import BaseModel

from polyport import Service, load_settings
from polyport.core.logs import configure_logging
from polyport.node import Node, bind_socket
from polyport.webhooks import StandardWebhooks, WebhookDelivery

service = Service("clusterlab", description="Publishes ticks on a shared engine.")
#: This node's name: its database file's stem (``a`` for ``a.sqlite3``).
LABEL = ""


class Tick(BaseModel):
    tag: str
    n: int


class Emitted(BaseModel):
    """Which node published, and the ids of what it published."""

    node: str
    ids: list[str]


Ticked = service.event("ticks.created", Tick, channel="ticks/{tag}")
#: The signing secret of the receiver ``inbound``.
HOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


class Ran(BaseModel):
    token: str
    node: str


Runs = service.event("runs.done", Ran, channel="runs/{token}")


class Handled(BaseModel):
    delivery: str
    node: str


Hooks = service.event("hooks.handled", Handled, channel="hooked/{delivery}")


@service.method
async def run_once(token: str) -> str:
    """A job's body: say which node ran it, on ``runs/{token}``."""
    await Runs.publish({"token": token, "node": LABEL})
    return LABEL


@service.webhook_receiver("inbound", verify=StandardWebhooks(HOOK_SECRET))
async def inbound(body: dict[str, object], delivery: WebhookDelivery) -> None:
    """Say which node handled which delivery, on ``hooked/{delivery id}``."""
    await Hooks.publish({"delivery": delivery.id, "node": LABEL})


@service.method
async def emit(tag: str, n: int) -> list[str]:
    """Publish ``n`` ticks tagged ``tag``."""
    return [e.id for e in await Ticked.publish_many([{"tag": tag, "n": i} for i in range(n)])]


@service.method
async def emit_at(tag: str, n: int) -> Emitted:
    """Publish ``n`` ticks tagged ``tag`` and say which node did (behind a load balancer)."""
    return Emitted(node=LABEL, ids=await emit(tag, n))


async def main(database: str, engine: str, poll: float) -> None:
    global LABEL
    LABEL = Path(database).stem
    settings = load_settings(
        environ=os.environ,
        base={
            "dev": True,
            "rate_limit": {"enabled": False},
            # Every event of a test stays readable: loss, not retention, is what they count.
            "history": {"max_events": 1_000_000},
            "log": {"level": "error"},
            # Nodes of one host each need a gRPC port of their own.
            "grpc": {"port": 0},
        },
        overrides={"database": database, "engine": engine, "engine_poll": poll},
    )
    configure_logging(settings.log.level, settings.log.format)
    edges = ["rest", "poll", "sse", "ws", "hooks", "webhooks", "graphql", "grpc"]
    node = Node(service, settings, edges=edges)
    sock = bind_socket("127.0.0.1", 0)
    print(sock.getsockname()[1], flush=True)
    ready = asyncio.Event()
    serving = asyncio.create_task(node.serve(sock, ready=ready))
    started = asyncio.create_task(ready.wait())
    await asyncio.wait({serving, started}, return_when=asyncio.FIRST_COMPLETED)
    if ready.is_set():
        (grpc,) = (edge for edge in node.listeners if edge.name == "grpc")
        print(f"grpc {grpc.address}", flush=True)
    else:
        started.cancel()
    await serving


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3]) if len(sys.argv) > 3 else 0.2))
