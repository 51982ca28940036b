"""The first look at a document: counted from its tokens, before graphql-core parses it.

graphql-core's parser builds a node per token in Python (about 10 µs a token on
the bench machine) and its validation visits every node with every rule, some
rules quadratically. A document over a limit must be refused before either:
this pass splits the text into tokens with one regular expression (C speed)
and counts, in one loop over them,

* tokens (comments included, as graphql-core's ``max_tokens`` counts them),
* fields in the document and selections in each selection set,
* aliases and directives,

stopping at the first limit passed. The 4,900 ``__typename`` fields of issue 14
are refused at the 1,001st field (or the 201st selection of the set), without a
node built.

The counts need no grammar beyond this: outside parentheses (arguments,
variable definitions) a ``{`` always opens a selection set, and in a selection
set a name is a field, unless it follows ``@`` (a directive), ``...`` (a
fragment's name, or ``on`` and a type condition) or an alias's ``:``. Text that
is not GraphQL is left to the parser, which refuses it.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from polyport.edges.graphql import errors
from polyport.edges.graphql.errors import RequestError, request_error
from polyport.edges.graphql.limits import Limits

# One alternative per token kind; whitespace, commas and the BOM (ignored tokens)
# match nothing and are skipped by findall. Strings and comments come first so that
# braces inside them are never counted. Possessive loops: no backtracking on an
# unterminated string.
_TOKENS = re.compile(
    r'"""(?:\\"""|[^"\\]|\\|"(?!""))*+"""'  # block string
    r'|"(?:[^"\\\n\r]|\\.)*+"'  # string
    r"|#[^\n\r]*+"  # comment
    r"|\.\.\."  # spread
    r"|-?[0-9][0-9.eE+-]*+"  # number (its exact form is the parser's business)
    r"|[_A-Za-z][_0-9A-Za-z]*+"  # name
    r"|[^\s,\ufeff]"  # a punctuator, or a character the parser will refuse
)

# What the next name is: a field, or something else.
_FIELD = 0
_SKIPPED = 1  # after "@" (a directive's name) or an alias's ":" (the field's name)
_SPREAD = 2  # after "...": a fragment's name, or "on"
_TYPE_CONDITION = 3  # after "... on"


class Counts(NamedTuple):
    """What :func:`scan` counted in a document under its limits."""

    tokens: int
    fields: int
    aliases: int
    directives: int
    #: The most selections in one selection set.
    widest: int


def scan(text: str, limits: Limits) -> Counts:
    """Count ``text``'s tokens, fields, selections, aliases and directives.

    Stops at the first limit passed, so a refusal costs no more than the limit.

    Raises:
        RequestError: ``TOO_MANY_TOKENS``, ``TOO_MANY_FIELDS``, ``TOO_MANY_ALIASES``
            or ``TOO_MANY_DIRECTIVES``.
    """
    if len(text) > limits.length:
        raise request_error(
            f"the document is longer than {limits.length} characters", errors.TOO_MANY_TOKENS
        )
    tokens = _TOKENS.findall(text)
    if len(tokens) > limits.tokens:
        raise request_error(
            f"the document has more than {limits.tokens} tokens", errors.TOO_MANY_TOKENS
        )
    max_fields, max_selections = limits.fields, limits.selections
    max_aliases, max_directives = limits.aliases, limits.directives
    fields = aliases = directives = widest = 0
    sets: list[int] = []  # selections so far in each open selection set
    parens = 0
    state = _FIELD
    for token in tokens:
        first = token[0]
        if first == "#":
            continue
        if first == "@":
            directives += 1
            if directives > max_directives:
                raise _too_many_directives(max_directives)
            if not parens:
                state = _SKIPPED
        elif parens:  # arguments and variable definitions: values, types, variables
            if first == "(":
                parens += 1
            elif first == ")":
                parens -= 1
        elif first == "(":
            parens = 1
        elif first == "{":
            sets.append(0)
            state = _FIELD
        elif first == "}":
            if sets:
                selections = sets.pop()
                if selections > widest:
                    widest = selections
        elif not sets:
            continue  # between definitions: keywords, names, variable definitions
        elif first == ".":
            sets[-1] += 1
            if sets[-1] > max_selections:
                raise _too_many_selections(max_selections)
            state = _SPREAD
        elif first == ":":
            aliases += 1
            if aliases > max_aliases:
                raise request_error(
                    f"the document uses more than {max_aliases} aliases", errors.TOO_MANY_ALIASES
                )
            state = _SKIPPED
        elif first.isalpha() or first == "_":
            if state == _FIELD:
                fields += 1
                sets[-1] += 1
                if fields > max_fields:
                    raise _too_many_fields(max_fields)
                if sets[-1] > max_selections:
                    raise _too_many_selections(max_selections)
            elif state == _SPREAD and token == "on":
                state = _TYPE_CONDITION
                continue
            state = _FIELD
    for selections in sets:  # unclosed: the parser will refuse the document
        widest = max(widest, selections)
    return Counts(len(tokens), fields, aliases, directives, widest)


def _too_many_fields(limit: int) -> RequestError:
    return request_error(f"the document has more than {limit} fields", errors.TOO_MANY_FIELDS)


def _too_many_selections(limit: int) -> RequestError:
    return request_error(
        f"a selection set has more than {limit} selections", errors.TOO_MANY_FIELDS
    )


def _too_many_directives(limit: int) -> RequestError:
    return request_error(
        f"the document uses more than {limit} directives", errors.TOO_MANY_DIRECTIVES
    )


__all__ = ["Counts", "scan"]
