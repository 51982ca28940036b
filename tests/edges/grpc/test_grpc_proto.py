"""The exported .proto: compiled by grpc_tools.protoc, its stubs call the running server."""

from __future__ import annotations

import importlib
import importlib.resources
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import grpc
import httpx
import pytest
from grpc_tools import protoc
from typer.testing import CliRunner

from polyport.cli import app
from polyport.edges.grpc.binding import events_proto, service_proto
from polyport.testing import RunningNode

pytestmark = pytest.mark.timeout(120)
MODULES = ("usersvc_pb2", "usersvc_pb2_grpc", "polyport_events_pb2", "polyport_events_pb2_grpc")


@pytest.fixture(scope="module")
def stubs(
    node: RunningNode, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, ModuleType]]:
    """usersvc_pb2(_grpc) and polyport_events_pb2(_grpc), generated from what the node serves."""
    folder = tmp_path_factory.mktemp("protos")
    for path, name in (
        ("/grpc/usersvc.proto", "usersvc.proto"),
        ("/grpc/polyport-events.proto", "polyport_events.proto"),
    ):
        response = httpx.get(node.url + path)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        (folder / name).write_text(response.text)
    include = str(importlib.resources.files("grpc_tools") / "_proto")
    status = protoc.main(
        [
            "protoc",
            f"-I{folder}",
            f"-I{include}",
            f"--python_out={folder}",
            f"--grpc_python_out={folder}",
            "usersvc.proto",
            "polyport_events.proto",
        ]
    )
    assert status == 0
    sys.path.insert(0, str(folder))
    try:
        yield {name: importlib.import_module(name) for name in MODULES}
    finally:
        sys.path.remove(str(folder))
        for name in MODULES:
            sys.modules.pop(name, None)


def test_generated_stubs_call_all_four_kinds(
    stubs: dict[str, ModuleType], channel: grpc.Channel
) -> None:
    """GetUser, ListUsers (server stream), CreateUser (client stream), ChatStream (bidi)."""
    pb2, pb2_grpc = stubs["usersvc_pb2"], stubs["usersvc_pb2_grpc"]
    stub: Any = pb2_grpc.UsersvcServiceStub(channel)
    assert stub.GetUser(pb2.GetUserRequest(id=1)).role == pb2.ROLE_ADMIN
    assert [u.name for u in stub.ListUsers(pb2.ListUsersRequest(limit=1))] == ["Ada"]
    created = stub.CreateUser(iter([pb2.UserData(name="Stub", email="stub@example.com")]))
    assert created.name == "Stub" and created.id > 1
    replies = stub.ChatStream(iter([pb2.Message(user="me", text="ping")]))
    assert [r.text for r in replies] == ["PING"]
    assert stub.SumNumbers(iter([pb2.SumNumbersRequest(scale=2, numbers=5)])).value == 10
    assert stub.Stats(pb2.StatsRequest(n=2)).n == 2  # an rpc named like its result message
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetUser(pb2.GetUserRequest(id=12345))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_generated_event_stubs_subscribe(
    stubs: dict[str, ModuleType], channel: grpc.Channel, node: RunningNode
) -> None:
    """The events .proto compiles too, and its stub streams batches."""
    pb2, pb2_grpc = stubs["polyport_events_pb2"], stubs["polyport_events_pb2_grpc"]
    stream = pb2_grpc.EventsStub(channel).Subscribe(
        pb2.SubscribeRequest(channels=["notes/stubs"]), timeout=20
    )
    assert not next(stream).events
    httpx.post(f"{node.url}/v1/post_note", json={"topic": "stubs", "text": "hi"})
    (event,) = next(stream).events
    stream.cancel()
    assert event.channel == "notes/stubs" and event.type == "notes.posted"


def test_the_proto_keeps_docstrings(node: RunningNode) -> None:
    """Comments come from docstrings and parameter descriptions."""
    text = httpx.get(node.url + "/grpc/usersvc.proto").text
    assert "// Read one user.\n  rpc GetUser(GetUserRequest) returns (User);" in text
    assert "  // The user's id.\n  int64 id = 1;" in text
    assert "rpc ListUsers(ListUsersRequest) returns (stream User);" in text
    assert "rpc CreateUser(stream UserData) returns (User);" in text
    assert "rpc ChatStream(stream Message) returns (stream Message);" in text
    assert "ROLE_UNSPECIFIED = 0;" in text and "SWITCH_OFF = 0;" in text
    assert "SWITCH_UNSPECIFIED" not in text and "LEVEL_UNSPECIFIED = 0;" in text


def test_cli_prints_the_proto() -> None:
    """`polyport proto MODULE:SERVICE` prints the file a node serves; --events the other one."""
    from polyport.demo.shop import shop

    result = CliRunner().invoke(app, ["proto", "polyport.demo.shop:shop"])
    assert result.exit_code == 0, result.output
    assert result.output == service_proto(shop)
    assert "service ShopService {" in result.output
    events = CliRunner().invoke(app, ["proto", "--events"])
    assert events.exit_code == 0 and events.output == events_proto()
    missing = CliRunner().invoke(app, ["proto", "polyport.demo.shop:nope"])
    assert missing.exit_code == 2 and "has no attribute 'nope'" in missing.output
