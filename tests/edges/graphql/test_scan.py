"""The counting passes before parsing and validating: they count what graphql-core would build.

The scan counts a document from its tokens; these tests hold its counts to the
AST graphql-core parses from the same text, for hand-picked corners of the
syntax and for generated documents. The census and the introspection estimate
are checked on the documents each one exists for.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from graphql import (
    DirectiveNode,
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    GraphQLSchema,
    OperationDefinitionNode,
    SelectionSetNode,
    Visitor,
    execute_sync,
    get_introspection_query,
    parse,
    visit,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from polyport.edges.graphql.census import census
from polyport.edges.graphql.config import GraphQLConfig
from polyport.edges.graphql.errors import RequestError
from polyport.edges.graphql.introspection import IntrospectionSizes
from polyport.edges.graphql.limits import Limits, check_variables
from polyport.edges.graphql.scan import Counts, scan
from polyport.edges.graphql.schema import build_schema
from polyport.node import Node

from .conftest import settings as node_settings
from .conftest import shop

#: No limit reached: the scan counts everything.
OPEN = Limits.of(
    GraphQLConfig(
        max_tokens=10**9,
        max_length=10**9,
        max_fields=10**9,
        max_selections=10**9,
        max_aliases=10**9,
        max_directives=10**9,
    ),
    introspection_cost=10**9,
)


@pytest.fixture(scope="module")
def schema() -> GraphQLSchema:
    node = Node(shop, node_settings(), edges=["graphql"])
    return build_schema(node.runtime.spec, node.runtime.dispatcher).schema


def counted(document: DocumentNode) -> Counts:
    """What the scan should find, counted on graphql-core's AST."""
    fields = aliases = directives = widest = 0

    class Counter(Visitor):
        def enter_field(self, node: FieldNode, *_: Any) -> None:
            nonlocal fields, aliases
            fields += 1
            aliases += node.alias is not None

        def enter_directive(self, node: DirectiveNode, *_: Any) -> None:
            nonlocal directives
            directives += 1

        def enter_selection_set(self, node: SelectionSetNode, *_: Any) -> None:
            nonlocal widest
            widest = max(widest, len(node.selections))

    visit(document, Counter())
    return Counts(document.token_count, fields, aliases, directives, widest)  # type: ignore[attr-defined]


CORNERS = [
    "{ a }",
    "{ a b c }",
    "{ x: on y: a on }",  # fields named "on", aliased and not
    'query Q($v: In = {a: {b: [1, 2]}, c: "{ x y }"} @d(e: 1)) { a(v: $v) { b } }',
    '{ a(s: "} { ( # not a comment", b: """ block { } "" \\""" still """) { c } }',
    "# a comment { with braces\n{ a # and another }\n b }",
    "{ ... on User { a } ... @include(if: true) { b } ...F @skip(if: false) c }"
    " fragment F on User { d e }",
    "query @dir { a @x @y(z: [1, {w: 2}]) { b @z } }",
    "{ a(n: -1.5e+3, m: 0, o: ENUM, p: null, q: true) }",
    "{ __typename __schema { types { name } } }",
    "mutation M { a } subscription S { b } { c }",
    "{ a(x: $x) { ...on T { b } } }",
    "\ufeff{ a, b, c }",
]


@pytest.mark.parametrize("text", CORNERS)
def test_the_scan_counts_what_the_parser_builds(text: str) -> None:
    """Fields, aliases, directives, the widest selection set and tokens match the AST."""
    assert scan(text, OPEN) == counted(parse(text))


