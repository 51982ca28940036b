"""The request-response contract, run against every edge that carries calls.

The same cases — a success, each core error, each type of the type graph
round-tripping — over REST, JSON-RPC, XML-RPC, gRPC, SOAP and GraphQL, each
with a client polyport did not write (httpx, xmlrpc.client, grpcio with
reflection, zeep; GraphQL documents written from the served introspection).
"""

from __future__ import annotations

import datetime as dt
import uuid
import xmlrpc.client
from collections.abc import Iterator
from decimal import Decimal
from enum import StrEnum
from typing import Any, Literal

import httpx
import pytest
from pydantic import BaseModel, ConfigDict

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
from polyport.testing import RunningNode, serve_in_thread


class Color(StrEnum):
    RED = "red"
    GREEN = "green"


class Inner(BaseModel):
    label: str
    weight: float


class Everything(BaseModel):
    """One of each."""

    model_config = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")

    count: int
    ratio: float
    flag: bool
    text: str
    blob: bytes
    when: dt.datetime
    day: dt.date
    uid: uuid.UUID
    price: Decimal
    color: Color
    maybe: int | None = None
    numbers: list[int] = []
    scores: dict[str, int] = {}
    inner: Inner
    inners: list[Inner] = []
    kind: Literal["a", "b"] = "a"


svc = Service("contract")


@svc.method(public=True)
async def echo(value: Everything) -> Everything:
    """Everything back as it came."""
    return value


@svc.method(public=True)
async def echo_int(value: int) -> int:
    return value


@svc.method(public=True)
async def echo_text(value: str) -> str:
    return value


@svc.method(public=True)
async def echo_list(values: list[str]) -> list[str]:
    return values


@svc.method(public=True)
async def echo_optional(value: int | None = None) -> int | None:
    return value


@svc.method(public=True)
async def multiply(a: int, b: int) -> int:
    return a * b


class Count(BaseModel):
    n: int


@svc.method(public=True)
async def count_of(a: int, b: int) -> Count:
    """A model holding a product: its int is held by the wires that have a width."""
    return Count(n=a * b)


ERRORS: dict[str, Exception] = {
    "INVALID_ARGUMENT": InvalidArgument("bad value"),
    "NOT_FOUND": NotFound("no such thing"),
    "CONFLICT": Conflict("already there"),
    "UNAUTHENTICATED": Unauthenticated("who are you"),
    "PERMISSION_DENIED": PermissionDenied("not you"),
    "RATE_LIMITED": RateLimited("slow down", retry_after=1.0),
    "DEADLINE_EXCEEDED": DeadlineExceeded("too late"),
    "UNAVAILABLE": Unavailable("try later"),
    "INTERNAL": RuntimeError("the database password is hunter2"),
}


@svc.method(public=True)
async def fail(code: str) -> int:
    """Raise the error named by ``code``."""
    raise ERRORS[code]


SAMPLE = {
    "count": 2**40,
    "ratio": 0.125,
    "flag": True,
    "text": 'héllo <&> "quoted"',
    "blob": b"\x00\xff\x10binary",
    "when": dt.datetime(2026, 11, 28, 12, 30, 5, 250000, tzinfo=dt.UTC),
    "day": dt.date(2026, 11, 28),
    "uid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "price": Decimal("12.50"),
    "color": Color.GREEN,
    "maybe": None,
    "numbers": [1, -2, 3],
    "scores": {"x": 1, "y": 2},
    "inner": {"label": "in", "weight": 1.5},
    "inners": [{"label": "a", "weight": 0.5}],
    "kind": "b",
}


