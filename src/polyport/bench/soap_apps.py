"""The SOAP bench targets as servers, one process each.

    python -m polyport.bench.soap_apps polyport|spyne

binds an ephemeral port on 127.0.0.1, writes ``port N`` on stdout and serves
the SOAP operation ``GetUser(id) → User`` at ``POST /soap`` (WSDL at
``GET /soap?wsdl``) until SIGTERM. Both answer the same envelope
(:data:`REQUEST`) from the same 100 users of :mod:`polyport.bench.users`:

* **polyport**: the bench service (:func:`polyport.bench.apps.polyport_service`)
  on a node with every edge, exactly as the REST bench serves it;
* **spyne**: Spyne 2.14, ``Soap11`` in and out with its default (no)
  validation — its fastest setting — under uvicorn's WSGI interface with
  httptools and uvloop, the server the REST baselines run on.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from polyport.bench.apps import _polyport, serve_asgi
from polyport.bench.users import BENCH_ID, USERS
from polyport.node import bind_socket
from polyport.server import run

HOST = "127.0.0.1"
TNS = "urn:polyport:bench:v1"
PATH = "/soap"
READY_PATH = "/soap?wsdl"
#: The one request every SOAP target answers, byte for byte the same.
REQUEST = (
    '<?xml version="1.0" encoding="utf-8"?>\n'
    '<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/">'
    f'<soap:Body><GetUser xmlns="{TNS}"><id>{BENCH_ID}</id></GetUser></soap:Body>'
    "</soap:Envelope>"
).encode()
HEADERS = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": f'"{TNS}#GetUser"'}


def spyne_app() -> Any:
    """Spyne's GetUser over the same users, as its documentation writes a service."""
    from spyne import Application, ComplexModel, Integer, ServiceBase, Unicode, rpc
    from spyne.protocol.soap import Soap11
    from spyne.server.wsgi import WsgiApplication

    class User(ComplexModel):  # type: ignore[misc]
        __namespace__ = TNS
        id = Integer
        name = Unicode
        email = Unicode

    class BenchService(ServiceBase):  # type: ignore[misc]
        @rpc(Integer, _returns=User)  # type: ignore[untyped-decorator]
        def GetUser(ctx: Any, id: int) -> Any:
            user = USERS[id]
            return User(id=user.id, name=user.name, email=user.email)

    application = Application([BenchService], tns=TNS, in_protocol=Soap11(), out_protocol=Soap11())
    return WsgiApplication(application)


async def serve_wsgi(app: Any, sock: socket.socket) -> None:
    """A WSGI application under uvicorn (httptools, no access log), as the ASGI baselines run."""
    import warnings

    import uvicorn

    warnings.simplefilter("ignore", DeprecationWarning)  # uvicorn's own WSGI interface
    config = uvicorn.Config(
        app,
        interface="wsgi",
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


SERVERS: dict[str, Callable[[socket.socket], Coroutine[Any, Any, None]]] = {
    "polyport": _polyport,
    "spyne": lambda sock: serve_wsgi(spyne_app(), sock),
}
#: Display names, in the order the lab measures them.
TARGETS = {"polyport": "polyport SOAP", "spyne": "Spyne"}


def main(argv: list[str]) -> None:
    if len(argv) != 1 or argv[0] not in SERVERS:
        sys.exit(f"usage: python -m polyport.bench.soap_apps {{{'|'.join(SERVERS)}}}")
    sock = bind_socket(HOST, 0)
    try:
        serving = SERVERS[argv[0]](sock)
        sys.stdout.write(f"port {sock.getsockname()[1]}\n")
        sys.stdout.flush()
        run(serving)
    finally:
        sock.close()


__all__ = ["HEADERS", "READY_PATH", "REQUEST", "TARGETS", "serve_asgi"]

if __name__ == "__main__":
    main(sys.argv[1:])
