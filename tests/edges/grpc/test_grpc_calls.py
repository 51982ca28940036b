"""gRPC calls with no generated code: reflection, the four kinds, every type, errors, bad input."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any
from uuid import UUID

import grpc
import pytest
from google.protobuf import json_format, message_factory
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from polyport.testing import RunningNode

PACKAGE = "polyport.usersvc.v1"
SERVICE = f"{PACKAGE}.UsersvcService"
Reflected = Any  # conftest.Reflected: a client built from the reflection service

pytestmark = pytest.mark.timeout(60)


def details(error: grpc.RpcError) -> dict[str, Any]:
    """The google.rpc details of a failed call, by kind."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None and status.code == error.code().value[0]
    found: dict[str, Any] = {}
    for packed in status.details:
        for kind in (
            error_details_pb2.ErrorInfo,
            error_details_pb2.BadRequest,
            error_details_pb2.RetryInfo,
        ):
            if packed.Is(kind.DESCRIPTOR):
                message = kind()
                packed.Unpack(message)
                found[kind.__name__] = message
    return found


def test_reflection_lists_every_service(channel: grpc.Channel, usersvc: Any) -> None:
    """The reflection service lists the contract, events, health and reflection itself."""
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    (response,) = list(stub.ServerReflectionInfo(iter([request])))
    names = {s.name for s in response.list_services_response.service}
    assert names == {
        SERVICE,
        "polyport.events.v1.Events",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }
    pool = usersvc.Reflected(channel).pool
    for name in names:  # each one resolves through the server's own descriptors
        assert pool.FindServiceByName(name).full_name == name


def test_unary_get_user(rpc: Reflected) -> None:
    """GetUser(GetUserRequest) returns (User), the enum as its proto value."""
    user = rpc("GetUser", {"id": 1})
    assert (user.id, user.name, user.email) == (1, "Ada", "ada@example.com")
    roles = rpc.service.file.enum_types_by_name["Role"].values_by_name
    assert user.role == roles["ROLE_ADMIN"].number


def test_server_stream_list_users(rpc: Reflected) -> None:
    """ListUsers(ListUsersRequest) returns (stream User): one message per user."""
    users = list(rpc("ListUsers", {"limit": 5}))
    assert [u.name for u in users][:1] == ["Ada"] and all(u.id for u in users)
    admins = list(rpc("ListUsers", {"role": 1}))  # ROLE_ADMIN
    assert [u.name for u in admins] == ["Ada"]


def test_client_stream_create_user(rpc: Reflected) -> None:
    """CreateUser(stream UserData) returns (User)."""
    data = [rpc.message("UserData", name=n, email=f"{n}@example.com") for n in ("Bo", "Cy")]
    user = rpc("CreateUser", iter(data))
    assert user.name == "Cy" and user.id > 1
    assert rpc("GetUser", {"id": user.id}).email == "Cy@example.com"


def test_bidi_chat_stream(rpc: Reflected) -> None:
    """ChatStream(stream Message) returns (stream Message), answered as they arrive."""
    sent = [rpc.message("Message", user="me", text=t) for t in ("hi", "there")]
    answers = list(rpc("ChatStream", iter(sent)))
    assert [(a.user, a.text) for a in answers] == [("bot", "HI"), ("bot", "THERE")]


def test_client_stream_parameters_come_first(rpc: Reflected) -> None:
    """Other parameters of a client stream travel in its first message."""
    first = rpc.message("SumNumbersRequest", scale=10, numbers=1)
    rest = [rpc.message("SumNumbersRequest", numbers=n) for n in (2, 3)]
    assert rpc("SumNumbers", iter([first, *rest])).value == 60


def test_server_stream_errors(rpc: Reflected) -> None:
    """A stream refused at the start, or failing midway, ends with the table's status."""
    assert [m.value for m in rpc("Countdown", {"start": 3})] == [3, 2, 1]
    with pytest.raises(grpc.RpcError) as caught:
        list(rpc("Countdown", {"start": 9}))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(caught.value)["BadRequest"].field_violations[0].field == "start"
    stream = rpc("Countdown", {"start": 0})
    assert next(stream).value == 1
    with pytest.raises(grpc.RpcError) as caught:
        next(stream)
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert caught.value.details() == "internal error"


