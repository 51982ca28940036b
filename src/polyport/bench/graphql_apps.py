"""The GraphQL bench targets as servers, one process each, started by the lab.

    python -m polyport.bench.graphql_apps polyport|strawberry|strawberry-cached

binds an ephemeral port on 127.0.0.1, writes ``port N`` on stdout and serves
``/graphql`` until SIGTERM:

* **polyport**: a node serving the bench service below with every edge, as
  ``polyport serve`` runs it (its own HTTP server, uvloop), the rate limit on
  (far above the load) so the whole pipeline is paid for;
* **strawberry**: the plain Strawberry app of :mod:`polyport.bench.graphql_strawberry`
  on uvicorn, tuned exactly as the REST bench's FastAPI baseline
  (:func:`polyport.bench.apps.serve_asgi`);
* **strawberry-cached**: the same app with Strawberry's parser and validation
  caches switched on (polyport caches parsed and validated documents too).

Both answer from :mod:`polyport.bench.graphql_data` through the same batch functions.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from polyport.bench import graphql_data
from polyport.bench.users import User, get_user, list_users
from polyport.core.config import LogConfig, RateLimitConfig
from polyport.core.contract import Service
from polyport.node import Node, bind_socket
from polyport.server import run
from polyport.settings import Settings

HOST = "127.0.0.1"


def graphql_service() -> Service:
    """Users with their posts, the posts' comments and the comments' authors, as relations."""
    service = Service("bench", version=1, description="The GraphQL bench's service.")
    users = service.resource("users", User, events=False)
    users.get(get_user)
    users.list(list_users)
    users.relation("posts")(graphql_data.posts_of_users)
    service.relation(graphql_data.Post, "comments")(graphql_data.comments_of_posts)
    service.relation(graphql_data.Comment, "author", via="user_id")(graphql_data.users_by_id)
    return service


def polyport_settings() -> Settings:
    """Development mode (no credentials) with every per-call stage still switched on."""
    return Settings(
        host=HOST,
        port=0,
        dev=True,
        event_log="memory",
        database=":memory:",
        rate_limit=RateLimitConfig(enabled=True, rate=1e9, burst=1_000_000_000),
        log=LogConfig(level="warning"),
        grpc={"port": 0},  # never clash with a node on 50051
    )


async def serve_polyport(sock: socket.socket) -> None:
    from polyport.core.logs import configure_logging

    settings = polyport_settings()
    configure_logging(settings.log.level, settings.log.format)  # as `polyport serve` does
    await Node(graphql_service(), settings).serve(sock)


async def serve_strawberry(sock: socket.socket, *, cached: bool = False) -> None:
    from polyport.bench.apps import serve_asgi
    from polyport.bench.graphql_strawberry import strawberry_app

    await serve_asgi(strawberry_app(cached=cached), sock)


#: The GraphQL targets, in the order the lab measures them.
SERVERS: dict[str, Callable[[socket.socket], Coroutine[Any, Any, None]]] = {
    "polyport": serve_polyport,
    "strawberry": serve_strawberry,
    "strawberry-cached": lambda sock: serve_strawberry(sock, cached=True),
}


def main(argv: list[str]) -> None:
    """Bind, write ``port N``, serve the named target until SIGTERM."""
    if len(argv) != 1 or argv[0] not in SERVERS:
        sys.exit(f"usage: python -m polyport.bench.graphql_apps {{{'|'.join(SERVERS)}}}")
    sock = bind_socket(HOST, 0)
    try:
        sys.stdout.write(f"port {sock.getsockname()[1]}\n")
        sys.stdout.flush()
        run(SERVERS[argv[0]](sock))
    finally:
        sock.close()


if __name__ == "__main__":
    main(sys.argv[1:])