class CallFailed(Exception):
    """A call answered with an error; ``code`` is the protocol-neutral code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class RestClient:
    name = "rest"

    def __init__(self, node: RunningNode) -> None:
        self.http = httpx.Client(base_url=node.url)

    def call(self, method: str, **args: Any) -> Any:
        response = self.http.post(f"/v1/{method}", json=to_json(args))
        if response.status_code >= 400:
            body = response.json()
            raise CallFailed(body["code"], body["detail"])
        return response.json()

    def close(self) -> None:
        self.http.close()


class JsonRpcClient:
    name = "jsonrpc"

    def __init__(self, node: RunningNode) -> None:
        self.http = httpx.Client(base_url=node.url)

    def call(self, method: str, **args: Any) -> Any:
        answer = self.http.post(
            "/jsonrpc",
            json={
                "jsonrpc": "2.0",
                "method": f"contract.{method}",
                "params": to_json(args),
                "id": 1,
            },
        ).json()
        if "error" in answer:
            raise CallFailed(answer["error"]["data"]["code"], answer["error"]["message"])
        return answer["result"]

    def close(self) -> None:
        self.http.close()


class I8Marshaller(xmlrpc.client.Marshaller):
    """The standard library's marshaller, writing ints beyond 32 bits as <i8> (which
    it already reads) instead of refusing them."""

    dispatch = dict(xmlrpc.client.Marshaller.dispatch)

    def dump_long(self, value: int, write: Any) -> None:
        tag = "int" if xmlrpc.client.MININT <= value <= xmlrpc.client.MAXINT else "i8"
        write(f"<value><{tag}>{value}</{tag}></value>\n")

    dispatch[int] = dump_long


class XmlRpcClient:
    """XML-RPC's dateTime.iso8601 has whole seconds and no zone: the protocol's limit."""

    name = "xmlrpc"
    whole_seconds = True

    def __init__(self, node: RunningNode) -> None:
        self.http = httpx.Client(base_url=node.url)

    def call(self, method: str, **args: Any) -> Any:
        params = I8Marshaller(allow_none=True).dumps((to_xmlrpc(args),))
        body = (
            "<?xml version='1.0'?>\n<methodCall><methodName>contract."
            f"{method}</methodName>\n{params}</methodCall>\n"
        )
        response = self.http.post(
            "/xmlrpc", content=body.encode(), headers={"content-type": "text/xml"}
        )
        try:
            (result,), _ = xmlrpc.client.loads(response.content, use_builtin_types=True)
        except xmlrpc.client.Fault as fault:
            code, _, message = fault.faultString.partition(": ")
            raise CallFailed(code, message) from None
        return result

    def close(self) -> None:
        self.http.close()


class SoapClient:
    """zeep, from the served WSDL. zeep reads an empty string as None."""

    name = "soap"
    empty_text_as_none = True

    def __init__(self, node: RunningNode) -> None:
        import zeep

        self.zeep = zeep
        self.client = zeep.Client(f"{node.url}/soap?wsdl")

    def call(self, method: str, **args: Any) -> Any:
        operation = "".join(part.title() for part in method.split("_"))
        args = to_soap(args)
        if method == "echo":  # a dict field is a sequence of <entry> on the SOAP wire
            scores = args["value"]["scores"]
            args["value"]["scores"] = {"entry": [{"key": k, "value": v} for k, v in scores.items()]}
        try:
            result = getattr(self.client.service, operation)(**args)
        except self.zeep.exceptions.Fault as fault:
            code = fault.detail.find(".//{*}code").text
            raise CallFailed(code, fault.message) from None
        plain = self.zeep.helpers.serialize_object(result, dict)
        if method == "echo":
            entries = (plain.get("scores") or {}).get("entry") or []
            plain["scores"] = {e["key"]: e["value"] for e in entries}
        return plain

    def close(self) -> None:
        self.client.transport.session.close()


def to_soap(value: Any) -> Any:
    """zeep takes Python values; UUIDs and enums as text."""
    if isinstance(value, dict):
        return {k: to_soap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_soap(v) for v in value]
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, StrEnum):
        return value.value
    return value


class GrpcClient:
    """grpcio with messages built from what the server's reflection service describes."""

    name = "grpc"

    def __init__(self, node: RunningNode) -> None:
        import grpc
        from google.protobuf import descriptor_pool, message_factory
        from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
            ProtoReflectionDescriptorDatabase,
        )

        self.grpc = grpc
        self.factory = message_factory
        edge = next(e for e in node.node.edges if e.name == "grpc")
        self.channel = grpc.insecure_channel(f"{node.host}:{edge.port}")
        database = ProtoReflectionDescriptorDatabase(self.channel)
        self.service = descriptor_pool.DescriptorPool(database).FindServiceByName(
            "polyport.contract.v1.ContractService"
        )

    def call(self, method: str, **args: Any) -> Any:
        from google.rpc import error_details_pb2
        from grpc_status import rpc_status

        rpc = self.service.methods_by_name["".join(p.title() for p in method.split("_"))]
        request = self.factory.GetMessageClass(rpc.input_type)()
        try:
            to_proto(request, args)
        except (TypeError, ValueError) as exc:
            # protobuf types every field: a wrong type never leaves the client
            raise CallFailed("INVALID_ARGUMENT", f"refused by the client: {exc}") from None
        output = self.factory.GetMessageClass(rpc.output_type)
        stub = self.channel.unary_unary(
            f"/{self.service.full_name}/{rpc.name}",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=output.FromString,
        )
        try:
            response = stub(request, timeout=10)
        except self.grpc.RpcError as error:
            status = rpc_status.from_call(error)
            info = error_details_pb2.ErrorInfo()
            status.details[0].Unpack(info)
            raise CallFailed(info.reason, error.details()) from None
        if output.DESCRIPTOR.name.endswith("Response"):  # {value}
            field = output.DESCRIPTOR.fields_by_name["value"]
            if field.has_presence and not response.HasField("value"):
                return None
            return from_proto_field(response, field)
        return from_proto(response)

    def close(self) -> None:
        self.channel.close()


