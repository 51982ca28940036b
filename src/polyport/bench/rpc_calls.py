"""What the RPC bench asks each target: the same two calls in every pattern, and the streams.

Every call asks for user 42 (``user``) or for the first page of 50 users
(``list``), in the form a client of that pattern sends:

==========  ======================================================================
REST        ``GET /v1/users/42`` · ``GET /v1/users?limit=50``
JSON-RPC    ``POST /jsonrpc`` ``{"jsonrpc": "2.0", "method": "bench.get_user", …}``
XML-RPC     ``POST /xmlrpc``, the body ``xmlrpc.client`` sends for ``bench.get_user(42)``
SOAP        ``POST /soap``, a ``GetUser`` / ``ListUsers`` document/literal envelope
gRPC        ``GetUser`` / ``ListUsers``: ``{id: 42}`` · ``{limit: 50}`` (2 bytes each)
==========  ======================================================================

An answer counts only if it holds the right users: user 42's e-mail, or users
1 and 50 and not 51 (checked once per case, before the load).
"""

from __future__ import annotations

import xmlrpc.client
from dataclasses import dataclass
from typing import Literal

import orjson

from polyport.bench.loadgen import HttpCall
from polyport.bench.rpc_apps import SOAP_NAMESPACE
from polyport.bench.rpc_clients import PLAIN, POLYPORT, field
from polyport.bench.users import BENCH_ID, BENCH_PATH, LIST_LIMIT

Payload = Literal["user", "list"]
PAYLOADS: dict[Payload, str] = {"user": "one User", "list": f"{LIST_LIMIT} Users"}


@dataclass(frozen=True, slots=True)
class Case:
    """One measured call: a pattern on a target, asking for one user or a list of them."""

    name: str  # rest, jsonrpc, xmlrpc, soap, grpc, grpcio, grpcio-uvloop, spyne
    label: str
    target: str  # the server process: polyport, grpcio, grpcio-uvloop, spyne
    payload: Payload
    http: HttpCall | None = None  # an HTTP/1.1 call (wrk or the Python generator)
    grpc_path: str | None = None  # or a gRPC method (the gRPC client)
    grpc_request: bytes = b""

    @property
    def key(self) -> str:
        return f"{self.name}:{self.payload}"

    @property
    def expect(self) -> tuple[bytes, ...]:
        if self.payload == "user":
            return (f"user{BENCH_ID}@example.com".encode(),)
        return (b"user1@example.com", f"user{LIST_LIMIT}@example.com".encode())

    @property
    def refuse(self) -> tuple[bytes, ...]:
        return () if self.payload == "user" else (f"user{LIST_LIMIT + 1}@example.com".encode(),)


@dataclass(frozen=True, slots=True)
class Stream:
    """One measured server stream (a kind of :mod:`polyport.bench.rpc_clients`)."""

    name: str  # the client's stream kind
    label: str
    target: str
    batched: bool  # several events per message


def _jsonrpc(method: str, params: dict[str, int]) -> HttpCall:
    body = orjson.dumps({"jsonrpc": "2.0", "method": method, "params": params, "id": 1})
    return HttpCall("POST", "/jsonrpc", body, {"Content-Type": "application/json"})


def _xmlrpc(method: str, arg: int) -> HttpCall:
    body = xmlrpc.client.dumps((arg,), method).encode()
    return HttpCall("POST", "/xmlrpc", body, {"Content-Type": "text/xml"})


def _soap(operation: str, element: str, value: int) -> HttpCall:
    body = (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/">'
        f'<soap:Body><{operation} xmlns="{SOAP_NAMESPACE}"><{element}>{value}</{element}>'
        f"</{operation}></soap:Body></soap:Envelope>"
    ).encode()
    headers = {
        "Content-Type": "text/xml; charset=utf-8",
        "SOAPAction": f'"{SOAP_NAMESPACE}#{operation}"',
    }
    return HttpCall("POST", "/soap", body, headers)


def cases(payload: Payload) -> list[Case]:
    """Every call of one payload, in the order of the table."""
    one = payload == "user"
    method = "GetUser" if one else "ListUsers"
    argument = field(1, BENCH_ID if one else LIST_LIMIT)
    return [
        Case(
            "rest",
            "REST",
            "polyport",
            payload,
            http=HttpCall("GET", BENCH_PATH if one else f"/v1/users?limit={LIST_LIMIT}"),
        ),
        Case(
            "jsonrpc",
            "JSON-RPC",
            "polyport",
            payload,
            http=_jsonrpc(
                "bench.get_user" if one else "bench.list_users",
                {"id": BENCH_ID} if one else {"limit": LIST_LIMIT},
            ),
        ),
        Case(
            "xmlrpc",
            "XML-RPC",
            "polyport",
            payload,
            http=_xmlrpc(
                "bench.get_user" if one else "bench.list_users", BENCH_ID if one else LIST_LIMIT
            ),
        ),
        Case(
            "soap",
            "SOAP",
            "polyport",
            payload,
            http=_soap(method, "id" if one else "limit", BENCH_ID if one else LIST_LIMIT),
        ),
        Case(
            "grpc",
            "gRPC",
            "polyport",
            payload,
            grpc_path=f"{POLYPORT}/{method}",
            grpc_request=argument,
        ),
        Case(
            "grpcio",
            "grpcio",
            "grpcio",
            payload,
            grpc_path=f"{PLAIN}/{method}",
            grpc_request=argument,
        ),
        Case(
            "grpcio-uvloop",
            "grpcio (uvloop)",
            "grpcio-uvloop",
            payload,
            grpc_path=f"{PLAIN}/{method}",
            grpc_request=argument,
        ),
        Case(
            "spyne",
            "Spyne SOAP",
            "spyne",
            payload,
            http=_soap(method, "id" if one else "limit", BENCH_ID if one else LIST_LIMIT),
        ),
    ]


#: Every measured call, one user first, then the lists.
CASES: list[Case] = cases("user") + cases("list")

#: The server streams, polyport's first.
STREAMS: list[Stream] = [
    Stream("events", "events: Events/Subscribe", "polyport", batched=True),
    Stream("replay", "events from history", "polyport", batched=True),
    Stream("contract", "StreamUsers", "polyport", batched=False),
    Stream("grpcio-events", "grpcio Subscribe", "grpcio", batched=False),
    Stream("grpcio-contract", "grpcio StreamUsers", "grpcio", batched=False),
]
