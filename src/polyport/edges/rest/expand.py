"""``?expand=``: a resource's relations inlined into the REST response.

    GET /v1/users/7?expand=orders,orders.items.product

Each path is a dot-separated chain of relations. They are resolved level by
level with one batch call per relation per level — the same calls a GraphQL
query for the same shape makes — so REST and GraphQL stay comparable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from polyport.core.context import Principal
from polyport.core.dispatch import Caller, Dispatcher, RelationBinding
from polyport.core.errors import InvalidArgument
from polyport.core.types import ListOf, ModelRef, TypeNode, unwrap_nullable

#: Bounds on one ``expand`` parameter: how many paths, how many levels deep.
MAX_PATHS = 16
MAX_DEPTH = 4


def target_model(node: TypeNode) -> str | None:
    """The model a value is made of (through lists and nulls), if any."""
    inner, _ = unwrap_nullable(node)
    if isinstance(inner, ListOf):
        inner, _ = unwrap_nullable(inner.item)
    return inner.name if isinstance(inner, ModelRef) else None


@dataclass(slots=True)
class Step:
    """One segment of an expansion: a relation to resolve, or a stored field to go through."""

    relation: RelationBinding | None  # None: a stored field holding models
    wire_name: str
    model: str | None  # what the values are made of, if models
    children: dict[str, Step] = field(default_factory=dict)


def _steps(
    dispatcher: Dispatcher, model: str
) -> dict[str, tuple[RelationBinding | None, str, str | None]]:
    """What can follow ``model`` in a path: its relations and its model-valued fields."""
    found: dict[str, tuple[RelationBinding | None, str, str | None]] = {}
    for spec in dispatcher.spec.graph.model(model).fields:
        child = target_model(spec.type)
        if child is not None:
            found[spec.wire_name] = (None, spec.wire_name, child)
    for name, relation in dispatcher.relations.get(model, {}).items():
        found[name] = (relation, name, target_model(relation.spec.returns))
    return found


def expandable(dispatcher: Dispatcher, model: str) -> list[str]:
    """Every path ``?expand=`` accepts from ``model`` that ends in a relation."""
    paths: list[str] = []

    def walk(current: str, prefix: str, depth: int, seen: frozenset[str]) -> None:
        for name, (relation, _, child) in sorted(_steps(dispatcher, current).items()):
            path = prefix + name
            if relation is not None:
                paths.append(path)
            if child is not None and depth < MAX_DEPTH and child not in seen:
                walk(child, path + ".", depth + 1, seen | {child})

    walk(model, "", 1, frozenset({model}))
    return paths


class Expander:
    """Parses ``expand`` for one model and fills the relations into dumped items.

    It accepts exactly what the document lists (:func:`expandable`): a
    comma-separated list of those paths, nothing around them — so a client
    reading the document never meets a refusal it could not foresee.
    """

    def __init__(self, dispatcher: Dispatcher, model: str) -> None:
        self.dispatcher = dispatcher
        self.model = model
        self.paths = frozenset(expandable(dispatcher, model))

    def parse(self, text: str) -> dict[str, Step]:
        """The tree of steps named by ``text``; anything else is a 422 saying why."""
        tree: dict[str, Step] = {}
        paths = text.split(",")  # "" is one empty path, as the document's form style reads it
        if len(paths) > MAX_PATHS:
            raise InvalidArgument(f"expand: at most {MAX_PATHS} paths")
        for path in paths:
            if path not in self.paths:
                raise self._refusal(path)
            model: str | None = self.model
            level = tree
            for part in path.split("."):
                relation, wire_name, model = _steps(self.dispatcher, model or "")[part]
                step = level.get(part)
                if step is None:
                    step = level[part] = Step(relation, wire_name, model)
                level = step.children
        return tree

    def _refusal(self, path: str) -> InvalidArgument:
        """Why ``path`` is not one of the paths the document lists, as precisely as known."""
        shown = path[:100]
        details = [{"field": "expand", "message": f"not an expandable path: {shown}"}]
        if not path:
            return InvalidArgument("expand: an empty path; name a relation", details=details)
        parts = path.split(".")
        if len(parts) > MAX_DEPTH:
            return InvalidArgument(
                f"expand: {shown!r} is deeper than {MAX_DEPTH} levels", details=details
            )
        model: str | None = self.model
        relation = None
        for part in parts:
            steps = _steps(self.dispatcher, model) if model is not None else {}
            if part not in steps:
                known = ", ".join(sorted(steps)) or "nothing"
                return InvalidArgument(
                    f"expand: {model or 'this value'} has no relation {part[:100]!r}"
                    f" (it has: {known})",
                    details=[{"field": "expand", "message": f"unknown relation {part[:100]}"}],
                )
            relation, _, model = steps[part]
        if relation is None:
            return InvalidArgument(
                f"expand: {shown!r} names a stored field; end the path with a relation",
                details=details,
            )
        return InvalidArgument(
            f"expand: {shown!r} returns to a model it came from; expandable: "
            + ", ".join(sorted(self.paths)),
            details=details,
        )

    async def apply(self, items: list[Any], tree: dict[str, Step], caller: Caller) -> None:
        """Resolve ``tree`` under ``items`` (wire dicts), in place."""
        principal = self.dispatcher.authenticate(caller)
        await self._level(items, tree, principal, caller)

    async def _level(
        self, items: list[Any], tree: dict[str, Step], principal: Principal, caller: Caller
    ) -> None:
        for name, step in tree.items():
            if step.relation is not None:
                relation = step.relation
                values = await self.dispatcher.resolve(relation, items, None, principal, caller)
                dumped = [relation.dump_python(value) for value in values]
                for item, value in zip(items, dumped, strict=True):
                    item[name] = value
            else:
                dumped = [item.get(step.wire_name) for item in items]
            if step.children:
                children: list[Any] = []
                for value in dumped:
                    if isinstance(value, list):
                        children.extend(v for v in value if v is not None)
                    elif value is not None:
                        children.append(value)
                if children:
                    await self._level(children, step.children, principal, caller)