def to_proto(message: Any, values: dict[str, Any]) -> None:
    """Fill ``message`` from Python values, the way a hand-written gRPC client would."""
    for name, value in values.items():
        if value is None:
            continue
        field = message.DESCRIPTOR.fields_by_name[name]
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            target = getattr(message, name)
            for key, item in value.items():
                target[key] = item
        elif field.is_repeated:
            target = getattr(message, name)
            for item in value:
                if field.message_type is not None:
                    to_proto(target.add(), item)
                else:
                    target.append(item)
        elif field.message_type is not None:
            sub = getattr(message, name)
            if field.message_type.full_name == "google.protobuf.Timestamp":
                sub.FromDatetime(value)
            else:
                to_proto(sub, value)
        elif field.enum_type is not None:
            prefix = field.enum_type.name.upper()
            setattr(message, name, field.enum_type.values_by_name[f"{prefix}_{value.name}"].number)
        elif isinstance(value, uuid.UUID | Decimal | dt.date):
            setattr(message, name, str(value))
        else:
            setattr(message, name, value)


def from_proto_field(message: Any, field: Any) -> Any:
    value = getattr(message, field.name)
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        return dict(value)
    if field.is_repeated:
        return [from_proto(v) if field.message_type else v for v in value]
    if field.message_type is not None:
        if field.message_type.full_name == "google.protobuf.Timestamp":
            return value.ToDatetime(tzinfo=dt.UTC)
        return from_proto(value)
    if field.enum_type is not None:
        label = field.enum_type.values_by_number[value].name
        return label.removeprefix(field.enum_type.name.upper() + "_").lower()
    return value


def from_proto(message: Any) -> dict[str, Any]:
    out = {}
    for field in message.DESCRIPTOR.fields:
        if field.has_presence and not message.HasField(field.name):
            out[field.name] = None
            continue
        out[field.name] = from_proto_field(message, field)
    return out


_INTROSPECTION = """
{ __schema { mutationType { fields { name args { name type { ...T } } type { ...T } } }
             types { name kind fields { name type { ...T } } } } }
fragment T on __Type { kind name ofType { kind name ofType { kind name ofType { kind name } } } }
"""

#: extensions.code → the core's code, as a GraphQL client maps it back.
GRAPHQL_CODES = {"BAD_USER_INPUT": "INVALID_ARGUMENT", "FORBIDDEN": "PERMISSION_DENIED"}


def _type_text(ref: dict[str, Any]) -> str:
    if ref["kind"] == "NON_NULL":
        return _type_text(ref["ofType"]) + "!"
    if ref["kind"] == "LIST":
        return "[" + _type_text(ref["ofType"]) + "]"
    return str(ref["name"])


def _named(ref: dict[str, Any]) -> dict[str, Any]:
    while ref.get("ofType"):
        ref = ref["ofType"]
    return ref


