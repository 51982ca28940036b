"""Every type of the mapping, round-tripped exactly through zeep (a client we did not write)."""

from __future__ import annotations

import datetime as dt
import math
import uuid
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from enum import IntEnum, StrEnum
from typing import Annotated, Any, Literal

import httpx
import pytest
import zeep
import zeep.helpers
import zeep.plugins
from lxml import etree
from pydantic import BaseModel, Field

from polyport import Conflict, NotFound, PermissionDenied, Service, Settings, Unauthenticated
from polyport.core.errors import InvalidArgument, RateLimited, Unavailable
from polyport.testing import RunningNode, serve_in_thread

TNS = "urn:polyport:types:v1"


class Color(StrEnum):
    """A primary color."""

    RED = "red"
    BLUE = "blue"


class Level(IntEnum):
    LOW = 1
    HIGH = 2


class Leaf(BaseModel):
    """A named leaf."""

    name: str


class Cat(BaseModel):
    kind: Literal["cat"] = "cat"
    lives: int


class Dog(BaseModel):
    kind: Literal["dog"] = "dog"
    good: bool


class Tree(BaseModel):
    """A recursive model."""

    label: str
    children: list[Tree] = []


class Everything(BaseModel):
    """Every kind of type the mapping knows, in one model."""

    i: int
    f: float
    b: bool
    s: str
    raw: bytes
    when: dt.datetime
    day: dt.date
    at: dt.time
    uid: uuid.UUID
    amount: Decimal
    color: Color
    level: Level
    mode: Literal["a", "b"]
    maybe: int | None = None
    tags: list[str]
    matrix: list[list[int]]
    opt_list: list[int] | None = None
    scores: dict[str, float]
    by_id: dict[int, Leaf]
    leaf: Leaf
    leaves: list[Leaf]
    either: int | str
    pet: Annotated[Cat | Dog, Field(discriminator="kind")]
    tree: Tree
    anything: Any = None
    bounded: Annotated[int, Field(ge=0, le=100)] = 5
    code: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] = "ABC"


types = Service("types", version=1, description="Every type of the SOAP mapping.")
received: dict[str, Any] = {}


@types.method
async def echo(value: Everything) -> Everything:
    """Return the value as received (and remember it)."""
    received["echo"] = value
    return value


def _echo(kind: str, annotation: Any) -> None:
    async def fn(value: Any) -> Any:
        received[kind] = value
        return value

    fn.__name__ = f"echo_{kind}"
    fn.__annotations__ = {"value": annotation, "return": annotation}
    fn.__doc__ = f"Echo a {kind}."
    types.method(fn)


SCALARS: dict[str, Any] = {
    "int": int,
    "float": float,
    "bool": bool,
    "str": str,
    "bytes": bytes,
    "datetime": dt.datetime,
    "date": dt.date,
    "time": dt.time,
    "uuid": uuid.UUID,
    "decimal": Decimal,
    "color": Color,
    "level": Level,
    "literal": Literal["x", "y"],
    "optional": int | None,
    "list": list[int],
    "nested_list": list[list[str]],
    "dict": dict[str, int],
    "int_dict": dict[int, str],
    "model": Leaf,
    "union": int | str,
    "tree": Tree,
    "any": Any,
}
for _kind, _annotation in SCALARS.items():
    _echo(_kind, _annotation)


@types.method
def sync_add(a: int, b: int = 1) -> int:
    """A synchronous handler (runs in a thread)."""
    return a + b


@types.method
async def nothing() -> None:
    """Returns nothing."""


@types.method
async def maybe_leaf(present: bool) -> Leaf | None:
    """A leaf, or nil."""
    return Leaf(name="here") if present else None


@types.method
async def leaves(n: Annotated[int, Field(ge=0, le=100)]) -> list[Leaf]:
    """A bare list result."""
    return [Leaf(name=str(i)) for i in range(n)]


ERRORS: dict[str, Exception] = {
    "invalid": InvalidArgument(
        "bad value", details=[{"field": "x", "message": "too big", "type": "le"}]
    ),
    "not_found": NotFound("no such thing"),
    "conflict": Conflict("already there"),
    "unauthenticated": Unauthenticated("who are you"),
    "denied": PermissionDenied("not yours"),
    "rate": RateLimited("slow down", retry_after=2.0),
    "unavailable": Unavailable("try later", retry_after=5.0),
    "boom": RuntimeError("secret internals /etc/passwd"),
}


