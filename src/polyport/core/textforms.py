"""Numbers written as text: the regular expressions documents give and parsers hold to.

A number sometimes travels as a string — a decimal that must not lose a digit,
a resource key inside a cursor, a row id in a query parameter. JSON Schema
cannot compare strings numerically, so the only way a document can say
"a whole number from 1 to 2**63 - 1" of a string is a regular expression that
matches exactly those numbers. These functions write such expressions; the
validators check the same expressions, so the document and the server agree
by construction.

The expressions use only what ECMA-262, Python and Rust regexes all read alike
(character classes of ASCII digits, counted repetition, non-capturing groups).
Numbers are written without a plus sign and without leading zeros.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import orjson

from polyport.core.types import (
    EnumRef,
    ListOf,
    LiteralOf,
    Scalar,
    TypeNode,
    UnionOf,
    unwrap_nullable,
)

if TYPE_CHECKING:
    from polyport.core.typegraph import TypeGraph
    from polyport.core.types import Constraints

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

#: A number as RFC 8259 writes it: what a query or path value must look like to be read
#: as a JSON number.
JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")


def _same_length(low: str, high: str) -> list[str]:
    """Alternatives matching every digit string from ``low`` to ``high`` (same length)."""
    size = len(low)
    if low == high:
        return [low]
    if low == "0" * size and high == "9" * size:
        return [f"[0-9]{{{size}}}" if size > 1 else "[0-9]"]
    if size == 1:
        return [f"[{low}-{high}]"]
    if low[0] == high[0]:
        return [low[0] + rest for rest in _group(_same_length(low[1:], high[1:]))]
    rest = size - 1
    # A first digit whose tails cover everything joins the digits between.
    low_full, high_full = low[1:] == "0" * rest, high[1:] == "9" * rest
    first = int(low[0]) + (0 if low_full else 1)
    last = int(high[0]) - (0 if high_full else 1)
    out = [] if low_full else [low[0] + t for t in _group(_same_length(low[1:], "9" * rest))]
    if first <= last:
        digit = str(first) if first == last else f"[{first}-{last}]"
        out.append(digit + (f"[0-9]{{{rest}}}" if rest > 1 else "[0-9]"))
    if not high_full:
        out += [high[0] + t for t in _group(_same_length("0" * rest, high[1:]))]
    return out


def _group(alternatives: list[str]) -> list[str]:
    if len(alternatives) == 1:
        return alternatives
    return [f"(?:{'|'.join(alternatives)})"]


def _natural(low: int, high: int) -> list[str]:
    """Alternatives matching the whole numbers ``low``..``high`` (0 <= low <= high)."""
    out: list[str] = []
    full: list[int] = []  # lengths whose every number is in range: one alternative for all
    for size in range(len(str(low)), len(str(high)) + 1):
        start = max(low, 10 ** (size - 1) if size > 1 else 0)
        end = min(high, 10**size - 1)
        if size > 1 and start == 10 ** (size - 1) and end == 10**size - 1:
            full.append(size)
        elif start <= end:
            out += _same_length(str(start), str(end))
    if full:
        shortest, longest = full[0] - 1, full[-1] - 1
        count = str(shortest) if shortest == longest else f"{shortest},{longest}"
        out.append(f"[1-9][0-9]{{{count}}}")
    return out


def integer_alternatives(low: int, high: int) -> str:
    """The whole numbers ``low``..``high`` as one group of alternatives (no anchors)."""
    if low > high:
        return "(?!)"  # nothing: an empty range
    out: list[str] = []
    if low < 0:
        out += ["-" + alt for alt in _group(_natural(max(1, -high), -low))]
    if high >= 0:
        out += _natural(max(0, low), high)
    return f"(?:{'|'.join(out)})"


def int_range(c: Constraints) -> tuple[int, int]:
    """The whole numbers an ``int`` with constraints ``c`` holds: its bounds within int64."""
    low, high = INT64_MIN, INT64_MAX
    for bound, above, is_open in (
        (c.ge, True, False),
        (c.gt, True, True),
        (c.le, False, False),
        (c.lt, False, True),
    ):
        if bound is None:
            continue
        whole = math.ceil(bound) if above else math.floor(bound)
        if is_open and whole == bound:
            whole += 1 if above else -1
        if above:
            low = max(low, whole)
        else:
            high = min(high, whole)
    return low, high


def integer_pattern(low: int = INT64_MIN, high: int = INT64_MAX) -> str:
    """An anchored expression for the whole numbers ``low``..``high``, as text."""
    return f"^{integer_alternatives(low, high)}$"


def _whole(value: object) -> int | None:
    """``value`` as an int when it is a whole number (a bound such as ``Decimal('1E+6')``)."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and not value.is_integer():
        return None
    if isinstance(value, Decimal) and (not value.is_finite() or value != value.to_integral()):
        return None
    return int(value)


