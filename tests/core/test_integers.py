"""One rule for numbers on every edge: what the documents say is what validation accepts.

An ``int`` is a JSON integer — never a boolean or a string — within int64; a
float accepts integers but no booleans; a decimal that counts its places is
written as a string; a result its declared type cannot hold is OUT_OF_RANGE.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Annotated, Any

import pytest
from pydantic import BaseModel, Field

from polyport import InvalidArgument, OutOfRange, Service
from polyport.core.auth import Authenticator
from polyport.core.config import AuthConfig, RateLimitConfig
from polyport.core.dispatch import Caller, Dispatcher
from polyport.core.jsonschema import JsonSchemas
from polyport.core.metrics import Metrics
from polyport.core.ratelimit import RateLimiter

INT64_MAX = 2**63 - 1
Price = Annotated[Decimal, Field(ge=0, le=Decimal("1000000"), decimal_places=2)]


class Line(BaseModel):
    product_id: int
    quantity: Annotated[int, Field(ge=1)]


class Totals(BaseModel):
    count: int
    parts: list[int] = []


def make() -> Dispatcher:
    svc = Service("numbers")

    @svc.method
    async def multiply(a: int, b: int) -> int:
        return a * b

    @svc.method
    async def scale(x: float, on: bool = True) -> float:
        return x if on else 0.0

    @svc.method
    async def order(line: Line) -> int:
        return line.quantity

    @svc.method
    async def price(amount: Price) -> str:
        return str(amount)

    @svc.method
    async def loose(amount: Decimal) -> str:
        return str(amount)

    @svc.method
    async def when(at: dt.datetime) -> str:
        return at.isoformat()

    @svc.method
    async def totals(n: int) -> Totals:
        return Totals(count=n * n, parts=[n, n * n])

    @svc.method
    async def percent(n: int) -> Annotated[int, Field(ge=0, le=100)]:
        return n

    @svc.method
    async def many(n: int) -> list[int]:
        return [n, n * n]

    return Dispatcher(
        svc.spec(),
        authenticator=Authenticator(AuthConfig(), dev=True),
        limiter=RateLimiter(RateLimitConfig()),
        metrics=Metrics(),
    )


ANON = Caller("test")


async def call(d: Dispatcher, name: str, args: Any) -> Any:
    return await d.call(d.binding(name), args, ANON)


@pytest.mark.parametrize(
    "args",
    [
        {"a": True, "b": 2},
        {"a": "2", "b": 2},
        {"a": 2.5, "b": 2},
        {"a": 2**63, "b": 1},
        {"a": -(2**63) - 1, "b": 1},
        {"a": 1e19, "b": 1},
    ],
)
async def test_an_int_is_a_64_bit_json_integer(args: dict[str, Any]) -> None:
    """Booleans, strings, fractions and anything beyond int64 are refused, as a mapping
    (JSON-RPC, gRPC, GraphQL, SOAP) and as a JSON body (REST, jobs) alike."""
    d = make()
    with pytest.raises(InvalidArgument) as mapped:
        await call(d, "multiply", args)
    assert mapped.value.details and mapped.value.details[0]["field"] == "a"
    body = (
        b'{"a": %s, "b": %d}' % (str(args["a"]).lower().encode(), args["b"])
        if not isinstance(args["a"], str)
        else b'{"a": "2", "b": 2}'
    )
    with pytest.raises(InvalidArgument):
        await call(d, "multiply", body)


async def test_the_int64_bounds_and_integral_numbers_are_accepted() -> None:
    """-2**63 and 2**63 - 1 are ints; 364.0 is JSON Schema's integer 364."""
    d = make()
    assert await call(d, "multiply", {"a": INT64_MAX, "b": 1}) == INT64_MAX
    assert await call(d, "multiply", {"a": -(2**63), "b": 1}) == -(2**63)
    assert await call(d, "multiply", b'{"a": 364.0, "b": 1}') == 364
    # Just below -2**63 a JSON parser reads a float equal to -2**63: still refused.
    with pytest.raises(InvalidArgument):
        await call(d, "multiply", b'{"a": -9223372036854775809, "b": 1}')