@types.method
async def fail(kind: str) -> int:
    """Raise the error named ``kind``."""
    raise ERRORS[kind]


@types.method
async def bad_return() -> int:
    """Returns the wrong type: an internal error, not a wrong answer."""
    return "not an int"  # type: ignore[return-value]


@types.method
async def ticks(n: int) -> AsyncIterator[int]:
    """A server stream: not served over SOAP."""
    for i in range(n):
        yield i


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningNode]:
    db = tmp_path_factory.mktemp("soap-types") / "db.sqlite3"
    settings = Settings(dev=True, database=str(db), event_log="memory")
    with serve_in_thread(types, settings, edges=["rest", "soap"]) as server:
        yield server


@pytest.fixture(scope="module")
def client(node: RunningNode) -> zeep.Client:
    return zeep.Client(f"{node.url}/soap?wsdl")


WHEN = dt.datetime(2024, 2, 29, 23, 59, 58, 123456, tzinfo=dt.timezone(dt.timedelta(hours=5)))
TRICKY = "a<b>&c \"q\" 'a' \r\n\t ü 😀 ]]>"

# operation, value sent, value expected back (None: the same as sent)
ROUND_TRIPS: list[tuple[str, Any, Any]] = [
    ("EchoInt", 2**63 - 1, None),
    ("EchoInt", -(2**63), None),
    ("EchoFloat", 0.1, None),
    ("EchoFloat", -1.5e300, None),
    ("EchoFloat", 5e-324, None),
    ("EchoFloat", math.inf, None),
    ("EchoFloat", -math.inf, None),
    ("EchoBool", True, None),
    ("EchoBool", False, None),
    ("EchoStr", TRICKY, None),
    ("EchoStr", "  spaces kept  ", None),
    ("EchoBytes", bytes(range(256)), None),
    ("EchoDatetime", WHEN, None),
    ("EchoDatetime", dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC), None),
    ("EchoDatetime", dt.datetime(2024, 1, 2, 3, 4, 5), None),
    ("EchoDate", dt.date(1999, 12, 31), None),
    ("EchoTime", dt.time(13, 14, 15, 999999), None),
    ("EchoUuid", "12345678-1234-5678-1234-567812345678", None),
    ("EchoDecimal", Decimal("12345678901234567890.123456789"), None),
    ("EchoDecimal", Decimal("-0.10"), None),
    ("EchoColor", "blue", None),
    ("EchoLevel", 2, None),
    ("EchoLiteral", "y", None),
    ("EchoOptional", 7, None),
    ("EchoList", [3, 1, 2], None),
    ("EchoList", [], None),
    # zeep reads an empty wrapper element as None (the server sends <value/>, see below)
    ("EchoNestedList", [{"item": ["a", "b"]}, {"item": []}], [{"item": ["a", "b"]}, None]),
    # zeep unwraps a result whose type has a single child: the entries, the leaf's name
    (
        "EchoDict",
        {"entry": [{"key": "a", "value": 1}, {"key": "b", "value": 2}]},
        [{"key": "a", "value": 1}, {"key": "b", "value": 2}],
    ),
    ("EchoIntDict", {"entry": [{"key": 7, "value": "seven"}]}, [{"key": 7, "value": "seven"}]),
    ("EchoModel", {"name": "leaf"}, "leaf"),
    ("EchoUnion", {"long": 3}, None),
    ("EchoUnion", {"string": "3"}, None),
    ("EchoTree", {"label": "r", "children": [{"label": "c", "children": []}]}, None),
    ("EchoAny", '{"a":[1,2.5,null,true,"x"]}', None),
]


def _plain(value: Any) -> Any:
    """zeep's objects as plain dicts and lists, with choices' empty branches dropped."""
    value = zeep.helpers.serialize_object(value, dict)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


@pytest.mark.parametrize(("operation", "sent", "expected"), ROUND_TRIPS)
def test_each_type_round_trips_exactly(
    client: zeep.Client, operation: str, sent: Any, expected: Any
) -> None:
    """What zeep sends is what it gets back, to the bit (floats, decimals' digits, bytes)."""
    result = getattr(client.service, operation)(value=sent)
    want = _plain(sent if expected is None else expected)
    got = _plain(result)
    assert got == want
    assert type(got) is type(want)
    if isinstance(want, Decimal):
        assert str(got) == str(want)  # the digits, not only the value
    if isinstance(want, dt.datetime):
        assert got.utcoffset() == want.utcoffset()