def everything(rpc: Reflected) -> Any:
    role = rpc.service.file.enum_types_by_name["Role"].values_by_name
    return rpc.message(
        "Everything",
        i=-(2**63),
        f=0.1,
        b=True,
        s="héllo ✓",
        raw=b"\x00\xff\x10",
        dec="12.3450",
        uid="12345678-1234-5678-1234-567812345678",
        at={"seconds": 1_700_000_000, "nanos": 123_456_000},
        day="2024-02-29",
        clock="23:59:59.999999",
        role=role["ROLE_MEMBER"].number,
        level=5,
        switch=0,
        mode="slow",
        small=3,
        anything=json_format.ParseDict(
            {"a": [1, "x", None, True, 2.5]}, rpc.message("google.protobuf.Value")
        ),
        address={"street": "Main St", "zip": "12345"},
        pet={"dog": {"kind": "dog", "good": True}},
        num_or_text={"string_value": "seven"},
        tags=["a", "b"],
        addresses=[{"street": "One"}, {"street": "Two", "zip": "2"}],
        grid=[{"items": [1, 2]}, {"items": []}, {"items": [3]}],
        sparse=[{"value": 1}, {}, {"value": 0}],
        counts={"x": 1, "y": 0},
        by_id={7: {"street": "Seven"}},
        nested_map={"k": {"items": ["v1", "v2"]}},
        times=[{"seconds": -86400}, {"seconds": 0, "nanos": 1000}],
        time_map={"t": {"seconds": 86400, "nanos": 999_999_000}},
        maybe_int=0,
        maybe_role=role["ROLE_ADMIN"].number,
        maybe_list={"items": [4, 5]},
        maybe_union={"int64_value": 5},
    )


def test_every_type_round_trips_exactly(rpc: Reflected, usersvc: Any) -> None:
    """Each type of the mapping arrives as the right Python value and comes back unchanged."""
    sent = everything(rpc)
    back = rpc("Echo", rpc.message("EchoRequest", value=sent))
    expected = type(sent)()
    expected.CopyFrom(sent)
    expected.with_default = 7  # the default the handler saw
    assert back == expected
    utc, m = dt.UTC, usersvc
    assert m.SEEN["echo"] == m.Everything(
        i=-(2**63),
        f=0.1,
        b=True,
        s="héllo ✓",
        raw=b"\x00\xff\x10",
        dec=Decimal("12.3450"),
        uid=UUID("12345678-1234-5678-1234-567812345678"),
        at=dt.datetime(2023, 11, 14, 22, 13, 20, 123456, tzinfo=utc),
        day=dt.date(2024, 2, 29),
        clock=dt.time(23, 59, 59, 999999),
        role=m.Role.MEMBER,
        level=m.Level.HIGH,
        switch=m.Switch.OFF,
        mode="slow",
        small=3,
        anything={"a": [1, "x", None, True, 2.5]},
        address=m.Address(street="Main St", zip="12345"),
        pet=m.Dog(good=True),
        num_or_text="seven",
        tags=["a", "b"],
        addresses=[m.Address(street="One"), m.Address(street="Two", zip="2")],
        grid=[[1, 2], [], [3]],
        sparse=[1, None, 0],
        counts={"x": 1, "y": 0},
        by_id={7: m.Address(street="Seven")},
        nested_map={"k": ["v1", "v2"]},
        times=[
            dt.datetime(1969, 12, 31, tzinfo=utc),
            dt.datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=utc),
        ],
        time_map={"t": dt.datetime(1970, 1, 2, 0, 0, 0, 999999, tzinfo=utc)},
        maybe_int=0,
        maybe_role=m.Role.ADMIN,
        maybe_list=[4, 5],
        maybe_union=5,
    )
    exact = m.SEEN["echo"]
    assert type(exact.dec) is Decimal and str(exact.dec) == "12.3450"
    assert type(exact.i) is int and type(exact.anything["a"][0]) is int


