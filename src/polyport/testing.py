"""Run a real node in a background thread, for tests (yours and ours).

    with serve_in_thread(shop, Settings(dev=True, database=str(tmp_path / "db"))) as server:
        httpx.get(f"{server.url}/v1/users/1")

The node listens on free ports of 127.0.0.1 — HTTP, and gRPC unless the
settings name a gRPC port — and runs its own event loop, so any client
(httpx, a browser, grpcio at ``server.grpc_address``) talks to it over real
sockets, and tests can run side by side with each other and with a real node.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from polyport.core.contract import Service
from polyport.node import Node, bind_socket
from polyport.settings import Settings


@dataclass
class RunningNode:
    node: Node
    url: str
    host: str
    port: int
    loop: asyncio.AbstractEventLoop
    #: ``HOST:PORT`` of the gRPC edge, as grpcio dials it; None when gRPC is not served.
    grpc_address: str | None = None
    #: The port of the MQTT edge; None when MQTT is not served.
    mqtt_port: int | None = None

    def call(self, coro: Any, timeout: float = 30.0) -> Any:
        """Run a coroutine on the node's loop (publish an event, inspect the hub).

        It runs as this node's: ``server.call(OrderShipped.publish(s))`` publishes
        to this node even when another node serves the same service.
        """

        async def as_this_node() -> Any:
            with self.node.publishing():
                return await coro

        return asyncio.run_coroutine_threadsafe(as_this_node(), self.loop).result(timeout)


@contextlib.contextmanager
def serve_in_thread(
    service: Service,
    settings: Settings | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    edges: list[str] | None = None,
    timeout: float = 30.0,
) -> Iterator[RunningNode]:
    """Serve ``service`` until the ``with`` block ends; raise if it fails to start."""
    settings = settings or Settings(dev=True, database=":memory:", event_log="memory")
    if "port" not in settings.grpc.model_fields_set:
        # Never the fixed default (50051): another test, node or program may hold it.
        settings = settings.model_copy(
            update={"grpc": settings.grpc.model_copy(update={"port": 0})}
        )
    if "port" not in settings.mqtt.model_fields_set:
        # Nor 1883: Mosquitto listens there on many machines.
        settings = settings.model_copy(
            update={"mqtt": settings.mqtt.model_copy(update={"port": 0})}
        )
    node = Node(service, settings, edges=edges)
    sock = bind_socket(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    ready = threading.Event()
    failure: list[BaseException] = []
    holder: dict[str, Any] = {}

    async def main() -> None:
        started = asyncio.Event()
        holder["loop"] = asyncio.get_running_loop()
        task = asyncio.create_task(node.serve(sock, ready=started))
        waiter = asyncio.create_task(started.wait())
        done, _ = await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            waiter.cancel()
            task.result()  # raises the start-up error
            return
        ready.set()
        await task

    def run() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:
            failure.append(exc)
        finally:
            ready.set()

    thread = threading.Thread(target=run, name="polyport-test-node", daemon=True)
    thread.start()
    try:
        if not ready.wait(timeout) or failure:
            raise RuntimeError("the node did not start") from (failure[0] if failure else None)
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        grpc = next((e for e in node.listeners if e.name == "grpc" and e.off is None), None)
        mqtt = next((e for e in node.listeners if e.name == "mqtt" and e.off is None), None)
        yield RunningNode(
            node,
            f"http://{shown}:{bound_port}",
            bound_host,
            bound_port,
            holder["loop"],
            grpc.address if grpc is not None else None,
            int(mqtt.address.rsplit(":", 1)[1]) if mqtt is not None else None,
        )
    finally:
        server = getattr(node, "server", None)
        if server is not None:
            server.should_exit = True
        thread.join(timeout)
        sock.close()
        if failure and not isinstance(failure[0], asyncio.CancelledError):
            raise RuntimeError("the node failed") from failure[0]