def test_nan_round_trips(client: zeep.Client) -> None:
    """NaN is xsd:double's NaN."""
    assert math.isnan(client.service.EchoFloat(value=math.nan))


def test_the_server_receives_exactly_what_zeep_sent(client: zeep.Client) -> None:
    """Typed values on the server side: the handler sees Python objects, not text."""
    client.service.EchoDatetime(value=WHEN)
    assert received["datetime"] == WHEN and received["datetime"].utcoffset() == WHEN.utcoffset()
    client.service.EchoUuid(value="12345678-1234-5678-1234-567812345678")
    assert received["uuid"] == uuid.UUID("12345678-1234-5678-1234-567812345678")
    client.service.EchoColor(value="red")
    assert received["color"] is Color.RED
    client.service.EchoLevel(value=1)
    assert received["level"] is Level.LOW
    client.service.EchoUnion(value={"string": "3"})
    assert received["union"] == "3"
    client.service.EchoUnion(value={"long": 3})
    assert received["union"] == 3
    client.service.EchoAny(value='{"k": [1, {"x": null}]}')
    assert received["any"] == {"k": [1, {"x": None}]}
    client.service.EchoOptional(value=None)
    assert received["optional"] is None
    client.service.EchoNestedList(value=[{"item": ["a"]}, {"item": []}])
    assert received["nested_list"] == [["a"], []]
    client.service.EchoIntDict(value={"entry": [{"key": 7, "value": "seven"}]})
    assert received["int_dict"] == {7: "seven"}


EVERYTHING = Everything(
    i=-42,
    f=2.5e-10,
    b=True,
    s=TRICKY,
    raw=b"\x00\x01\xfe\xff",
    when=WHEN,
    day=dt.date(2000, 2, 29),
    at=dt.time(1, 2, 3, 4),
    uid=uuid.UUID("0f0e0d0c-0b0a-0908-0706-050403020100"),
    amount=Decimal("-1234.5600"),
    color=Color.BLUE,
    level=Level.HIGH,
    mode="b",
    maybe=None,
    tags=["x", "", "z"],
    matrix=[[1, 2], [], [3]],
    opt_list=[],
    scores={"math": 1.5, "art": -0.0},
    by_id={1: Leaf(name="one"), 2: Leaf(name="two")},
    leaf=Leaf(name="solo"),
    leaves=[Leaf(name="a"), Leaf(name="b")],
    either="42",
    pet=Dog(good=True),
    tree=Tree(label="root", children=[Tree(label="kid", children=[Tree(label="grandkid")])]),
    anything={"nested": [1, "two", None]},
    bounded=100,
    code="XYZ",
)


def _to_zeep(value: Everything) -> dict[str, Any]:
    """The model in zeep's form: wrappers as {"item": [...]}, dicts as entries, choices by name."""
    data = value.model_dump(mode="python")
    data["matrix"] = [{"item": row} for row in data["matrix"]]
    data["opt_list"] = {"item": data["opt_list"]}
    data["scores"] = {"entry": [{"key": k, "value": v} for k, v in data["scores"].items()]}
    data["by_id"] = {"entry": [{"key": k, "value": v} for k, v in data["by_id"].items()]}
    data["either"] = {"string": data["either"]}
    data["pet"] = {"Dog": data["pet"]}
    data["uid"] = str(data["uid"])
    data["color"] = data["color"].value
    data["level"] = data["level"].value
    data["anything"] = '{"nested":[1,"two",null]}'
    return data


def _from_zeep(data: dict[str, Any]) -> Everything:
    data = dict(data)
    # zeep reads an empty element as None: an empty wrapper, an empty string
    data["tags"] = ["" if tag is None else tag for tag in data["tags"]]
    data["matrix"] = [(row or {}).get("item", []) for row in data["matrix"]]
    data["opt_list"] = (data.get("opt_list") or {}).get("item", [])
    data["scores"] = {e["key"]: e["value"] for e in data["scores"]["entry"]}
    data["by_id"] = {e["key"]: e["value"] for e in data["by_id"]["entry"]}
    (data["either"],) = data["either"].values()
    (data["pet"],) = data["pet"].values()
    data["anything"] = __import__("json").loads(data["anything"])
    data.setdefault("maybe", None)
    return Everything.model_validate(data)