_NAMES = st.sampled_from(["a", "b", "on", "query", "fragment", "true", "null", "_x", "__typename"])
_LEAVES = st.one_of(
    st.integers(-(10**6), 10**6).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda f: repr(f).replace("inf", "1")),
    st.text(alphabet=' {}()[]#"\\:@.,$abc\n\t', max_size=12).map(
        lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    ),
    st.text(alphabet=' {}()[]#:@.,$abc"\n', max_size=12).map(
        lambda s: '"""' + s.replace('"""', '\\"""') + '_"""'
    ),
    st.sampled_from(["$v", "ENUM", "true", "null"]),
)
_VALUES = st.recursive(
    _LEAVES,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3).map(lambda items: "[" + ", ".join(items) + "]"),
        st.lists(st.tuples(_NAMES, inner), max_size=3).map(
            lambda pairs: "{" + ", ".join(f"{k}: {v}" for k, v in pairs) + "}"
        ),
    ),
    max_leaves=6,
)
_ARGUMENTS = st.lists(st.tuples(_NAMES, _VALUES), max_size=2).map(
    lambda pairs: "(" + ", ".join(f"{k}: {v}" for k, v in pairs) + ")" if pairs else ""
)
_DIRECTIVES = st.lists(st.tuples(_NAMES, _ARGUMENTS), max_size=2).map(
    lambda ds: "".join(f" @{name}{args}" for name, args in ds)
)
_COMMENT = st.sampled_from(["", "", " # } { ( ...\n", ",", "\n"])


