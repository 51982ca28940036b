"""The GraphQL edge: queries, mutations and subscriptions at /graphql, SDL beside it."""

from polyport.core.errors import MissingExtra

try:
    from polyport.edges.graphql.binding import GraphQLEdge
except ImportError as exc:  # graphql-core comes with the 'graphql' extra
    if exc.name and exc.name.split(".")[0] == "graphql":
        raise MissingExtra("graphql", "the GraphQL edge") from exc
    raise

__all__ = ["GraphQLEdge"]