def test_a_model_with_every_type_round_trips(client: zeep.Client) -> None:
    """The whole model, both ways: the server gets it exactly, zeep gets it back exactly."""
    result = client.service.Echo(value=_to_zeep(EVERYTHING))
    assert received["echo"] == EVERYTHING
    assert _from_zeep(_plain(result)) == EVERYTHING


def test_results_without_a_value_nil_and_lists(client: zeep.Client) -> None:
    """None results, nil results, bare list results, defaults and sync handlers."""
    assert client.service.Nothing() is None
    assert client.service.MaybeLeaf(present=False) is None
    assert client.service.MaybeLeaf(present=True) == "here"  # zeep unwraps a one-field model
    assert [leaf.name for leaf in client.service.Leaves(n=3)] == ["0", "1", "2"]
    assert client.service.Leaves(n=0) in (None, [])
    assert client.service.SyncAdd(a=2) == 3
    assert client.service.SyncAdd(a=2, b=5) == 7


FAULTS = [
    ("invalid", "soap:Client", "INVALID_ARGUMENT", "bad value"),
    ("not_found", "soap:Client", "NOT_FOUND", "no such thing"),
    ("conflict", "soap:Client", "CONFLICT", "already there"),
    ("unauthenticated", "soap:Client", "UNAUTHENTICATED", "who are you"),
    ("denied", "soap:Client", "PERMISSION_DENIED", "not yours"),
    ("rate", "soap:Server", "RATE_LIMITED", "slow down"),
    ("unavailable", "soap:Server", "UNAVAILABLE", "try later"),
    ("boom", "soap:Server", "INTERNAL", "internal error"),
]


def _detail(fault: zeep.exceptions.Fault) -> dict[str, str]:
    (service_fault,) = fault.detail
    assert service_fault.tag == f"{{{TNS}}}ServiceFault"
    return {etree.QName(child).localname: child for child in service_fault}


@pytest.mark.parametrize(("kind", "faultcode", "code", "message"), FAULTS)
def test_core_errors_are_faults_per_the_table(
    client: zeep.Client, kind: str, faultcode: str, code: str, message: str
) -> None:
    """soap:Client for the caller's faults, soap:Server for the world's; the code in <detail>."""
    with pytest.raises(zeep.exceptions.Fault) as caught:
        client.service.Fail(kind=kind)
    fault = caught.value
    assert fault.code == faultcode
    assert fault.message == message
    detail = _detail(fault)
    assert detail["code"].text == code
    if kind == "invalid":
        (error,) = detail["errors"]
        assert {etree.QName(c).localname: c.text for c in error} == {
            "field": "x",
            "message": "too big",
            "type": "le",
        }
    if kind == "rate":
        assert float(detail["retry_after"].text) == 2.0
    if kind == "boom":
        assert detail["request_id"].text
        assert "secret" not in etree.tostring(fault.detail).decode()


def test_internal_errors_leak_nothing(node: RunningNode) -> None:
    """An unexpected exception is soap:Server 'internal error': no message, no traceback."""
    envelope = (
        f'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>'
        f'<Fail xmlns="{TNS}"><kind>boom</kind></Fail></s:Body></s:Envelope>'
    )
    response = httpx.post(
        f"{node.url}/soap", content=envelope, headers={"content-type": "text/xml"}
    )
    assert response.status_code == 500
    assert response.headers["content-type"].startswith("text/xml")
    assert b"secret" not in response.content and b"Traceback" not in response.content
    assert b"<faultstring>internal error</faultstring>" in response.content


def test_a_wrong_return_type_is_an_internal_error(client: zeep.Client) -> None:
    """A handler breaking its own annotation is never a wrong answer."""
    with pytest.raises(zeep.exceptions.Fault) as caught:
        client.service.BadReturn()
    assert caught.value.code == "soap:Server"
    assert _detail(caught.value)["code"].text == "INTERNAL"


def test_argument_validation_is_a_client_fault_with_field_details(client: zeep.Client) -> None:
    """Constraints are the pipeline's: the same messages as every edge, per field."""
    with pytest.raises(zeep.exceptions.Fault) as caught:
        client.service.Leaves(n=101)
    assert caught.value.code == "soap:Client"
    detail = _detail(caught.value)
    assert detail["code"].text == "INVALID_ARGUMENT"
    fields = [e.find(f"{{{TNS}}}field").text for e in detail["errors"]]
    assert fields == ["n"]


