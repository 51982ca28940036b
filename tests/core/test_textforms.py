"""Numbers as text: the expressions documents give match exactly the numbers meant."""

from __future__ import annotations

import itertools
import random
import re
from decimal import Decimal

import pytest

from polyport.core.textforms import (
    INT64_MAX,
    INT64_MIN,
    decimal_pattern,
    decimal_text,
    int_range,
    integer_pattern,
)
from polyport.core.types import Constraints

RANGES = [
    (0, 0),
    (1, 9),
    (0, 100),
    (-5, 5),
    (-120, -3),
    (7, 1234),
    (99, 101),
    (-1, 0),
    (1, INT64_MAX),
    (INT64_MIN, INT64_MAX),
]


@pytest.mark.parametrize(("low", "high"), RANGES)
def test_integer_patterns_match_exactly_their_range(low: int, high: int) -> None:
    """Every whole number near the bounds and in -1300..1300 matches iff it is in range."""
    rx = re.compile(integer_pattern(low, high))
    numbers = set(range(-1300, 1300)) | {low, high, low - 1, high + 1, 2**63, -(2**63) - 1}
    for n in numbers:
        assert bool(rx.fullmatch(str(n))) == (low <= n <= high), n
    for text in ("", "-", "01", "-0", "+1", " 1", "1 ", "1.0", "00", "1e3", "1\n"):
        assert not rx.fullmatch(text), text


def test_integer_patterns_hold_for_random_wide_ranges() -> None:
    """Wide random ranges: the bounds, one past them, and a number inside."""
    rng = random.Random(14)
    for _ in range(300):
        low = rng.randint(-(10**12), 10**12)
        high = rng.randint(low, low + rng.choice([5, 10**3, 10**9, 10**13]))
        rx = re.compile(integer_pattern(low, high))
        for n in (low, high, low - 1, high + 1, rng.randint(low, high)):
            assert bool(rx.fullmatch(str(n))) == (low <= n <= high), (low, high, n)


def test_int_range_reads_every_kind_of_bound() -> None:
    """ge/gt/le/lt, whole or not, within int64."""
    assert int_range(Constraints()) == (INT64_MIN, INT64_MAX)
    assert int_range(Constraints(ge=1, le=INT64_MAX)) == (1, INT64_MAX)
    assert int_range(Constraints(gt=1, lt=10)) == (2, 9)
    assert int_range(Constraints(gt=0.5, lt=Decimal("9.5"))) == (1, 9)
    assert int_range(Constraints(le=10**30)) == (INT64_MIN, INT64_MAX)


def _canonical(text: str, places: int | None) -> bool:
    match = re.fullmatch(r"(-?)(0|[1-9][0-9]*)(?:\.([0-9]+))?", text)
    if not match:
        return False
    sign, _, fraction = match.groups()
    if fraction is not None and (places == 0 or (places is not None and len(fraction) > places)):
        return False
    return not (sign and Decimal(text) == 0)


TEXTS = sorted(
    {
        f"{sign}{whole}" + ("" if fraction is None else "." + fraction)
        for whole in [*range(25), 99, 100, 101, 999, 1000, 1001]
        for fraction in (None, "0", "00", "5", "05", "50", "000", "001", "123")
        for sign in ("", "-")
    }
    | {"00", "01", "-0", "1.", ".5", "1e3", "+1", " 1", "1.5 "}
)


@pytest.mark.parametrize("places", [None, 0, 1, 2])
def test_decimal_patterns_match_exactly_the_decimals_in_range(places: int | None) -> None:
    """Canonical decimals within whole bounds and places match; nothing else does."""
    for low_kind, high_kind in itertools.product([None, "ge", "gt"], [None, "le", "lt"]):
        for low, high in itertools.product([-20, -1, 0, 5], [-5, 0, 1, 100]):
            bounds: dict[str, int] = {}
            if low_kind:
                bounds[low_kind] = low
            if high_kind:
                bounds[high_kind] = high
            c = Constraints(decimal_places=places, **bounds)  # type: ignore[arg-type]
            pattern = decimal_pattern(c)
            assert pattern is not None
            rx = re.compile(pattern)
            for text in TEXTS:
                expected = _canonical(text, places)
                if expected:
                    value = Decimal(text)
                    expected = (
                        ("ge" not in bounds or value >= bounds["ge"])
                        and ("gt" not in bounds or value > bounds["gt"])
                        and ("le" not in bounds or value <= bounds["le"])
                        and ("lt" not in bounds or value < bounds["lt"])
                    )
                assert bool(rx.fullmatch(text)) == expected, (c, text)


def test_the_demo_price_and_what_has_no_exact_expression() -> None:
    """Whole bounds and places: exact. A fractional bound: the plain form, bounds left to
    the validator."""
    price = Constraints(ge=0, le=Decimal("1000000"), decimal_places=2)
    rx = re.compile(decimal_text(price))
    assert rx.fullmatch("19.90") and rx.fullmatch("1000000.00") and rx.fullmatch("0")
    assert not rx.fullmatch("1000000.01") and not rx.fullmatch("1.999")
    assert not rx.fullmatch("0680504585588524247356084095675651")
    assert decimal_pattern(Constraints(ge=Decimal("0.5"))) is None
    assert decimal_text(Constraints(ge=Decimal("0.5"))).startswith("^[0-9]")
    assert re.fullmatch(decimal_text(Constraints()), "1E+5")  # how a Decimal writes itself
