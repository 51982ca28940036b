"""The REST bench targets as servers, one process each, started by the lab.

    python -m polyport.bench.apps polyport|fastapi|starlette

binds an ephemeral port on 127.0.0.1, writes ``port N`` on stdout and serves
``GET /v1/users/{id}`` until SIGTERM. Every target runs on the uvicorn
settings :meth:`polyport.node.Node.serve` uses — one worker, httptools, uvloop,
no access log — so only the stack above the server differs:

* **polyport**: the real server path, ``bind_socket`` + ``Node.serve`` with
  the rate limit on (far above the load) so the whole pipeline is paid for —
  the bench service of :mod:`polyport.bench.service`, every edge loaded;
* **fastapi**: ``@app.get`` returning the model, as FastAPI's tutorial writes it;
* **starlette**: a ``Route`` returning ``JSONResponse(user.model_dump())``.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from polyport.bench.service import HOST, serve_polyport
from polyport.bench.users import User, get_user
from polyport.core.errors import NotFound
from polyport.node import bind_socket
from polyport.server import run

if TYPE_CHECKING:
    from fastapi import FastAPI
    from starlette.applications import Starlette


def fastapi_app() -> FastAPI:
    """Plain FastAPI: a path operation returning the model."""
    from fastapi import FastAPI, HTTPException

    app = FastAPI()

    @app.get("/v1/users/{id}")
    async def read_user(id: int) -> User:
        try:
            return await get_user(id)
        except NotFound as exc:
            raise HTTPException(404, exc.message) from None

    return app


def starlette_app() -> Starlette:
    """Plain Starlette: one route, one ``JSONResponse``."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def read_user(request: Request) -> JSONResponse:
        try:
            user = await get_user(request.path_params["id"])
        except NotFound as exc:
            return JSONResponse({"detail": exc.message}, status_code=404)
        return JSONResponse(user.model_dump())

    return Starlette(routes=[Route("/v1/users/{id:int}", read_user)])


async def serve_asgi(app: Any, sock: socket.socket) -> None:
    """Serve an ASGI baseline with uvicorn, tuned as a user would for speed.

    One worker, httptools, no access log, no ``server`` header, no proxy
    headers (one less ASGI layer per request), uvloop (set by :func:`run`).
    """
    import uvicorn

    config = uvicorn.Config(
        app,
        lifespan="off",
        log_level="warning",
        access_log=False,
        server_header=False,
        proxy_headers=False,
        ws="none",
        http="httptools",
        loop="none",
    )
    await uvicorn.Server(config).serve(sockets=[sock])


#: What makes the coroutine serving a target on a bound socket (the app is built at once).
Server = Callable[[socket.socket], Coroutine[Any, Any, None]]

#: The REST targets.
SERVERS: dict[str, Server] = {
    "polyport": serve_polyport,
    "fastapi": lambda sock: serve_asgi(fastapi_app(), sock),
    "starlette": lambda sock: serve_asgi(starlette_app(), sock),
}


def serve_target(module: str, servers: dict[str, Server], argv: list[str]) -> None:
    """``python -m MODULE NAME``: bind, write ``port N``, serve ``servers[NAME]`` until SIGTERM."""
    if len(argv) != 1 or argv[0] not in servers:
        sys.exit(f"usage: python -m {module} {{{'|'.join(servers)}}}")
    sock = bind_socket(HOST, 0)
    try:
        serving = servers[argv[0]](sock)  # the app is built before the lab may call it
        sys.stdout.write(f"port {sock.getsockname()[1]}\n")
        sys.stdout.flush()
        run(serving)
    finally:
        sock.close()


if __name__ == "__main__":
    serve_target("polyport.bench.apps", SERVERS, sys.argv[1:])