def test_the_wsdl_describes_what_is_served(node: RunningNode, client: zeep.Client) -> None:
    """Every unary method is an operation; streams are not, and the document says so."""
    operations = set(client.service._binding._operations)
    unary = {
        "".join(p.title() for p in name.split("_"))
        for name, method in types.spec().methods.items()
        if method.kind.value == "unary"
    }
    assert operations == unary
    assert "Ticks" not in operations
    wsdl = httpx.get(f"{node.url}/soap?wsdl").text
    assert "Streaming methods are not served over SOAP" in wsdl and "ticks" in wsdl
    assert "<xsd:documentation>A named leaf.</xsd:documentation>" in wsdl
    assert "Echo a datetime." in wsdl


def test_the_schema_compiles_and_every_response_conforms(node: RunningNode) -> None:
    """The embedded XSD is valid XML Schema, and the edge's responses validate against it."""
    wsdl = etree.fromstring(httpx.get(f"{node.url}/soap?wsdl").content)
    schema_element = wsdl.find(".//{http://www.w3.org/2001/XMLSchema}schema")
    schema = etree.XMLSchema(schema_element)
    client = zeep.Client(f"{node.url}/soap?wsdl")
    history = zeep.plugins.HistoryPlugin()
    client.plugins.append(history)
    client.service.Echo(value=_to_zeep(EVERYTHING))
    for operation, sent, _ in ROUND_TRIPS:
        getattr(client.service, operation)(value=sent)
        body = history.last_received["envelope"].find(
            "{http://schemas.xmlsoap.org/soap/envelope/}Body"
        )
        (response,) = body
        schema.assertValid(response)
    with pytest.raises(zeep.exceptions.Fault):
        client.service.Fail(kind="invalid")
    body = history.last_received["envelope"].find("{http://schemas.xmlsoap.org/soap/envelope/}Body")
    (detail_content,) = body[0].find("detail")
    schema.assertValid(detail_content)


def _raw(node: RunningNode, operation: str, content: str) -> tuple[str, list[str]]:
    envelope = (
        '<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>'
        f'<{operation} xmlns="{TNS}">{content}</{operation}></s:Body></s:Envelope>'
    )
    response = httpx.post(
        f"{node.url}/soap", content=envelope, headers={"content-type": "text/xml"}
    )
    root = etree.fromstring(response.content)
    code = root.findtext(f".//{{{TNS}}}code") or ""
    return code, [e.text or "" for e in root.iter(f"{{{TNS}}}field")]


@pytest.mark.parametrize(
    ("operation", "content", "field"),
    [
        ("EchoBytes", "<value>not base64!</value>", "value"),
        ("EchoAny", "<value>{not json</value>", "value"),
        ("EchoUnion", "<value><double>1</double></value>", "value"),
        ("EchoUnion", "<value/>", "value"),
        ("EchoList", "<value>1</value><value>x</value>", "value.1"),
        ("EchoDict", "<value><entry><key>a</key></entry></value>", "value.0"),
        (
            "EchoTree",
            "<value><label>a</label><children><label/><children/></children></value>",
            "value.children.0.children.0.label",
        ),
        ("EchoColor", "<value>green</value>", "value"),
        ("EchoLiteral", "<value>z</value>", "value"),
        ("EchoUuid", "<value>nope</value>", "value"),
        ("EchoDatetime", "<value>yesterday</value>", "value"),
    ],
)
def test_values_the_xml_cannot_mean(
    node: RunningNode, operation: str, content: str, field: str
) -> None:
    """Bad base64, bad JSON, no or unknown union choice, bad items: INVALID_ARGUMENT per field."""
    code, fields = _raw(node, operation, content)
    assert code == "INVALID_ARGUMENT"
    assert fields == [field]


def test_constraints_become_facets(node: RunningNode) -> None:
    """ge/le become min/maxInclusive; an anchored pattern an XSD pattern; enums enumerations."""
    wsdl = httpx.get(f"{node.url}/soap?wsdl").text
    assert '<xsd:minInclusive value="0"/>' in wsdl and '<xsd:maxInclusive value="100"/>' in wsdl
    assert '<xsd:pattern value="[A-Z]{3}"/>' in wsdl
    assert '<xsd:enumeration value="red"/>' in wsdl
    assert '<xsd:simpleType name="Level">' in wsdl
    assert 'maxOccurs="unbounded"' in wsdl and 'nillable="true"' in wsdl
