"""The numbers every document is held to, and the count of a request's variables.

:class:`Limits` gathers ``graphql.*`` settings with the one limit the schema
decides: the introspection budget, by default twice what the standard
introspection query costs on this schema (see
:mod:`~polyport.edges.graphql.introspection`), so an IDE's introspection
passes whatever the size of the service and a document asking for its answer
thirty times over does not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from polyport.edges.graphql import errors
from polyport.edges.graphql.config import GraphQLConfig
from polyport.edges.graphql.errors import request_error


@dataclass(frozen=True, slots=True)
class Limits:
    """What one document (and one request's variables) may hold."""

    length: int
    tokens: int
    fields: int
    selections: int
    aliases: int
    directives: int
    depth: int
    cost: int
    merge_work: int
    introspection_cost: int
    variable_values: int

    @classmethod
    def of(cls, config: GraphQLConfig, introspection_cost: int) -> Limits:
        """The limits of ``config``; ``introspection_cost`` when the setting leaves it open."""
        return cls(
            length=config.max_length,
            tokens=config.max_tokens,
            fields=config.max_fields,
            selections=config.max_selections,
            aliases=config.max_aliases,
            directives=config.max_directives,
            depth=config.max_depth,
            cost=config.max_cost,
            merge_work=config.max_merge_work,
            introspection_cost=config.max_introspection_cost or introspection_cost,
            variable_values=config.max_variable_values,
        )


def check_variables(variables: dict[str, Any], limit: int) -> None:
    """Refuse variables holding more than ``limit`` values before graphql-core coerces them.

    Coercion walks every value in Python (about 4 µs each on the bench machine):
    a 1 MiB body of list items would hold the event loop for a quarter of a
    second. Counting stops at the limit, so a refusal costs no more than it.

    Raises:
        RequestError: ``VARIABLES_TOO_LARGE``.
    """
    count = 0  # each value is counted once, as one of its container's
    pending: list[dict[str, Any] | list[Any]] = [variables]
    while pending:
        container = pending.pop()
        values = container.values() if isinstance(container, dict) else container
        count += len(values)
        if count > limit:
            raise request_error(
                f"the variables hold more than {limit} values", errors.VARIABLES_TOO_LARGE
            )
        pending.extend(value for value in values if isinstance(value, (dict, list)))


__all__ = ["Limits", "check_variables"]
