"""Compiling a validated operation into a plan the executor runs without graphql-core.

graphql-core's ``execute`` walks the document for every request: it collects
fields, looks up resolvers, completes values type by type, and checks every
leaf again. For the common shape of a request — the same document, again and
again — all of that can be decided once. :func:`compile_operation` inlines
fragments, merges fields by response key, decides every field's source
(a method, a relation, a key of the parent's dict, ``__typename``) and
coerces literal arguments, so the executor only calls handlers and copies
values (see :mod:`polyport.edges.graphql.execute`).

Plans are cached by document text and operation name. A document whose
``@skip``/``@include`` depend on variables is planned per request (its parse
and validation are still cached). ``__schema`` and ``__type`` are left to
graphql-core (:attr:`OperationPlan.introspection`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLField,
    GraphQLIncludeDirective,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLSkipDirective,
    InlineFragmentNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    VariableNode,
    get_location,
    get_named_type,
    visit,
)
from graphql.execution.values import VariableValues, get_argument_values, get_directive_values
from graphql.language import Visitor

from polyport.edges.graphql.schema import FieldSource, source_of

# Field kinds, as small ints: compared on every field of every request.
LEAF = 0  # a scalar or enum value of the parent's dict
OBJECT = 1  # an object (or list of objects) of the parent's dict
TYPENAME = 2  # __typename
RELATION = 3  # resolved by a batch call per level
ROOT = 4  # a root field: a method call, a stream, an event type
INTROSPECTION = 5  # __schema / __type: graphql-core answers


@dataclass(slots=True)
class FieldPlan:
    """One response key of a selection set."""

    key: str
    name: str
    kind: int
    node: FieldNode
    field_def: GraphQLField | None = None
    source: FieldSource | None = None
    typename: str = ""
    #: Arguments coerced from literals (by parameter name), or None when they need variables.
    args: dict[str, Any] | None = None
    children: list[FieldPlan] | None = None
    #: No relation below: the children are projected without awaiting anything.
    sync: bool = True

    @property
    def location(self) -> tuple[int, int] | None:
        loc = self.node.loc
        if loc is None:
            return None
        where = get_location(loc.source, loc.start)
        return where.line, where.column


@dataclass(slots=True)
class OperationPlan:
    operation: OperationType
    fields: list[FieldPlan]
    root_type: str
    depth: int = 0
    cost: int = 0
    #: The root fields graphql-core executes (``__schema``, ``__type``).
    introspection: list[FieldNode] = field(default_factory=list)


class PlanError(Exception):
    """The operation cannot be planned (it asks for something the schema lacks)."""


def uses_variables(node: Any) -> bool:
    found = False

    class Finder(Visitor):
        def enter_variable(self, *_: Any) -> Any:
            nonlocal found
            found = True
            return Visitor.BREAK

    visit(node, Finder())
    return found


def directives_use_variables(
    operation: OperationDefinitionNode, fragments: Mapping[str, Any]
) -> bool:
    """Whether ``@skip``/``@include`` anywhere in the operation read a variable."""
    found = False

    class Finder(Visitor):
        def enter_directive(self, node: Any, *_: Any) -> Any:
            nonlocal found
            if node.name.value in ("skip", "include") and any(
                isinstance(arg.value, VariableNode) for arg in node.arguments or ()
            ):
                found = True
                return Visitor.BREAK
            return None

    visit(operation, Finder())
    for fragment in fragments.values():
        visit(fragment, Finder())
    return found


class Planner:
    """Compiles operations of one document."""

    def __init__(
        self,
        schema: GraphQLSchema,
        fragments: Mapping[str, FragmentDefinitionNode],
        variables: VariableValues | None = None,
    ) -> None:
        self.schema = schema
        self.fragments = fragments
        self.variables = variables

    def plan(self, operation: OperationDefinitionNode) -> OperationPlan:
        root = self.schema.get_root_type(operation.operation)
        if root is None:
            raise PlanError(f"this schema has no {operation.operation.value} type")
        plan = OperationPlan(operation.operation, [], root.name)
        collected = self._collect(root, [operation.selection_set])
        for key, nodes in collected.items():
            name = nodes[0].name.value
            if name in ("__schema", "__type"):
                plan.introspection.extend(nodes)
                plan.fields.append(FieldPlan(key, name, INTROSPECTION, nodes[0]))
                continue
            plan.fields.append(self._field(root, key, nodes, root=True))
        plan.depth = max((_depth(f) for f in plan.fields), default=0)
        plan.cost = sum(_cost(f) for f in plan.fields)
        return plan

    # -- selections ------------------------------------------------------------------

    def _collect(
        self,
        type_: GraphQLObjectType,
        selection_sets: list[SelectionSetNode],
        visited: set[str] | None = None,
    ) -> dict[str, list[FieldNode]]:
        fields: dict[str, list[FieldNode]] = {}
        visited = visited if visited is not None else set()
        for selection_set in selection_sets:
            for selection in selection_set.selections:
                if not self._included(selection):
                    continue
                if isinstance(selection, FieldNode):
                    key = selection.alias.value if selection.alias else selection.name.value
                    fields.setdefault(key, []).append(selection)
                elif isinstance(selection, InlineFragmentNode):
                    if not self._applies(selection.type_condition, type_):
                        continue
                    for key, nodes in self._collect(
                        type_, [selection.selection_set], visited
                    ).items():
                        fields.setdefault(key, []).extend(nodes)
                elif isinstance(selection, FragmentSpreadNode):
                    name = selection.name.value
                    if name in visited:
                        continue
                    visited.add(name)
                    fragment = self.fragments.get(name)
                    if fragment is None or not self._applies(fragment.type_condition, type_):
                        continue
                    for key, nodes in self._collect(
                        type_, [fragment.selection_set], visited
                    ).items():
                        fields.setdefault(key, []).extend(nodes)
        return fields

    def _included(self, node: Any) -> bool:
        if not node.directives:
            return True
        skip = get_directive_values(GraphQLSkipDirective, node, self.variables)
        if skip and skip.get("if") is True:
            return False
        include = get_directive_values(GraphQLIncludeDirective, node, self.variables)
        return not (include and include.get("if") is False)

    def _applies(self, condition: Any, type_: GraphQLObjectType) -> bool:
        # The schema has no interfaces or unions: a condition names the type itself.
        return condition is None or condition.name.value == type_.name

    def _field(
        self, parent: GraphQLObjectType, key: str, nodes: list[FieldNode], *, root: bool = False
    ) -> FieldPlan:
        node = nodes[0]
        name = node.name.value
        if name == "__typename":
            return FieldPlan(key, name, TYPENAME, node, typename=parent.name)
        field_def = parent.fields.get(name)
        if field_def is None:
            raise PlanError(f"{parent.name} has no field {name!r}")
        source = source_of(field_def)
        if source is None:
            raise PlanError(f"{parent.name}.{name} has no source")
        if root:
            kind = ROOT
        elif source.kind == "relation":
            kind = RELATION
        else:
            kind = LEAF
        plan = FieldPlan(key, name, kind, node, field_def, source)
        if field_def.args:
            plan.args = (
                None
                if any(uses_variables(arg) for arg in node.arguments or ())
                else get_argument_values(field_def, node, None)
            )
        else:
            plan.args = {}
        named = get_named_type(field_def.type)
        if isinstance(named, GraphQLObjectType):
            if kind == LEAF:
                plan.kind = OBJECT
            sets = [n.selection_set for n in nodes if n.selection_set is not None]
            collected = self._collect(named, sets)
            plan.children = [self._field(named, k, ns) for k, ns in collected.items()]
            plan.sync = all(c.kind != RELATION and c.sync for c in plan.children)
        return plan


def _depth(plan: FieldPlan) -> int:
    if plan.kind == INTROSPECTION:
        return 0  # the introspection query is deep by nature, and cheap
    if not plan.children:
        return 1
    return 1 + max(_depth(child) for child in plan.children)


def _cost(plan: FieldPlan) -> int:
    """One per field; a list's children count once per item it may hold."""
    if plan.kind == INTROSPECTION:
        return 0
    if not plan.children:
        return 1
    inner = sum(_cost(child) for child in plan.children)
    return 1 + _size(plan) * inner


def _size(plan: FieldPlan) -> int:
    source = plan.source
    if source is None or plan.field_def is None or not _is_list_like(plan):
        return 1
    if source.size_arg is None:
        return source.size_default if plan.kind == RELATION else 1
    if plan.args is None:
        return source.size_max  # a variable: count the most it may ask for
    value = plan.args.get(source.size_arg)
    return value if isinstance(value, int) and value > 0 else source.size_default


def _is_list_like(plan: FieldPlan) -> bool:
    assert plan.field_def is not None
    type_ = plan.field_def.type
    if isinstance(type_, GraphQLNonNull):
        type_ = type_.of_type
    if isinstance(type_, GraphQLList):
        return True
    return plan.source is not None and plan.source.kind == "list"  # a connection


__all__ = [
    "INTROSPECTION",
    "LEAF",
    "OBJECT",
    "RELATION",
    "ROOT",
    "TYPENAME",
    "FieldPlan",
    "OperationPlan",
    "PlanError",
    "Planner",
    "directives_use_variables",
]
