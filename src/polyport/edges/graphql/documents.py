"""Documents parsed, validated and planned once: the cache every request goes through.

    text ─▶ parse (token limit) ─▶ alias limit ─▶ validate ─▶ plan (depth, cost) ─▶ cached

Both the text and, for automatic persisted queries, its SHA-256 lead to the
same entry. The cache is a bounded LRU (``graphql.document_cache`` entries);
an evicted persisted query is simply reported as not found, and the client
sends the text again (the APQ protocol's normal recovery).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field

from graphql import (
    DocumentNode,
    FragmentDefinitionNode,
    GraphQLSchema,
    GraphQLSyntaxError,
    NoSchemaIntrospectionCustomRule,
    OperationDefinitionNode,
    parse,
    specified_rules,
    validate,
)
from graphql.execution.values import VariableValues

from polyport.core.config import GraphQLConfig
from polyport.edges.graphql import errors
from polyport.edges.graphql.errors import request_error
from polyport.edges.graphql.plan import (
    OperationPlan,
    PlanError,
    Planner,
    count_aliases,
    directives_use_variables,
)


@dataclass(slots=True)
class Document:
    """One parsed and validated document, with the plans of its operations."""

    text: str
    ast: DocumentNode
    operations: dict[str | None, OperationDefinitionNode]
    fragments: dict[str, FragmentDefinitionNode]
    #: ``@skip``/``@include`` read variables: plan per request.
    dynamic: bool
    plans: dict[str | None, OperationPlan] = field(default_factory=dict)

    def operation(self, name: str | None) -> OperationDefinitionNode:
        if name is None:
            if len(self.operations) != 1:
                raise request_error(
                    "the document holds several operations: name one with operationName",
                    errors.OPERATION_NOT_FOUND,
                )
            return next(iter(self.operations.values()))
        found = self.operations.get(name)
        if found is None:
            raise request_error(
                f"no operation named {name[:100]!r} in the document", errors.OPERATION_NOT_FOUND
            )
        return found


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class DocumentCache:
    """Parses, validates and plans documents for one schema, keeping the latest ones."""

    def __init__(self, schema: GraphQLSchema, config: GraphQLConfig) -> None:
        self.schema = schema
        self.config = config
        self.size = config.document_cache
        self.rules = list(specified_rules)
        if not config.introspection:
            self.rules.append(NoSchemaIntrospectionCustomRule)
        self._documents: OrderedDict[str, Document] = OrderedDict()
        self._persisted: OrderedDict[str, str] = OrderedDict()

    # -- persisted queries -------------------------------------------------------------

    def persisted(self, digest: str) -> str | None:
        text = self._persisted.get(digest)
        if text is not None:
            self._persisted.move_to_end(digest)
        return text

    @staticmethod
    def check_digest(digest: str, text: str) -> None:
        """Refuse a persisted-query hash that is not the SHA-256 of ``text``."""
        if sha256_hex(text) != digest.lower():
            raise request_error(
                "provided sha does not match query", errors.PERSISTED_QUERY_MISMATCH
            )

    def persist(self, digest: str, text: str) -> None:
        """Remember ``text`` (checked, parsed and validated) under ``digest``."""
        self._persisted[digest.lower()] = text
        if len(self._persisted) > self.size:
            self._persisted.popitem(last=False)

    # -- documents ----------------------------------------------------------------------

    def document(self, text: str) -> Document:
        found = self._documents.get(text)
        if found is not None:
            self._documents.move_to_end(text)
            return found
        document = self._load(text)
        self._documents[text] = document
        if len(self._documents) > self.size:
            self._documents.popitem(last=False)
        return document

    def _load(self, text: str) -> Document:
        config = self.config
        if len(text) > config.max_tokens * 64:
            raise request_error(
                f"the document is longer than {config.max_tokens * 64} characters",
                errors.TOO_MANY_TOKENS,
            )
        try:
            ast = parse(text, max_tokens=config.max_tokens)
        except GraphQLSyntaxError as exc:
            if "tokens. Parsing aborted" in exc.message:
                raise request_error(
                    f"the document has more than {config.max_tokens} tokens",
                    errors.TOO_MANY_TOKENS,
                ) from None
            raise errors.from_graphql_errors([exc], errors.PARSE_FAILED, 400) from None
        aliases = count_aliases(ast)
        if aliases > config.max_aliases:
            raise request_error(
                f"the document uses {aliases} aliases; at most {config.max_aliases} are allowed",
                errors.TOO_MANY_ALIASES,
            )
        problems = validate(self.schema, ast, self.rules, max_errors=20)
        if problems:
            raise errors.from_graphql_errors(problems, errors.VALIDATION_FAILED, 400)
        operations: dict[str | None, OperationDefinitionNode] = {}
        fragments: dict[str, FragmentDefinitionNode] = {}
        for definition in ast.definitions:
            if isinstance(definition, OperationDefinitionNode):
                operations[definition.name.value if definition.name else None] = definition
            elif isinstance(definition, FragmentDefinitionNode):
                fragments[definition.name.value] = definition
        dynamic = any(directives_use_variables(op, fragments) for op in operations.values())
        return Document(text, ast, operations, fragments, dynamic)

    def plan(
        self,
        document: Document,
        name: str | None,
        variables: VariableValues | None,
    ) -> OperationPlan:
        """The operation's plan, checked against the depth and cost limits."""
        if not document.dynamic:
            cached = document.plans.get(name)
            if cached is not None:
                return cached
        operation = document.operation(name)
        try:
            plan = Planner(self.schema, document.fragments, variables).plan(operation)
        except PlanError as exc:
            raise request_error(str(exc), errors.VALIDATION_FAILED) from None
        config = self.config
        if plan.depth > config.max_depth:
            raise request_error(
                f"the query is {plan.depth} levels deep; at most {config.max_depth} are allowed",
                errors.TOO_DEEP,
            )
        if plan.cost > config.max_cost:
            raise request_error(
                f"the query may cost {plan.cost}; at most {config.max_cost} is allowed",
                errors.TOO_COSTLY,
                cost=plan.cost,
                maxCost=config.max_cost,
            )
        if not document.dynamic:
            document.plans[name] = plan
        return plan


__all__ = ["Document", "DocumentCache", "sha256_hex"]
