"""Arguments already of their exact types skip the validator, with the validator's outcome."""

from __future__ import annotations

from typing import Annotated, Any

import pytest
from pydantic import Field

from polyport import Service
from polyport.core.dispatch import Binding
from polyport.core.errors import InvalidArgument


def _binding(service: Service, name: str) -> Binding:
    return Binding(service.spec().methods[name], {})


def _service() -> Service:
    service = Service("exact", version=1)

    @service.method(public=True)
    async def plain(
        n: int,
        s: str,
        f: float,
        b: bool,
        raw: bytes,
        maybe: int | None = None,
        label: str = "x",
    ) -> int:
        return 0

    @service.method(public=True)
    async def bounded(
        limit: Annotated[int, Field(ge=1, le=50)],
        ratio: Annotated[float, Field(gt=0, lt=1)] = 0.5,
        floor: Annotated[int | None, Field(ge=0)] = None,
    ) -> int:
        return 0

    @service.method(public=True)
    async def other(tags: list[str], when: Annotated[str, Field(min_length=2)] = "ab") -> int:
        return 0

    return service


def _outcome(binding: Binding, args: dict[str, Any]) -> Any:
    try:
        return ("ok", binding.parse(args))
    except InvalidArgument as exc:
        return ("error", exc.message)


def _validated(binding: Binding, args: dict[str, Any]) -> Any:
    """What the slow way alone (the type graph's check, then the validator) makes of ``args``."""
    try:
        return ("ok", binding._validate(args))
    except Exception as exc:  # the same ValidationError parse turns into InvalidArgument
        return ("error", type(exc).__name__)


CASES = {
    "plain": [
        {"n": 1, "s": "a", "f": 1.5, "b": True, "raw": b"\x00"},
        {"n": -(2**70), "s": "", "f": float("nan"), "b": False, "raw": b"", "maybe": None},
        {"n": 1, "s": "a", "f": 1.5, "b": True, "raw": b"", "maybe": 7, "label": "y"},
        {"n": True, "s": "a", "f": 1.5, "b": True, "raw": b""},  # a bool for an int
        {"n": "1", "s": "a", "f": 1, "b": 1, "raw": "x"},  # lax conversions
        {"n": 1, "s": "a", "f": 1.5, "b": True},  # a required one missing
        {"n": 1, "s": "a", "f": 1.5, "b": True, "raw": b"", "extra": 1},
        {"n": None, "s": "a", "f": 1.5, "b": True, "raw": b""},
    ],
    "bounded": [
        {"limit": 1},
        {"limit": 50, "ratio": 0.25, "floor": 0},
        {"limit": 0},
        {"limit": 51},
        {"limit": 10, "ratio": 1.0},
        {"limit": 10, "ratio": 0.0},
        {"limit": 10, "floor": -1},
        {"limit": 10, "floor": None},
        {"limit": 10.0},
    ],
    "other": [{"tags": ["a"]}, {"tags": ["a"], "when": "x"}],
}


@pytest.mark.parametrize(
    ("method", "args"),
    [(method, args) for method, cases in CASES.items() for args in cases],
)
def test_the_outcome_is_the_validators(method: str, args: dict[str, Any]) -> None:
    binding = _binding(_service(), method)
    outcome, validated = _outcome(binding, args), _validated(binding, args)
    assert outcome[0] == validated[0]
    if outcome[0] == "ok":
        assert outcome[1] == validated[1]
        assert outcome[1] is not args  # a dict of its own: callers add to it


def test_only_plain_and_bounded_parameters_take_the_short_way() -> None:
    service = _service()
    exact = {"n": 1, "s": "a", "f": 1.5, "b": True, "raw": b""}
    assert _binding(service, "plain")._exactly(exact) == exact
    assert _binding(service, "plain")._exactly({**exact, "n": True}) is None
    assert _binding(service, "bounded")._exactly({"limit": 5}) == {"limit": 5}
    assert _binding(service, "bounded")._exactly({"limit": 500}) is None
    assert _binding(service, "other")._exactly({"tags": ["a"]}) is None
