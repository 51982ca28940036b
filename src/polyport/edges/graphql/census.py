"""The second look at a document: its shape counted from the AST, before validation.

:func:`~polyport.edges.graphql.scan.scan` counted the document as written. A
fragment spread many times, or a chain of fragments each spreading the next,
selects far more than is written: 300 operations spreading a chain of 150
fragments are 3,000 tokens, yet graphql-core's validation walks the chain once
per operation (120 ms on the bench machine) and the planner would expand it.
So, with each fragment's totals computed once (not once per spread):

* the fields selected by all operations with every fragment expanded
  (``graphql.max_fields``);
* the depth of each operation through its fragments (``graphql.max_depth``,
  introspection fields aside, as the plan counts it) — before validation, so
  the planner never recurses deeper than that;
* the estimated size of the introspection answer (``__schema``, ``__type``:
  see :mod:`~polyport.edges.graphql.introspection`).

Every walk is iterative and every fragment is summed once, so this costs
one pass over the document whatever its fragments do. A fragment that spreads
itself adds nothing here; validation reports the cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
)

from polyport.edges.graphql import errors
from polyport.edges.graphql.errors import request_error
from polyport.edges.graphql.introspection import IntrospectionSizes
from polyport.edges.graphql.limits import Limits

_INTROSPECTION = frozenset({"__schema", "__type"})


@dataclass(slots=True)
class _Shape:
    """One definition's selections, its fragment spreads left unexpanded."""

    fields: int = 0
    depth: int = 0
    #: (fragment, fields around the spread); depth -1 inside introspection (not counted)
    spreads: list[tuple[str, int]] = field(default_factory=list)
    introspection: list[FieldNode] = field(default_factory=list)


def _shape(selection_set: SelectionSetNode) -> _Shape:
    shape = _Shape()
    # (selection set, fields around it or -1 inside introspection)
    pending = [(selection_set, 0)]
    while pending:
        selections, depth = pending.pop()
        for selection in selections.selections:
            if isinstance(selection, FieldNode):
                shape.fields += 1
                inner = depth
                if depth >= 0:
                    if selection.name.value in _INTROSPECTION:
                        shape.introspection.append(selection)
                        inner = -1
                    else:
                        inner = depth + 1
                        shape.depth = max(shape.depth, inner)
                if selection.selection_set is not None:
                    pending.append((selection.selection_set, inner))
            elif isinstance(selection, InlineFragmentNode):
                pending.append((selection.selection_set, depth))
            elif isinstance(selection, FragmentSpreadNode):
                shape.spreads.append((selection.name.value, depth))
    return shape


def census(document: DocumentNode, limits: Limits, sizes: IntrospectionSizes) -> None:
    """Refuse ``document`` if, fragments expanded, it is over a limit.

    Raises:
        RequestError: ``TOO_MANY_FIELDS``, ``QUERY_TOO_DEEP`` or
            ``QUERY_TOO_COSTLY`` (the introspection).
    """
    fragments: dict[str, FragmentDefinitionNode] = {}
    shapes: dict[str, _Shape] = {}
    operations: list[_Shape] = []
    for definition in document.definitions:
        if isinstance(definition, FragmentDefinitionNode):
            fragments.setdefault(definition.name.value, definition)
            shapes.setdefault(definition.name.value, _shape(definition.selection_set))
        elif isinstance(definition, OperationDefinitionNode):
            operations.append(_shape(definition.selection_set))
    cap = limits.fields + 1  # totals stop growing past the limit: they only get compared
    totals = _fragment_totals(shapes, cap)
    fields = 0
    for operation in operations:
        fields += operation.fields
        depth = operation.depth
        for name, at in operation.spreads:
            size, deep = totals.get(name, (0, 0))
            fields += size
            if at >= 0:
                depth = max(depth, at + deep)
        if fields > limits.fields:
            raise request_error(
                f"the document selects more than {limits.fields} fields"
                " once its fragments are expanded",
                errors.TOO_MANY_FIELDS,
            )
        if depth > limits.depth:
            raise request_error(
                f"the query is {depth} levels deep; at most {limits.depth} are allowed",
                errors.TOO_DEEP,
            )
    introspection = [root for shape in operations for root in shape.introspection]
    introspection += [root for shape in shapes.values() for root in shape.introspection]
    cost = 0
    for root in introspection:
        cost += sizes.cost(root, fragments, limits.introspection_cost - cost)
        if cost > limits.introspection_cost:
            raise request_error(
                f"the introspection may cost more than {limits.introspection_cost}",
                errors.TOO_COSTLY,
                maxCost=limits.introspection_cost,
            )


def _fragment_totals(shapes: dict[str, _Shape], cap: int) -> dict[str, tuple[int, int]]:
    """Each fragment's fields and depth with the fragments it spreads expanded (capped).

    Depth-first without recursion: a fragment is summed once every fragment it
    spreads is; a spread closing a cycle counts nothing.
    """
    totals: dict[str, tuple[int, int]] = {}
    for root in shapes:
        if root in totals:
            continue
        path = [(root, iter(shapes[root].spreads))]
        on_path = {root}
        while path:
            name, spreads = path[-1]
            for spread, _ in spreads:
                if spread in shapes and spread not in totals and spread not in on_path:
                    path.append((spread, iter(shapes[spread].spreads)))
                    on_path.add(spread)
                    break
            else:
                path.pop()
                on_path.discard(name)
                shape = shapes[name]
                size, depth = shape.fields, shape.depth
                for spread, at in shape.spreads:
                    inner_size, inner_depth = totals.get(spread, (0, 0))
                    size = min(cap, size + inner_size)
                    if at >= 0:
                        depth = min(cap, max(depth, at + inner_depth))
                totals[name] = (size, depth)
    return totals


__all__ = ["census"]
