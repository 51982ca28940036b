"""JSON-RPC 2.0 over HTTP and WebSocket, and its OpenRPC document."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
import websockets

from polyport import Settings
from polyport.testing import RunningNode, serve_in_thread


@pytest.fixture
def node(db_path: str) -> Iterator[RunningNode]:
    from polyport.demo.shop import shop

    settings = Settings.model_validate(
        {"dev": True, "database": db_path, "jsonrpc": {"max_batch": 5}}
    )
    with serve_in_thread(shop, settings) as server:
        yield server


def rpc(node: RunningNode, payload: Any) -> Any:
    response = httpx.post(f"{node.url}/jsonrpc", json=payload)
    assert response.status_code == 200, response.text
    return response.json()


def test_named_positional_and_guide_style_calls(node: RunningNode) -> None:
    """{service}.{method} with named or positional params; createUser(name=…, email=…)."""
    assert rpc(
        node, {"jsonrpc": "2.0", "method": "shop.multiply", "params": {"a": 5, "b": 7}, "id": 1}
    ) == {"jsonrpc": "2.0", "result": 35, "id": 1}
    assert (
        rpc(node, {"jsonrpc": "2.0", "method": "shop.multiply", "params": [6, 7], "id": "x"})[
            "result"
        ]
        == 42
    )
    created = rpc(
        node,
        {
            "jsonrpc": "2.0",
            "method": "createUser",
            "params": {"name": "Alice", "email": "alice9@example.com"},
            "id": 2,
        },
    )
    assert created["result"]["name"] == "Alice" and created["id"] == 2
    page = rpc(
        node, {"jsonrpc": "2.0", "method": "shop.list_products", "params": {"limit": 2}, "id": 3}
    )
    assert len(page["result"]["items"]) == 2 and page["result"]["next_cursor"]


def test_errors_follow_the_specification_and_the_design(node: RunningNode) -> None:
    """-32700, -32600, -32601, -32602 and the core errors' own codes, with data.code."""
    broken = httpx.post(
        f"{node.url}/jsonrpc", content=b'{"jsonrpc": ', headers={"content-type": "application/json"}
    ).json()
    assert broken["error"]["code"] == -32700 and broken["id"] is None
    for bad in (
        {"method": "shop.multiply", "id": 1},
        {"jsonrpc": "1.0", "method": "x", "id": 1},
        {"jsonrpc": "2.0", "method": 5, "id": 1},
        {"jsonrpc": "2.0", "id": 1},
        {"jsonrpc": "2.0", "method": "shop.multiply", "params": "a", "id": 1},
        {"jsonrpc": "2.0", "method": "shop.multiply", "id": {"no": 1}},
        [],
        5,
    ):
        answer = rpc(node, bad)
        assert answer["error"]["code"] == -32600, bad
    missing = rpc(node, {"jsonrpc": "2.0", "method": "nope", "id": 1})
    assert missing["error"]["code"] == -32601
    invalid = rpc(
        node, {"jsonrpc": "2.0", "method": "shop.multiply", "params": {"a": "x"}, "id": 1}
    )
    assert invalid["error"]["code"] == -32602
    assert {d["field"] for d in invalid["error"]["data"]["details"]} == {"a", "b"}
    too_many = rpc(
        node, {"jsonrpc": "2.0", "method": "shop.multiply", "params": [1, 2, 3], "id": 1}
    )
    assert too_many["error"]["code"] == -32602
    not_found = rpc(
        node, {"jsonrpc": "2.0", "method": "shop.get_user", "params": {"id": 999}, "id": 1}
    )
    assert not_found["error"]["code"] == -32004
    assert not_found["error"]["data"]["code"] == "NOT_FOUND"
    conflict = rpc(
        node,
        {
            "jsonrpc": "2.0",
            "method": "shop.create_user",
            "params": {"name": "A", "email": "alice@example.com"},
            "id": 1,
        },
    )
    assert conflict["error"]["code"] == -32009


