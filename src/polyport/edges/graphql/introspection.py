"""What an introspection selection may cost: the size of its answer, bounded from the schema.

``__schema`` and ``__type`` are answered by graphql-core's executor, in Python,
on the event loop, and their answers grow with the schema: ``__schema { types
{ fields { type { fields { name } } } } }`` is every field of every type times
the fields of its type. graphql-core's ``MaxIntrospectionDepthRule`` (in its
specified rules) stops the nesting of ``fields`` and friends at two, but not
breadth: thirty aliases of that selection cost thirty times as much.

The estimate counts the fields the executor resolves, as an upper bound: each
list holds at most the largest such list in the schema (a type's fields, a
field's arguments, …) — except where the objects are *all* of their kind
(``__schema.types``, their ``fields``, ``__schema.directives``), whose lists
together hold exactly the schema's total. ``ofType`` is null past the deepest
wrapping (``[X!]!`` is three) any type reference of the schema has. Computed
without executing anything, in one pass over the selection (fragments expanded;
the document's field limit bounds that expansion).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeAlias

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLInputObjectType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLSchema,
    GraphQLType,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    get_introspection_query,
    is_abstract_type,
    is_enum_type,
    parse,
)
from graphql.type import GraphQLInterfaceType, GraphQLObjectType

# The meta-schema's lists: (meta type, field) -> the meta type of its items (None: leaves).
_LISTS: dict[tuple[str, str], str | None] = {
    ("__Schema", "types"): "__Type",
    ("__Schema", "directives"): "__Directive",
    ("__Type", "fields"): "__Field",
    ("__Type", "inputFields"): "__InputValue",
    ("__Type", "enumValues"): "__EnumValue",
    ("__Type", "interfaces"): "__Type",
    ("__Type", "possibleTypes"): "__Type",
    ("__Field", "args"): "__InputValue",
    ("__Directive", "args"): "__InputValue",
    ("__Directive", "locations"): None,
}
# ... and its single objects: (meta type, field) -> meta type.
_OBJECTS: dict[tuple[str, str], str] = {
    ("__Schema", "queryType"): "__Type",
    ("__Schema", "mutationType"): "__Type",
    ("__Schema", "subscriptionType"): "__Type",
    ("__Type", "ofType"): "__Type",
    ("__Field", "type"): "__Type",
    ("__InputValue", "type"): "__Type",
}
#: Lists whose items are every object of their kind (every type, every directive) ...
_EVERY = frozenset({("__Schema", "types"), ("__Schema", "directives")})
#: ... and the list that holds every one of its kind when its owners are every type.
_EVERY_IF_ALL = frozenset({("__Type", "fields")})


#: A selection set to count: its meta type, how many objects answer it, whether they
#: are every object of their kind, how many ``ofType`` levels are left, the fragments
#: it is inside of.
_Entry: TypeAlias = tuple[SelectionSetNode, str, int, bool, int, tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class IntrospectionSizes:
    """The schema's list sizes: the largest of each list, and the total over all owners."""

    largest: Mapping[tuple[str, str], int]
    total: Mapping[tuple[str, str], int]
    #: The most List/NonNull wrappers on one type reference (``[X!]!``: 3).
    wrapping: int

    @classmethod
    def of(cls, schema: GraphQLSchema) -> IntrospectionSizes:
        largest: dict[tuple[str, str], int] = dict.fromkeys(_LISTS, 0)
        total: dict[tuple[str, str], int] = dict.fromkeys(_LISTS, 0)
        wrapping = 0

        def seen(key: tuple[str, str], size: int) -> None:
            largest[key] = max(largest[key], size)
            total[key] += size

        def wrappers(type_: GraphQLType) -> int:
            depth = 0
            while isinstance(type_, (GraphQLList, GraphQLNonNull)):
                depth += 1
                type_ = type_.of_type
            return depth

        types = schema.type_map.values()
        seen(("__Schema", "types"), len(types))
        seen(("__Schema", "directives"), len(schema.directives))
        for type_ in types:
            if isinstance(type_, (GraphQLObjectType, GraphQLInterfaceType)):
                seen(("__Type", "fields"), len(type_.fields))
                seen(("__Type", "interfaces"), len(type_.interfaces))
                for field in type_.fields.values():
                    seen(("__Field", "args"), len(field.args))
                    wrapping = max(wrapping, wrappers(field.type))
                    for arg in field.args.values():
                        wrapping = max(wrapping, wrappers(arg.type))
            elif isinstance(type_, GraphQLInputObjectType):
                seen(("__Type", "inputFields"), len(type_.fields))
                for input_field in type_.fields.values():
                    wrapping = max(wrapping, wrappers(input_field.type))
            elif is_enum_type(type_):
                seen(("__Type", "enumValues"), len(type_.values))
            if is_abstract_type(type_):
                seen(("__Type", "possibleTypes"), len(schema.get_possible_types(type_)))
        for directive in schema.directives:
            seen(("__Directive", "args"), len(directive.args))
            seen(("__Directive", "locations"), len(directive.locations))
            for arg in directive.args.values():
                wrapping = max(wrapping, wrappers(arg.type))
        return cls(largest, total, wrapping)

    def standard_cost(self) -> int:
        """The cost of graphql-core's introspection query with every option on (an IDE's)."""
        document = parse(
            get_introspection_query(
                descriptions=True,
                specified_by_url=True,
                directive_is_repeatable=True,
                schema_description=True,
                input_value_deprecation=True,
                one_of=True,
            )
        )
        fragments = {
            d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
        }
        cost = 0
        for definition in document.definitions:
            if isinstance(definition, OperationDefinitionNode):
                for selection in definition.selection_set.selections:
                    if isinstance(selection, FieldNode):
                        cost += self.cost(selection, fragments, limit=1 << 62)
        return cost

    def cost(
        self, root: FieldNode, fragments: Mapping[str, FragmentDefinitionNode], limit: int
    ) -> int:
        """Fields resolved to answer ``root`` (``__schema`` or ``__type``) at most.

        Stops counting past ``limit``. A fragment spread inside itself adds
        nothing (validation refuses the cycle later).
        """
        largest, total = self.largest, self.total
        cost = 1
        meta = "__Schema" if root.name.value == "__schema" else "__Type"
        pending: list[_Entry] = []
        if root.selection_set is not None:
            pending.append((root.selection_set, meta, 1, False, 0, ()))
        while pending:
            selection_set, meta, count, everything, wraps, path = pending.pop()
            for selection in selection_set.selections:
                if isinstance(selection, InlineFragmentNode):
                    pending.append((selection.selection_set, meta, count, everything, wraps, path))
                    continue
                if isinstance(selection, FragmentSpreadNode):
                    name = selection.name.value
                    fragment = fragments.get(name)
                    if fragment is not None and name not in path:
                        entry = (fragment.selection_set, meta, count, everything, wraps)
                        pending.append((*entry, (*path, name)))
                    continue
                assert isinstance(selection, FieldNode)
                cost += count
                if cost > limit:
                    return cost
                key = (meta, selection.name.value)
                item_meta: str | None
                if key in _LISTS:
                    items = total[key] if everything else count * largest[key]
                    item_meta = _LISTS[key]
                    every = key in _EVERY or (everything and key in _EVERY_IF_ALL)
                    left = 0  # listed types are named types: their ofType is null
                    if item_meta is None:  # a list of leaves: its items are answered too
                        cost += items
                elif key in _OBJECTS:
                    item_meta, every = _OBJECTS[key], False
                    if key == ("__Type", "ofType"):
                        items, left = (count if wraps > 0 else 0), wraps - 1
                    elif key[1] == "type":
                        items, left = count, self.wrapping
                    else:
                        items, left = count, 0
                else:
                    continue
                children = selection.selection_set
                if item_meta is not None and children is not None and items > 0:
                    pending.append((children, item_meta, items, every, left, path))
        return cost


__all__ = ["IntrospectionSizes"]
