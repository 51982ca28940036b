"""XML-RPC with xmlrpc.client (a client polyport did not write), and hostile XML."""

from __future__ import annotations

import datetime as dt
import socket
import threading
import xmlrpc.client
from collections.abc import Iterator
from decimal import Decimal

import httpx
import pytest
from pydantic import BaseModel

from polyport import NotFound, Service, Settings
from polyport.testing import RunningNode, serve_in_thread


class Thing(BaseModel):
    name: str
    count: int
    ratio: float
    flag: bool
    blob: bytes
    when: dt.datetime
    day: dt.date
    price: Decimal
    tags: list[str]
    extra: dict[str, int]
    maybe: int | None = None


svc = Service("things")


@svc.method(public=True)
async def echo_thing(thing: Thing) -> Thing:
    """Return the thing as it came."""
    return thing


@svc.method(public=True)
async def add(a: int, b: int = 10) -> int:
    """Add two numbers.

    Args:
        a: The first.
        b: The second.
    """
    return a + b


@svc.method(public=True)
async def big() -> int:
    return 2**40


@svc.method(public=True)
async def missing(key: str) -> str:
    raise NotFound(f"no {key}")


@svc.method(public=True)
async def nothing() -> None:
    return None


@pytest.fixture
def node(db_path: str) -> Iterator[RunningNode]:
    with serve_in_thread(svc, Settings(database=db_path, rate_limit={"enabled": False})) as server:
        yield server


def proxy(node: RunningNode) -> xmlrpc.client.ServerProxy:
    return xmlrpc.client.ServerProxy(f"{node.url}/xmlrpc", allow_none=True, use_builtin_types=True)


def test_types_round_trip(node: RunningNode) -> None:
    """Every XML-RPC-representable type goes and comes back as it was sent."""
    thing = {
        "name": "widget <&> 'x'",
        "count": 7,
        "ratio": 0.25,
        "flag": True,
        "blob": b"\x00\xffbinary",
        "when": dt.datetime(2026, 11, 28, 12, 30, 5),
        "day": "2026-11-28",
        "price": "12.50",
        "tags": ["a", "b"],
        "extra": {"x": 1},
        "maybe": None,
    }
    with proxy(node) as server:
        back = server.things.echo_thing(thing)
    assert back["name"] == thing["name"] and back["count"] == 7 and back["ratio"] == 0.25
    assert back["flag"] is True and back["blob"] == b"\x00\xffbinary"
    assert back["when"] == dt.datetime(2026, 11, 28, 12, 30, 5)
    assert back["day"] == "2026-11-28" and back["price"] == "12.50"
    assert back["tags"] == ["a", "b"] and back["extra"] == {"x": 1} and back["maybe"] is None


def test_names_params_and_introspection(node: RunningNode) -> None:
    """{service}.{method}, bare and camelCase names; positional or one struct; system.*."""
    with proxy(node) as server:
        assert server.things.add(1, 2) == 3
        assert server.add(1) == 11  # defaults apply
        assert server.add({"a": 1, "b": 1}) == 2  # keyword style
        assert server.echoThing is not None
        assert server.big() == 2**40  # beyond i4: sent as i8
        assert server.nothing() is None
        methods = server.system.listMethods()
        assert "things.add" in methods and "system.methodHelp" in methods
        assert server.system.methodHelp("things.add") == "Add two numbers."
        assert server.system.methodSignature("things.add") == [["int", "int", "int"]]


def test_faults(node: RunningNode) -> None:
    """Each error is a fault with the interoperability code and the neutral code in the text."""
    with proxy(node) as server:
        for call, code, text in (
            (lambda: server.missing("k"), -32004, "NOT_FOUND: no k"),
            (lambda: server.nope(), -32601, "NOT_FOUND"),
            (lambda: server.add("x"), -32602, "INVALID_ARGUMENT"),
            (lambda: server.add(1, 2, 3), -32602, "INVALID_ARGUMENT"),
        ):
            with pytest.raises(xmlrpc.client.Fault) as fault:
                call()
            assert fault.value.faultCode == code
            assert fault.value.faultString.startswith(text)


