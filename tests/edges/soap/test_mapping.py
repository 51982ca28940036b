"""The mapping's small decisions: names, patterns, collisions, and the optional dependency."""

from __future__ import annotations

import importlib
import re
import sys

import pytest

from polyport import ContractError, Service, Settings
from polyport.core.errors import MissingExtra
from polyport.edges.soap.mapping import operation_name, xsd_pattern
from polyport.node import Node


@pytest.mark.parametrize(
    ("method", "operation"),
    [("get_user", "GetUser"), ("multiply", "Multiply"), ("list_orders_v2", "ListOrdersV2")],
)
def test_operation_names_are_pascal_case(method: str, operation: str) -> None:
    """get_user → GetUser."""
    assert operation_name(method) == operation


@pytest.mark.parametrize(
    ("python", "xsd"),
    [
        (r"^[A-Z]{3}$", "[A-Z]{3}"),
        (r"^[a-z0-9_-]+$", "[a-z0-9_-]+"),
        (r"\d+", r"[\s\S]*(\d+)[\s\S]*"),
        (r"^ab", r"(ab)[\s\S]*"),
        (r"cd$", r"[\s\S]*(cd)"),
        (r"^[^@\x00-\x20]+@x$", None),  # \x escapes: XSD has none
        (r"^(?:a|b)$", None),  # non-capturing groups
        (r"^\w+$", None),  # \w differs between the dialects
        (r"^a+?$", None),  # lazy quantifiers
        (r"^a^b$", None),  # ^ in the middle is a literal in XSD
    ],
)
def test_python_patterns_become_xsd_patterns_only_when_safe(python: str, xsd: str | None) -> None:
    """Anchors are implicit in XSD; what the dialects read differently stays in the docs."""
    assert xsd_pattern(python) == xsd
    if xsd is not None:
        translated = xsd.replace(r"[\s\S]", "(?s:.)")
        for sample in ("ABC", "abc", "x12y", "ab", "cd", "zzcd", "abzz"):
            assert bool(re.search(python, sample)) == bool(re.fullmatch(translated, sample))


def test_colliding_element_names_are_a_contract_error() -> None:
    """Two methods whose elements would share a name fail at start-up, naming both."""
    service = Service("clash", version=1)

    @service.method
    async def get(x: int) -> int:
        return x

    @service.method
    async def get_response(x: int) -> int:
        return x

    with pytest.raises(ContractError, match="GetResponse"):
        Node(service, Settings(database=":memory:", event_log="memory"), edges=["soap"])


def test_a_missing_lxml_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without lxml the edge does not load, and the error says which extra to install."""
    importlib.import_module("polyport.edges.soap.binding")
    for name in list(sys.modules):
        if name.split(".")[0] == "lxml" or name.startswith("polyport.edges.soap"):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "lxml", None)
    with pytest.raises(MissingExtra, match=r"the SOAP edge needs the 'soap' extra"):
        importlib.import_module("polyport.edges.soap.binding")