def _selections(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    field = st.tuples(
        st.one_of(st.just(""), _NAMES.map(lambda alias: alias + ": ")),
        _NAMES,
        _ARGUMENTS,
        _DIRECTIVES,
        st.one_of(st.just(""), inner),
    ).map(lambda p: f"{p[0]}{p[1]}{p[2]}{p[3]} {p[4]}")
    inline = st.tuples(st.sampled_from(["", " on T", "on U"]), _DIRECTIVES, inner).map(
        lambda p: f"...{p[0]}{p[1]} {p[2]}"
    )
    spread = st.tuples(st.sampled_from(["F", "G", "onion"]), _DIRECTIVES).map(
        lambda p: f"...{p[0]}{p[1]}"
    )
    selection = st.tuples(st.one_of(field, field, inline, spread), _COMMENT).map("".join)
    return st.lists(selection, min_size=1, max_size=4).map(lambda s: "{ " + " ".join(s) + " }")


_SELECTION_SETS = st.recursive(_selections(st.just("{ z }")), _selections, max_leaves=12)
_DOCUMENTS = st.lists(
    st.one_of(
        _SELECTION_SETS,
        st.tuples(st.sampled_from(["query", "mutation", "query Q($v: [In!] = [1])"]), _DIRECTIVES)
        .map(" ".join)
        .flatmap(lambda head: _SELECTION_SETS.map(lambda body: f"{head} {body}")),
        _SELECTION_SETS.map(lambda body: f"fragment F on T {body}"),
    ),
    min_size=1,
    max_size=3,
).map(" ".join)


@settings(
    max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(_DOCUMENTS)
def test_the_scan_counts_generated_documents_as_the_parser_does(text: str) -> None:
    """For any document graphql-core parses, the scan's counts equal the AST's."""
    assert scan(text, OPEN) == counted(parse(text))


def limits(**changes: int) -> Limits:
    return dataclasses.replace(OPEN, **changes)


@pytest.mark.parametrize(
    ("text", "change", "code"),
    [
        ("{ " + "a " * 11 + "}", {"fields": 10}, "TOO_MANY_FIELDS"),
        ("{ b { " + "a " * 6 + "} c { a } }", {"selections": 5}, "TOO_MANY_FIELDS"),
        ("{ ...F ...G ... on T { a } }", {"selections": 2}, "TOO_MANY_FIELDS"),
        ("{ a: b c: d e: f }", {"aliases": 2}, "TOO_MANY_ALIASES"),
        ("query($v: Int @a) { b @c d @e }", {"directives": 2}, "TOO_MANY_DIRECTIVES"),
        ("{ a }  ", {"length": 6}, "TOO_MANY_TOKENS"),
        ("{ a # one\n # two\n }", {"tokens": 4}, "TOO_MANY_TOKENS"),
    ],
)
def test_each_count_has_its_limit(text: str, change: dict[str, int], code: str) -> None:
    """One over a limit is refused with its code; at the limit, it passes."""
    with pytest.raises(RequestError) as refused:
        scan(text, limits(**change))
    assert refused.value.errors[0]["extensions"]["code"] == code
    ((name, value),) = change.items()
    scan(text, limits(**{name: value + 1}))


def test_the_census_counts_fragments_where_they_are_spread(schema: GraphQLSchema) -> None:
    """A chain of fragments spread by many operations selects its fields once per operation."""
    chain = " ".join(f"fragment F{i} on Query {{ _service ...F{i + 1} }}" for i in range(20))
    operations = " ".join(f"query Q{i} {{ ...F0 }}" for i in range(10))
    text = f"{operations} {chain} fragment F20 on Query {{ _service }}"
    sizes = IntrospectionSizes.of(schema)
    census(parse(text), limits(fields=10 * 21), sizes)  # ten operations, 21 fields each
    with pytest.raises(RequestError) as refused:
        census(parse(text), limits(fields=10 * 21 - 1), sizes)
    assert refused.value.errors[0]["extensions"]["code"] == "TOO_MANY_FIELDS"


def test_the_census_measures_depth_through_fragments(schema: GraphQLSchema) -> None:
    """Depth counts the fields around each spread, not the introspection's own."""
    text = (
        "{ user(id: 1) { ...A } __schema { types { fields { name } } } }"
        " fragment A on User { orders { ...B } } fragment B on Order { user { id } }"
    )
    sizes = IntrospectionSizes.of(schema)
    census(parse(text), limits(depth=4), sizes)  # user > orders > user > id
    with pytest.raises(RequestError) as refused:
        census(parse(text), limits(depth=3), sizes)
    assert refused.value.errors[0]["extensions"]["code"] == "QUERY_TOO_DEEP"


def test_a_fragment_cycle_counts_once_and_ends(schema: GraphQLSchema) -> None:
    """A cycle (refused later by validation) neither loops nor overflows the census."""
    text = "{ ...A } fragment A on Query { _service ...B } fragment B on Query { ...A }"
    census(parse(text), OPEN, IntrospectionSizes.of(schema))


def _answered(data: Any) -> int:
    """The fields in an introspection answer (items of lists of leaves count too)."""
    count, pending = 0, [data]
    while pending:
        value = pending.pop()
        if isinstance(value, dict):
            count += len(value)
            pending.extend(value.values())
        elif isinstance(value, list):
            count += sum(not isinstance(item, (dict, list)) for item in value)
            pending.extend(value)
    return count


@pytest.mark.parametrize(
    "text",
    [
        get_introspection_query(
            descriptions=True,
            specified_by_url=True,
            directive_is_repeatable=True,
            schema_description=True,
            input_value_deprecation=True,
            one_of=True,
        ),
        "{ __schema { types { fields { type { fields { name type { name } } } } } } }",
        '{ __type(name: "User") {'
        " fields { name args { name } type { ofType { ofType { name } } } } } }",
        "{ __schema { directives { name locations args { name } } queryType { name } } }",
    ],
)
def test_the_introspection_estimate_bounds_the_answer(schema: GraphQLSchema, text: str) -> None:
    """The estimate is never below the fields graphql-core actually answers."""
    sizes = IntrospectionSizes.of(schema)
    document = parse(text)
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    roots = [
        selection
        for d in document.definitions
        if isinstance(d, OperationDefinitionNode)
        for selection in d.selection_set.selections
        if isinstance(selection, FieldNode)
    ]
    estimate = sum(sizes.cost(root, fragments, limit=10**12) for root in roots)
    answer = execute_sync(schema, document)
    assert not answer.errors
    assert estimate >= _answered(answer.data)


def test_check_variables_counts_every_nested_value() -> None:
    """Scalars, lists and objects at any depth count; one over the limit is refused."""
    variables = {"a": [1, 2, {"b": [3]}], "c": "d"}  # a, 1, 2, {b}, b's list, 3, c: 7
    check_variables(variables, 7)
    with pytest.raises(RequestError) as refused:
        check_variables(variables, 6)
    assert refused.value.errors[0]["extensions"]["code"] == "VARIABLES_TOO_LARGE"