class GraphQLClient:
    """POST /graphql with documents written from the served introspection: each method a
    mutation with its arguments as variables, objects selected field by field. Enums travel
    by member name, as GraphQL clients see them."""

    name = "graphql"

    def __init__(self, node: RunningNode) -> None:
        self.http = httpx.Client(base_url=node.url)
        schema = self.http.post("/graphql", json={"query": _INTROSPECTION}).json()["data"]
        self.fields = {f["name"]: f for f in schema["__schema"]["mutationType"]["fields"]}
        self.types = {t["name"]: t for t in schema["__schema"]["types"]}

    def _selection(self, ref: dict[str, Any]) -> str:
        named = self.types[_named(ref)["name"]]
        if named["kind"] != "OBJECT":
            return ""
        inner = " ".join(f["name"] + self._selection(f["type"]) for f in named["fields"])
        return " { " + inner + " }"

    def call(self, method: str, **args: Any) -> Any:
        name = method.split("_")[0] + "".join(p.title() for p in method.split("_")[1:])
        field = self.fields[name]
        types = {a["name"]: _type_text(a["type"]) for a in field["args"]}
        declared = ", ".join(f"${a}: {types[a]}" for a in args)
        passed = ", ".join(f"{a}: ${a}" for a in args)
        document = (
            f"mutation Call({declared}) {{ {name}({passed}){self._selection(field['type'])} }}"
            if args
            else f"mutation Call {{ {name}{self._selection(field['type'])} }}"
        )
        answer = self.http.post(
            "/graphql", json={"query": document, "variables": to_graphql(args)}
        ).json()
        if answer.get("errors"):
            error = answer["errors"][0]
            code = error["extensions"]["code"]
            raise CallFailed(GRAPHQL_CODES.get(code, code), error["message"])
        return from_graphql(answer["data"][name])

    def close(self) -> None:
        self.http.close()


def to_graphql(value: Any) -> Any:
    if isinstance(value, StrEnum):
        return value.name
    if isinstance(value, dict):
        return {k: to_graphql(v) for k, v in value.items()}
    return to_json(value)


def from_graphql(value: Any) -> Any:
    """Enum names back to this client's enum values (the only enum here is Color)."""
    if isinstance(value, dict):
        out = {k: from_graphql(v) for k, v in value.items()}
        if isinstance(out.get("color"), str):
            out["color"] = Color[out["color"]].value
        return out
    return value


CLIENTS = {
    c.name: c
    for c in (RestClient, JsonRpcClient, XmlRpcClient, SoapClient, GrpcClient, GraphQLClient)
}
EDGES = ["rest", "jsonrpc", "xmlrpc", "soap", "grpc", "graphql"]


def to_json(value: Any) -> Any:
    """What a JSON client sends for a Python value."""
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_json(v) for v in value]
    if isinstance(value, bytes):
        import base64

        return base64.b64encode(value).decode()
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, uuid.UUID | Decimal):
        return str(value)
    return value


def to_xmlrpc(value: Any) -> Any:
    """What an XML-RPC client sends: bytes and datetimes natively, the rest as text."""
    if isinstance(value, dict):
        return {k: to_xmlrpc(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_xmlrpc(v) for v in value]
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).replace(tzinfo=None)
    if isinstance(value, dt.date | uuid.UUID | Decimal):
        return str(value)
    if isinstance(value, StrEnum):
        return value.value
    return value


def normalize(value: Any) -> Any:
    """One comparable form for what every protocol answers (naive datetimes are UTC)."""
    thing = Everything.model_validate(value)
    if thing.when.tzinfo is None:
        thing.when = thing.when.replace(tzinfo=dt.UTC)
    return thing.model_dump(mode="json")


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningNode]:
    db = tmp_path_factory.mktemp("rpc") / "db.sqlite3"
    settings = Settings(database=str(db), rate_limit={"enabled": False}, grpc={"port": 0})
    with serve_in_thread(svc, settings, edges=EDGES) as s:
        yield s


@pytest.fixture(params=list(CLIENTS))
def client(request: pytest.FixtureRequest, node: RunningNode) -> Iterator[Any]:
    made = CLIENTS[request.param](node)
    yield made
    made.close()


def test_a_simple_call(client: Any) -> None:
    """multiply(6, 7) is 42 whatever carries it."""
    assert client.call("multiply", a=6, b=7) == 42