def post(node: RunningNode, body: bytes) -> httpx.Response:
    return httpx.post(f"{node.url}/xmlrpc", content=body, headers={"content-type": "text/xml"})


def fault_of(response: httpx.Response) -> int:
    assert response.status_code == 200
    try:
        xmlrpc.client.loads(response.content)
    except xmlrpc.client.Fault as fault:
        return int(fault.faultCode)
    raise AssertionError(f"not a fault: {response.text}")


def test_hostile_documents_are_refused(node: RunningNode) -> None:
    """Billion laughs, external entities, deep nesting, garbage: a parse fault each."""
    laughs = (
        b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
        b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;">]>'
        b"<methodCall><methodName>things.add</methodName><params><param><value>"
        b"<string>&c;</string></value></param></params></methodCall>"
    )
    assert fault_of(post(node, laughs)) == -32700
    secret = (
        b'<!DOCTYPE x [<!ENTITY s SYSTEM "file:///etc/passwd">]>'
        b"<methodCall><methodName>things.add</methodName><params><param><value>"
        b"<string>&s;</string></value></param></params></methodCall>"
    )
    answer = post(node, secret)
    assert fault_of(answer) == -32700 and b"root:" not in answer.content
    deep = (
        b"<methodCall><methodName>things.add</methodName><params><param>"
        + b"<value><array><data>" * 200
        + b"<value><int>1</int></value>"
        + b"</data></array></value>" * 200
        + b"</param></params></methodCall>"
    )
    assert fault_of(post(node, deep)) == -32700
    for garbage in (
        b"not xml",
        b"<methodCall>",
        b"<other/>",
        b"<methodCall><methodName>things.add</methodName><params><param><value>"
        b"<int>one</int></value></param></params></methodCall>",
    ):
        assert fault_of(post(node, garbage)) == -32700
    huge = b"<methodCall>" + b"x" * (2 * 1024 * 1024) + b"</methodCall>"
    too_big = post(node, huge)
    assert fault_of(too_big) == -32600 and b"PAYLOAD_TOO_LARGE" in too_big.content
    with proxy(node) as server:
        assert server.add(1, 1) == 2  # still serving


def test_external_entities_never_touch_the_network(node: RunningNode) -> None:
    """An entity pointing at a listening socket is refused without a connection to it."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(1.0)
    port = listener.getsockname()[1]
    touched: list[bool] = []

    def watch() -> None:
        try:
            conn, _ = listener.accept()
            conn.close()
            touched.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=watch)
    thread.start()
    body = (
        f'<!DOCTYPE x [<!ENTITY s SYSTEM "http://127.0.0.1:{port}/">]>'
        "<methodCall><methodName>things.add</methodName><params><param><value>"
        "<string>&s;</string></value></param></params></methodCall>"
    ).encode()
    assert fault_of(post(node, body)) == -32700
    thread.join()
    listener.close()
    assert touched == []


def test_the_demo_over_xml_rpc(db_path: str) -> None:
    """xmlrpc.client calls the demo's methods, including the guide's createUser style."""
    from polyport.demo.shop import shop

    with (
        serve_in_thread(shop, Settings(dev=True, database=db_path)) as server,
        proxy(server) as client,
    ):
        user = client.createUser({"name": "Alice", "email": "alice7@example.com"})
        assert user["name"] == "Alice"
        assert client.shop.get_user(user["id"])["email"] == "alice7@example.com"
        order = client.shop.create_order(user["id"], [{"product_id": 1, "quantity": 1}])
        assert order["status"] == "pending" and order["total"] == "89.00"
        assert client.shop.update_order(order["id"], "paid")["status"] == "paid"
        assert len(client.shop.list_products(2)["items"]) == 2
