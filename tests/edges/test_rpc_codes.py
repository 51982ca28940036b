"""JSON-RPC and XML-RPC answer each core error with the same number, from one table.

Before the table was shared, each edge kept its own, and they disagreed: a
``PayloadTooLarge`` was -32600 as an XML-RPC fault and -32602 as a JSON-RPC
error, and an ``InvalidArgument`` that could not be parsed was -32700 on
XML-RPC and -32602 on JSON-RPC. Both now say -32600 and -32700.
"""

from __future__ import annotations

import xmlrpc.client
from collections.abc import Iterator

import httpx
import pytest

from polyport import (
    Conflict,
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    RateLimited,
    Service,
    Settings,
    Unauthenticated,
    Unavailable,
)
from polyport.core.errors import OutOfRange, PayloadTooLarge, RecoveryFailed, ServiceError
from polyport.rpccodes import InvalidRequest, MethodNotFound, rpc_code
from polyport.testing import RunningNode, serve_in_thread

#: What each error is on both wires: DESIGN.md's table, and the reserved codes.
EXPECTED: dict[str, tuple[ServiceError, int]] = {
    "invalid": (InvalidArgument("bad value"), -32602),
    "out_of_range": (OutOfRange("too big"), -32602),
    "unparseable": (InvalidArgument("cannot parse it", unparseable=True), -32700),
    "too_large": (PayloadTooLarge("too much"), -32600),
    "not_found": (NotFound("no such thing"), -32004),
    "conflict": (Conflict("already there"), -32009),
    "unauthenticated": (Unauthenticated("who are you"), -32001),
    "permission_denied": (PermissionDenied("not you"), -32003),
    "rate_limited": (RateLimited("slow down", retry_after=1.0), -32029),
    "deadline": (DeadlineExceeded("too late"), -32008),
    "unavailable": (Unavailable("try later"), -32053),
    "recovery_failed": (RecoveryFailed("gone"), -32603),
    "internal": (ServiceError("broken"), -32603),
}

svc = Service("codes")


@svc.method(public=True)
async def fail(name: str) -> int:
    """Raise the error named ``name`` in EXPECTED."""
    raise EXPECTED[name][0]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningNode]:
    db = tmp_path_factory.mktemp("codes") / "db.sqlite3"
    settings = Settings(database=str(db), rate_limit={"enabled": False})
    with serve_in_thread(svc, settings, edges=["jsonrpc", "xmlrpc"]) as running:
        yield running


def json_rpc_code(node: RunningNode, method: str, params: dict[str, object]) -> int:
    answer = httpx.post(
        f"{node.url}/jsonrpc",
        json={"jsonrpc": "2.0", "method": method, "params": params, "id": 1},
    ).json()
    return int(answer["error"]["code"])


def xml_rpc_code(node: RunningNode, method: str, *params: object) -> int:
    with (
        xmlrpc.client.ServerProxy(f"{node.url}/xmlrpc") as server,
        pytest.raises(xmlrpc.client.Fault) as fault,
    ):
        getattr(server, method)(*params)
    return int(fault.value.faultCode)


def test_the_table_gives_each_core_error_its_code() -> None:
    """The shared table, error by error, and the edges' own protocol errors."""
    for error, code in EXPECTED.values():
        assert rpc_code(error) == code, error
    assert rpc_code(MethodNotFound("no method")) == -32601
    assert rpc_code(InvalidRequest("no 'method'")) == -32600


@pytest.mark.parametrize("name", list(EXPECTED))
def test_both_edges_send_the_same_code(node: RunningNode, name: str) -> None:
    """A handler's error reaches a JSON-RPC and an XML-RPC client as the same number."""
    expected = EXPECTED[name][1]
    assert json_rpc_code(node, "codes.fail", {"name": name}) == expected
    assert xml_rpc_code(node, "codes.fail", name) == expected


def test_an_unknown_method_is_32601_on_both(node: RunningNode) -> None:
    """No such method: -32601 on both wires, not the -32004 of a handler's NotFound."""
    assert json_rpc_code(node, "codes.nope", {}) == -32601
    assert xml_rpc_code(node, "codes.nope") == -32601