def test_absent_optional_fields_stay_absent(rpc: Reflected, usersvc: Any) -> None:
    """Unset optional fields read as None (or their default) and come back unset."""
    sent = everything(rpc)
    for name in ("maybe_int", "maybe_role", "maybe_list", "maybe_union"):
        sent.ClearField(name)
    back = rpc("Echo", rpc.message("EchoRequest", value=sent))
    seen = usersvc.SEEN["echo"]
    assert (seen.maybe_int, seen.maybe_role, seen.maybe_list, seen.maybe_union) == (None,) * 4
    for name in ("maybe_int", "maybe_str", "maybe_role", "maybe_address", "maybe_list"):
        assert not back.HasField(name), name


def test_plain_values_and_wrappers(rpc: Reflected, usersvc: Any) -> None:
    """Non-model results come as {value}; a list of lists as wrapper messages."""
    grid = [{"items": [1]}, {"items": [2, 3]}]
    back = rpc("EchoValues", {"grid": grid, "choice": {"string_value": "s"}})
    assert [list(row.items) for row in back.value] == [[1], [2, 3]]
    seen = usersvc.SEEN
    assert seen["echo_values"] == {"grid": [[1], [2, 3]], "maybe": None, "choice": "s"}
    rpc("EchoValues", {"grid": [], "maybe": 0})
    assert seen["echo_values"]["maybe"] == 0  # proto3 optional: a zero that was sent


def test_optional_result_and_empty(rpc: Reflected, usersvc: Any) -> None:
    """A None result leaves the value unset; a method returning None answers Empty."""
    assert not rpc("MaybeUser", {"id": 404}).HasField("value")
    assert rpc("MaybeUser", {"id": 1}).value.name == "Ada"
    empty = rpc("Nothing", {})
    assert empty.DESCRIPTOR.full_name == "google.protobuf.Empty" and usersvc.SEEN["nothing"]


def test_results_are_serialized_as_declared(rpc: Reflected) -> None:
    """Computed fields stay off the wire; field serializers and aliases apply."""
    assert rpc("Stats", {"n": 4}).n == 4
    shouted = rpc("Shout", {"text": "hey"})
    assert (shouted.text, shouted.length) == ("HEY", 3)