async def test_floats_and_bools_take_no_other_kind() -> None:
    """A float takes an int but no bool; a bool takes neither 1 nor "true"."""
    d = make()
    assert await call(d, "scale", {"x": 2}) == 2.0
    for args in ({"x": True}, {"x": "1.5"}, {"x": 1.0, "on": 1}, {"x": 1.0, "on": "true"}):
        with pytest.raises(InvalidArgument):
            await call(d, "scale", args)


async def test_the_rule_reaches_into_models() -> None:
    """A model's fields are held to the same rule, with the field's path in the error."""
    d = make()
    assert await call(d, "order", {"line": {"product_id": 1, "quantity": 2}}) == 2
    with pytest.raises(InvalidArgument) as refused:
        await call(d, "order", b'{"line": {"product_id": true, "quantity": 2}}')
    assert refused.value.details == [
        {
            "field": "line.product_id",
            "message": "Input should be a valid integer",
            "type": "int_type",
        }
    ]


async def test_text_is_read_as_the_scalar_it_spells() -> None:
    """What arrived as text (a URL) is read as a JSON scalar of the declared type first."""
    d = make()
    binding = d.binding("multiply")
    assert binding.from_text({"a": "6", "b": "7"}) == {"a": 6, "b": 7}
    assert await call(d, "multiply", binding.from_text({"a": "6", "b": "7"})) == 42
    assert d.binding("scale").from_text({"x": "1.5e1", "on": "false"}) == {"x": 15.0, "on": False}
    for text in ("true", "1_0", " 1", "0x1", "1.5", "9223372036854775808"):
        with pytest.raises(InvalidArgument):
            await call(d, "multiply", binding.from_text({"a": text, "b": "1"}))


async def test_dates_are_strings_not_numbers() -> None:
    """A date-time is a string: a Unix timestamp number is refused."""
    d = make()
    assert await call(d, "when", {"at": "2026-11-28T12:00:00Z"}) == "2026-11-28T12:00:00+00:00"
    with pytest.raises(InvalidArgument):
        await call(d, "when", {"at": 1_700_000_000})


async def test_a_decimal_with_places_is_a_string_of_that_form() -> None:
    """Money with two places is read from its text only, exactly as the document says."""
    d = make()
    assert await call(d, "price", {"amount": "19.90"}) == "19.90"
    for amount in (19.9, "19.999", "1000000.01", "0680", " 1", "1e3", True):
        with pytest.raises(InvalidArgument):
            await call(d, "price", {"amount": amount})
    # A decimal that counts nothing is read from a number too.
    assert await call(d, "loose", {"amount": 1.5}) == "1.5"
    schema = JsonSchemas(d.spec.graph).schema(d.spec.methods["price"].params[0].type)
    assert schema["type"] == "string" and "anyOf" not in schema
    assert schema["pattern"].startswith("^(?:")


async def test_a_result_beyond_its_type_is_out_of_range() -> None:
    """multiply(2**63 - 1, 2**63 - 1) cannot be answered as an int64: OUT_OF_RANGE, an
    InvalidArgument (the arguments are why), never an internal error."""
    d = make()
    with pytest.raises(OutOfRange) as overflow:
        await call(d, "multiply", {"a": INT64_MAX, "b": INT64_MAX})
    assert overflow.value.code == "OUT_OF_RANGE"
    assert isinstance(overflow.value, InvalidArgument)
    assert await call(d, "many", {"n": 3}) == [3, 9]
    with pytest.raises(OutOfRange):
        await call(d, "many", {"n": 2**32})
    # A model's own ints are not walked on every call (a page of fifty would pay for
    # each): the wires with a width refuse them as they write them.
    assert (await call(d, "totals", {"n": 2**32})).count == 2**64
    # A result's declared bounds are its type too.
    assert await call(d, "percent", {"n": 100}) == 100
    with pytest.raises(OutOfRange):
        await call(d, "percent", {"n": 101})