def _fraction(places: int | None, *, nonzero: bool = False) -> str | None:
    """A fractional part ``.ddd`` of at most ``places`` digits, or None if none may follow.

    ``nonzero``: a fraction that is not all zeros (what lifts a number above a whole bound).
    """
    if places == 0:
        return None
    if not nonzero:
        digits = "[0-9]+" if places is None else f"[0-9]{{1,{places}}}"
        return rf"\.{digits}"
    if places is None:
        return r"\.[0-9]*[1-9][0-9]*"
    alternatives = []
    for zeros in range(places):
        tail = places - 1 - zeros
        alternatives.append("0" * zeros + "[1-9]" + (f"[0-9]{{0,{tail}}}" if tail else ""))
    return rf"\.(?:{'|'.join(alternatives)})"


def _optional(part: str | None) -> str:
    return "" if part is None else f"(?:{part})?"


def _at_least(low: int) -> list[str]:
    """Whole numbers from ``low`` upwards (``low`` >= 0), without leading zeros."""
    size = len(str(low))
    return [*_natural(low, 10**size - 1), f"[1-9][0-9]{{{size},}}"]


def _unsigned(
    low: int, low_open: bool, high: int | None, high_open: bool, places: int | None
) -> list[str]:
    """Decimals ``k.f`` (no sign) above ``low`` and below ``high`` (None: unbounded).

    A whole part strictly inside the range takes any fraction; a whole part
    equal to an open lower bound needs a fraction that is not zero; one equal
    to a closed upper bound takes only zeros after the point.
    """
    out: list[str] = []
    first = low + 1 if low_open else low
    if low_open and (high is None or high > low):
        above = _fraction(places, nonzero=True)
        if above is not None:
            out.append(str(low) + above)
    wholes = _at_least(first) if high is None else _natural(first, high - 1)
    if wholes:
        out.append(f"(?:{'|'.join(wholes)}){_optional(_fraction(places))}")
    if high is not None and not high_open and (high > low or (high == low and not low_open)):
        zeros = None if places == 0 else (r"\.0+" if places is None else rf"\.0{{1,{places}}}")
        out.append(str(high) + _optional(zeros))
    return out


def decimal_pattern(c: Constraints) -> str | None:
    """An anchored expression for decimals written as text within ``c``, or None.

    None when no exact expression is written here: a bound that is not a whole
    number, or ``max_digits`` without ``decimal_places``. ``max_digits`` is
    held as a bound on the whole part (``10 ** (max_digits - decimal_places)``),
    which is never looser than the validator's count.
    """
    bounds: dict[str, int] = {}
    for name in ("ge", "gt", "le", "lt"):
        value = getattr(c, name)
        if value is not None:
            whole = _whole(value)
            if whole is None:
                return None
            bounds[name] = whole
    places = c.decimal_places
    low = bounds.get("gt", bounds.get("ge"))
    low_open = "gt" in bounds
    high = bounds.get("lt", bounds.get("le"))
    high_open = "lt" in bounds
    if c.max_digits is not None:
        if places is None or c.max_digits <= places:
            return None
        limit = 10 ** (c.max_digits - places)
        if high is None or high >= limit:
            high, high_open = limit, True
        if low is None or low <= -limit:
            low, low_open = -limit, True
    alternatives: list[str] = []
    if low is None or low < 0:
        # -m: m > 0 always (no "-0"), m <= -low, m >= -high.
        if high is not None and high < 0:
            m_low, m_low_open = -high, high_open
        else:
            m_low, m_low_open = 0, True
        m_high = None if low is None else -low
        alternatives += [
            "-" + alt for alt in _group(_unsigned(m_low, m_low_open, m_high, low_open, places))
        ]
    if high is None or high > 0 or (high == 0 and not high_open):
        p_low, p_low_open = (0, False) if low is None or low < 0 else (low, low_open)
        alternatives += _unsigned(p_low, p_low_open, high, high_open, places)
    if not alternatives:
        return "^(?!)$"
    return f"^(?:{'|'.join(alternatives)})$"