@pytest.mark.parametrize(
    ("kind", "code", "reason"),
    [
        ("not_found", grpc.StatusCode.NOT_FOUND, "NOT_FOUND"),
        ("conflict", grpc.StatusCode.ALREADY_EXISTS, "CONFLICT"),
        ("denied", grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED"),
        ("rate", grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED"),
        ("unavailable", grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE"),
        ("internal", grpc.StatusCode.INTERNAL, "INTERNAL"),
    ],
)
def test_error_table(rpc: Reflected, kind: str, code: grpc.StatusCode, reason: str) -> None:
    """Each core error has its status code and an ErrorInfo; internals never leak."""
    with pytest.raises(grpc.RpcError) as caught:
        rpc("Fail", {"kind": kind})
    error = caught.value
    assert error.code() == code
    info = details(error)
    assert info["ErrorInfo"].reason == reason and info["ErrorInfo"].domain == "polyport"
    if kind == "internal":
        assert error.details() == "internal error"
        assert "secret" not in str(error.debug_error_string())
        assert info["ErrorInfo"].metadata["request_id"]
    if kind == "rate":
        assert info["RetryInfo"].retry_delay.ToMilliseconds() == 2500


def test_validation_errors_name_the_fields(rpc: Reflected) -> None:
    """INVALID_ARGUMENT carries a BadRequest with one violation per field."""
    with pytest.raises(grpc.RpcError) as caught:
        rpc("GetUser", {"id": 0})
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    (violation,) = details(caught.value)["BadRequest"].field_violations
    assert violation.field == "id" and "greater than or equal to 1" in violation.description

    sent = everything(rpc)
    sent.ClearField("address")
    sent.role = 0  # ROLE_UNSPECIFIED: as good as absent
    with pytest.raises(grpc.RpcError) as caught:
        rpc("Echo", rpc.message("EchoRequest", value=sent))
    fields = {v.field for v in details(caught.value)["BadRequest"].field_violations}
    assert fields == {"value.address", "value.role"}

    bad = [rpc.message("UserData", name="", email="x@example.com")]
    with pytest.raises(grpc.RpcError) as caught:
        rpc("CreateUser", iter(bad))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "name" in details(caught.value)["BadRequest"].field_violations[0].field


def test_unknown_enum_number_is_invalid(rpc: Reflected) -> None:
    """An enum number the contract does not know is the caller's error."""
    sent = everything(rpc)
    sent.level = 3
    with pytest.raises(grpc.RpcError) as caught:
        rpc("Echo", rpc.message("EchoRequest", value=sent))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_bad_bytes_unknown_methods_and_oversized_messages(
    channel: grpc.Channel, rpc: Reflected
) -> None:
    """Garbage, truncated and oversized messages get their own codes; the server carries on."""
    raw = channel.unary_unary(f"/{SERVICE}/GetUser")  # identity serializers: bytes on the wire
    for payload in (b"not a protobuf", b"\xff\xff\xff\xff", b"\x08"):
        with pytest.raises(grpc.RpcError) as caught:
            raw(payload)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, payload
    valid = rpc.message("EchoRequest", value=everything(rpc)).SerializeToString()
    with pytest.raises(grpc.RpcError) as caught:
        channel.unary_unary(f"/{SERVICE}/Echo")(valid[: len(valid) // 2])
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    with pytest.raises(grpc.RpcError) as caught:
        channel.unary_unary(f"/{SERVICE}/NoSuchMethod")(b"")
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED

    huge = rpc.message("GetUserRequest", id=1).SerializeToString() + b"\x12" + b"\x80\x80\x81\x02"
    huge += b"x" * (4 * 1024 * 1024 + 64)  # an unknown field past the 4 MiB limit
    with pytest.raises(grpc.RpcError) as caught:
        raw(huge)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

    assert rpc("GetUser", {"id": 1}).name == "Ada"  # unaffected


def test_health_is_serving(channel: grpc.Channel) -> None:
    """grpc.health.v1 answers SERVING for the server and each service."""
    stub = health_pb2_grpc.HealthStub(channel)
    for service in ("", SERVICE, "polyport.events.v1.Events"):
        response = stub.Check(health_pb2.HealthCheckRequest(service=service))
        assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_deadlines_reach_the_handler(rpc: Reflected, usersvc: Any) -> None:
    """A client deadline ends a slow call with DEADLINE_EXCEEDED; the handler saw it."""
    with pytest.raises(grpc.RpcError) as caught:
        rpc("Slow", {"seconds": 2.0}, timeout=0.4)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert 0 < usersvc.SEEN["remaining"] <= 0.45  # (clocks of client and server differ)
    assert rpc("Slow", {"seconds": 0.0}, timeout=5).value == 0.0
    assert 4 < usersvc.SEEN["remaining"] <= 5.1


def test_node_catalog_lists_grpc_methods(node: RunningNode, target: str) -> None:
    """The catalog names every method as `grpc HOST:PORT package.Service/Method`."""
    entries = [e for e in node.node.catalog() if e.pattern == "gRPC"]
    methods = {e.target: e.address for e in entries if e.kind == "method"}
    assert methods["get_user"] == f"grpc {target} {SERVICE}/GetUser"
    assert set(methods) == set(node.node.runtime.spec.methods)
    assert any(e.kind == "event" and "Events/Subscribe" in e.address for e in entries)


def test_messages_have_no_generated_code(rpc: Reflected) -> None:
    """The classes used here come from descriptors fetched over the wire."""
    cls = message_factory.GetMessageClass(rpc.pool.FindMessageTypeByName(f"{PACKAGE}.User"))
    assert cls.DESCRIPTOR.file.pool is rpc.pool