def test_every_type_round_trips(client: Any) -> None:
    """A model holding one of each type comes back equal to what was sent."""
    sample = dict(SAMPLE)
    if getattr(client, "whole_seconds", False):
        sample["when"] = SAMPLE["when"].replace(microsecond=0)
    assert normalize(client.call("echo", value=sample)) == normalize(sample)


@pytest.mark.parametrize(
    ("method", "value"),
    [
        ("echo_int", -(2**62)),
        ("echo_int", 0),
        ("echo_text", ""),
        ("echo_text", "ünïcødé ✓ & <tags>"),
        ("echo_list", []),
        ("echo_list", ["a", "b"]),
        ("echo_optional", None),
        ("echo_optional", 5),
    ],
)
def test_scalars_and_edges_of_types(client: Any, method: str, value: Any) -> None:
    """Extremes and empties survive every protocol."""
    args = {"values": value} if method == "echo_list" else {"value": value}
    expected = None if getattr(client, "empty_text_as_none", False) and value == "" else value
    assert client.call(method, **args) == expected


@pytest.mark.parametrize("code", list(ERRORS))
def test_each_core_error_keeps_its_code(client: Any, code: str) -> None:
    """Each core error arrives as that protocol's form of the same code; internals stay home."""
    with pytest.raises(CallFailed) as failed:
        client.call("fail", code=code)
    assert failed.value.code == code
    if code == "INTERNAL":
        assert "hunter2" not in failed.value.message


def test_invalid_arguments(client: Any) -> None:
    """Wrong types are INVALID_ARGUMENT everywhere (a protobuf client refuses them itself)."""
    with pytest.raises(CallFailed) as failed:
        client.call("multiply", a="six", b=7)
    assert failed.value.code == "INVALID_ARGUMENT"


def test_a_result_beyond_int64_is_out_of_range(client: Any) -> None:
    """multiply(2**63 - 1, 2**63 - 1) declared ``-> int``: every wire's int is 64 bits, so
    every edge answers OUT_OF_RANGE (gRPC's status of that name, HTTP 422), never INTERNAL.
    GraphQL's codes are coarser: BAD_USER_INPUT, as for any invalid argument."""
    with pytest.raises(CallFailed) as failed:
        client.call("multiply", a=2**63 - 1, b=2**63 - 1)
    expected = "INVALID_ARGUMENT" if client.name == "graphql" else "OUT_OF_RANGE"
    assert failed.value.code == expected
    assert client.call("multiply", a=2**62, b=-2) == -(2**63)  # the bound itself fits


@pytest.mark.parametrize("value", [True, 2**63, -(2**63) - 1])
def test_an_int_is_neither_a_boolean_nor_beyond_int64(client: Any, value: Any) -> None:
    """What the documents forbid for an int64 — true, 2**63 — is INVALID_ARGUMENT on every
    edge (a protobuf client refuses to send it at all)."""
    with pytest.raises(CallFailed) as failed:
        client.call("echo_int", value=value)
    assert failed.value.code == "INVALID_ARGUMENT"


@pytest.mark.parametrize("edge", ["xmlrpc", "soap", "grpc", "rest", "jsonrpc"])
def test_an_int_inside_a_result_model_beyond_int64(node: RunningNode, edge: str) -> None:
    """A model's own ints are not walked per call; the wires with a width refuse one beyond
    int64 as they write it — OUT_OF_RANGE, not INTERNAL — and JSON carries it as it is.
    (GraphQL is left out: its HTTP transport cannot write a number beyond 64 bits at all,
    a 500 its edge has yet to map.)"""
    client = CLIENTS[edge](node)
    try:
        if edge in ("xmlrpc", "soap", "grpc"):
            with pytest.raises(CallFailed) as failed:
                client.call("count_of", a=2**62, b=4)
            assert failed.value.code == "OUT_OF_RANGE"
        else:
            assert client.call("count_of", a=2**62, b=4)["n"] == 2**64
        bound = client.call("count_of", a=2**62, b=-2)
        assert (bound["n"] if isinstance(bound, dict) else bound) == -(2**63)  # zeep unwraps
    finally:
        client.close()