#: A decimal as its validator reads and writes it when no constraint narrows it (the
#: exponent form included: ``str(Decimal("1E+5"))`` is how it is written).
ANY_DECIMAL = r"^-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?$"


def decimal_text(c: Constraints) -> str:
    """The expression a decimal's text form must match: the one rule for documents and checks.

    Exact for whole-number bounds and ``decimal_places`` (:func:`decimal_pattern`);
    a decimal with other bounds gets the plain form, and its bounds are the
    validator's alone.
    """
    if not any(
        getattr(c, name) is not None
        for name in ("ge", "gt", "le", "lt", "decimal_places", "max_digits")
    ):
        return ANY_DECIMAL
    exact = decimal_pattern(c)
    if exact is not None:
        return exact
    low = c.ge if c.ge is not None else c.gt
    return ANY_DECIMAL if low is None or low < 0 else ANY_DECIMAL.replace("^-?", "^", 1)


# -- values that arrived as text ---------------------------------------------------------


def _as_number(text: str) -> Any:
    """``text`` as the JSON number it spells, or unchanged (for the check to refuse)."""
    if JSON_NUMBER.fullmatch(text):
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:  # beyond a double's range: no number
            return text
    return text


def _as_bool(text: str) -> Any:
    return {"true": True, "false": False}.get(text, text)


def _as_is(text: str) -> Any:
    return text


def text_reader(node: TypeNode, graph: TypeGraph) -> Callable[[Any], Any]:
    """How a value that arrived as text (a URL's query or path) is read as its node's value.

    Text is read as the JSON scalar it spells — ``42`` and ``4.2e1`` as
    numbers, ``true`` and ``false`` as booleans — only where the node declares
    a number or a boolean; everything else stays text. What is then held to
    the node is the same value a JSON body would have carried, so a query
    parameter and a body field follow one rule. Null has no text form: a
    parameter left out takes its default. A list takes a list of texts (a
    repeated query parameter).
    """
    inner, _ = unwrap_nullable(node)
    if isinstance(inner, ListOf):
        item = text_reader(inner.item, graph)
        return lambda texts: [item(t) for t in texts] if isinstance(texts, list) else [item(texts)]
    read = _scalar_text(inner, graph)
    return lambda text: read(text) if isinstance(text, str) else text


def _scalar_text(node: TypeNode, graph: TypeGraph) -> Callable[[str], Any]:
    if isinstance(node, Scalar):
        if node.kind in ("int", "float"):
            return _as_number
        if node.kind == "bool":
            return _as_bool
        return _as_is
    if isinstance(node, EnumRef):
        return _as_number if graph.enums[node.name].value_kind == "int" else _as_is
    if isinstance(node, LiteralOf):
        texts = {v for v in node.values if isinstance(v, str)}
        bools = any(isinstance(v, bool) for v in node.values)
        ints = any(isinstance(v, int) and not isinstance(v, bool) for v in node.values)

        def literal(text: str) -> Any:
            if text in texts:
                return text
            if bools and text in ("true", "false"):
                return text == "true"
            return _as_number(text) if ints else text

        return literal
    if isinstance(node, UnionOf):
        readers = [_scalar_text(v, graph) for v in node.variants]

        def union(text: str) -> Any:
            # The first variant that reads it as something other than text; else text.
            for read in readers:
                value = read(text)
                if value is not text:
                    return value
            return text

        return union
    return _as_is