def test_batches_and_notifications(node: RunningNode) -> None:
    """A batch is answered in order; notifications are run and not answered."""
    answer = rpc(
        node,
        [
            {"jsonrpc": "2.0", "method": "shop.multiply", "params": [2, 3], "id": 1},
            {
                "jsonrpc": "2.0",
                "method": "shop.create_user",
                "params": {"name": "N", "email": "notified@example.com"},
            },
            {"jsonrpc": "2.0", "method": "nope", "id": 2},
            {"not": "a request"},
        ],
    )
    assert [a.get("id") for a in answer] == [1, 2, None]
    assert answer[0]["result"] == 6 and answer[1]["error"]["code"] == -32601
    assert answer[2]["error"]["code"] == -32600
    users = httpx.get(f"{node.url}/v1/users?limit=100").json()["items"]
    assert any(u["email"] == "notified@example.com" for u in users)  # the notification ran
    silent = httpx.post(
        f"{node.url}/jsonrpc",
        json=[{"jsonrpc": "2.0", "method": "shop.multiply", "params": [1, 1]}],
    )
    assert silent.status_code == 204 and silent.content == b""
    too_big = rpc(
        node,
        [
            {"jsonrpc": "2.0", "method": "shop.multiply", "params": [1, 1], "id": i}
            for i in range(6)
        ],
    )
    assert too_big["error"]["code"] == -32600 and "at most 5" in too_big["error"]["message"]


def test_openrpc_document(node: RunningNode) -> None:
    """rpc.discover and /openrpc.json give the same OpenRPC document, from the type graph."""
    document = httpx.get(f"{node.url}/openrpc.json").json()
    discovered = rpc(node, {"jsonrpc": "2.0", "method": "rpc.discover", "id": 1})["result"]
    assert discovered == document
    assert document["openrpc"].startswith("1.")
    methods = {m["name"]: m for m in document["methods"]}
    adjust = methods["shop.adjust_stock"]
    assert adjust["summary"].startswith("Add (or remove")
    assert [p["name"] for p in adjust["params"]] == ["product_id", "delta", "reason"]
    assert adjust["params"][1]["description"] == "Units to add; negative to remove."
    assert methods["shop.get_user"]["result"]["schema"] == {"$ref": "#/components/schemas/User"}
    assert "User" in document["components"]["schemas"]
    assert "shop.watch" not in " ".join(methods)  # no streams over JSON-RPC


def test_secure_mode_errors(db_path: str) -> None:
    """Without credentials: -32001 for protected methods; public ones answer."""
    from polyport.demo.shop import shop

    settings = Settings.model_validate(
        {
            "database": db_path,
            "auth": {"api_keys": [{"key": "k", "subject": "s"}]},
        }
    )
    with serve_in_thread(shop, settings) as server:
        denied = rpc(server, {"jsonrpc": "2.0", "method": "shop.get_user", "params": [1], "id": 1})
        assert denied["error"]["code"] == -32001
        assert (
            rpc(server, {"jsonrpc": "2.0", "method": "shop.multiply", "params": [2, 2], "id": 1})[
                "result"
            ]
            == 4
        )
        allowed = httpx.post(
            f"{server.url}/jsonrpc",
            headers={"x-api-key": "k"},
            json={"jsonrpc": "2.0", "method": "shop.get_user", "params": [1], "id": 1},
        ).json()
        assert allowed["result"]["id"] == 1


async def test_json_rpc_over_websocket(node: RunningNode) -> None:
    """The same requests, batches and notifications as text messages on /jsonrpc."""
    url = node.url.replace("http://", "ws://") + "/jsonrpc"
    async with websockets.connect(url) as ws:
        await ws.send(
            orjson.dumps(
                {"jsonrpc": "2.0", "method": "shop.multiply", "params": [3, 4], "id": 7}
            ).decode()
        )
        assert orjson.loads(await ws.recv()) == {"jsonrpc": "2.0", "result": 12, "id": 7}
        await ws.send(
            orjson.dumps(
                [
                    {"jsonrpc": "2.0", "method": "shop.multiply", "params": [1, 2], "id": 1},
                    {"jsonrpc": "2.0", "method": "shop.multiply", "params": [1, 2]},
                ]
            ).decode()
        )
        assert [a["id"] for a in orjson.loads(await ws.recv())] == [1]
        await ws.send("{garbage")
        assert orjson.loads(await ws.recv())["error"]["code"] == -32700
