"""The GraphQL edge: queries, mutations and subscriptions at /graphql, SDL beside it.

The edge is :class:`~polyport.edges.graphql.binding.GraphQLEdge` (importing it
without the 'graphql' extra raises :class:`~polyport.core.errors.MissingExtra`,
which switches the edge off); its settings section,
:class:`~polyport.edges.graphql.config.GraphQLConfig`, imports without anything
the edge needs. Nothing is imported here, so that importing a module of this
package never loads the edge itself.
"""
