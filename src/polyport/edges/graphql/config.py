"""The GraphQL edge's settings: ``[graphql]``, ``POLYPORT_GRAPHQL__…`` (without graphql-core)."""

from __future__ import annotations

from pydantic import Field

from polyport.core.config import Section


class GraphQLConfig(Section):
    """The GraphQL edge."""

    introspection: bool = True
    #: graphql-transport-ws: seconds a client has to send ``connection_init`` (then 4408).
    connection_init_timeout: float = Field(default=3.0, gt=0, le=3600)
    #: graphql-transport-ws: operations running at once on one connection.
    max_subscriptions: int = Field(default=64, ge=1)
    #: Deepest selection nesting accepted (fields inside fields).
    max_depth: int = Field(default=12, ge=1, le=1000)
    #: Highest cost: one per field, multiplied by the page size of the lists around it.
    max_cost: int = Field(default=10_000, ge=1)
    #: Most aliases in one document.
    max_aliases: int = Field(default=30, ge=1)
    #: Most lexical tokens in one document, comments included (counted before parsing).
    max_tokens: int = Field(default=5_000, ge=100)
    #: Longest document, in characters (checked before anything else is done with it).
    max_length: int = Field(default=100_000, ge=1_000)
    #: Most fields in one document: as written, and again with every fragment expanded
    #: where it is spread, over all its operations (``__typename`` counts too).
    max_fields: int = Field(default=1_000, ge=1)
    #: Most selections (fields, fragment spreads, inline fragments) in one selection set.
    max_selections: int = Field(default=200, ge=1)
    #: Most directives in one document.
    max_directives: int = Field(default=50, ge=0)
    #: Work graphql-core's field-merging check (OverlappingFieldsCanBeMerged, quadratic
    #: by nature) may spend on one document, in its units: two per pair of fields compared.
    max_merge_work: int = Field(default=50_000, ge=1_000)
    #: Highest estimated size of a document's introspection answer (``__schema``,
    #: ``__type``). None: twice what the standard introspection query costs on this schema.
    max_introspection_cost: int | None = Field(default=None, ge=1)
    #: Most values (scalars, lists and objects, nested ones included) in one request's variables.
    max_variable_values: int = Field(default=5_000, ge=1)
    #: Seconds one request may take before it is answered with a TIMEOUT error.
    timeout: float = Field(default=30.0, gt=0, le=3600)
    #: Parsed, validated and planned documents kept (by text and by persisted hash),
    #: and as many refused documents (by the SHA-256 of their text).
    document_cache: int = Field(default=1_000, ge=1)
