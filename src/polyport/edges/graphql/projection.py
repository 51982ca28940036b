"""Copying selected keys out of wire dicts: the plan's leaves, without awaiting anything.

Values are what the methods' serializers wrote (``mode="json"``); a plan
picks keys, renames them to their aliases and maps enum values to their
GraphQL names. Nested values are walked as they come: objects, lists of
objects, lists of lists.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from polyport.edges.graphql.plan import LEAF, TYPENAME, FieldPlan

#: Where a value sits in the response: keys and list indices.
Path = tuple[str | int, ...]


def map_enum(value: Any, names: Mapping[Any, str]) -> Any:
    if isinstance(value, list):
        return [map_enum(v, names) for v in value]
    return names.get(value, value) if value is not None else None


def project(value: Any, fields: list[FieldPlan]) -> Any:
    """The selection of ``fields`` from an object (or list of them) without relations below."""
    if value is None:
        return None
    if isinstance(value, list):
        return [project(item, fields) for item in value]
    out: dict[str, Any] = {}
    for field in fields:
        kind = field.kind
        if kind == LEAF:
            source = field.source
            assert source is not None
            names = source.enum
            item = value.get(source.wire)
            out[field.key] = item if names is None else map_enum(item, names)
        elif kind == TYPENAME:
            out[field.key] = field.typename
        else:  # OBJECT
            source = field.source
            assert source is not None and field.children is not None
            out[field.key] = project(value.get(source.wire), field.children)
    return out


def flatten(value: Any, flat: list[dict[str, Any]]) -> None:
    if value is None:
        return
    if isinstance(value, list):
        for item in value:
            flatten(item, flat)
        return
    flat.append(value)


def index_paths(value: Any, path: Path, paths: dict[int, Path]) -> None:
    """The path of every response object inside ``value``, by identity."""
    if isinstance(value, dict):
        paths[id(value)] = path
        for key, item in value.items():
            if isinstance(item, dict | list):
                index_paths(item, (*path, key), paths)
    elif isinstance(value, list):
        for position, item in enumerate(value):
            if isinstance(item, dict | list):
                index_paths(item, (*path, position), paths)


def rebuild(value: Any, projected: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, list):
        return [rebuild(item, projected) for item in value]
    return next(projected)


__all__ = ["Path", "flatten", "index_paths", "map_enum", "project", "rebuild"]
