"""Documents parsed, validated and planned once: the cache every request goes through.

    text ─▶ refused before? ─▶ scan ─▶ parse ─▶ census ─▶ validate ─▶ cached
    document, operation ─▶ plan (depth, cost) ─▶ cached

Both the text and, for automatic persisted queries, its SHA-256 lead to the
same entry. The cache is a bounded LRU (``graphql.document_cache`` entries);
an evicted persisted query is simply reported as not found, and the client
sends the text again (the APQ protocol's normal recovery).

**Hostile documents** (issue 14: 4,900 ``__typename`` fields, under the token
limit, cost 220-330 ms of the event loop each, for anyone). Parsing and
validating are graphql-core's, in Python, on the loop; they are linear in the
document at best (parse about 10 µs a token, validation about 40 µs a field on
the bench machine) and the field-merging rule is quadratic. So every limit is
checked before the work it protects, by passes that cost less than that work:

* :func:`~polyport.edges.graphql.scan.scan`, before parsing: length, tokens,
  fields, selections per selection set, aliases, directives — counted on the
  token stream, stopping at the first limit passed;
* :func:`~polyport.edges.graphql.census.census`, before validating: fields and
  depth with fragments expanded, the introspection's estimated cost;
* validation itself with the field-merging rule on a budget
  (``graphql.max_merge_work``): past it, ``QUERY_TOO_COMPLEX``.

Validation time is bounded by counting, not by a clock: the limits above bound
every rule's work (each rule is linear in the fields but field merging, which
is metered), so the worst document admitted costs a known amount — see
docs/graphql.md for the figures. A clock would refuse a document on a loaded
node and accept it on an idle one, and a refusal is kept (below), so the same
document would be refused for good by accident. Running validation in a thread
would not free the loop either: it holds the GIL while it runs, and a thread
cannot be stopped when its time is up.

**Refusals are kept** too, by the SHA-256 of the text (32 bytes, not the text),
in an LRU of the same size: a document sent again is refused for the price of
hashing it and one lookup. A plan refused for depth or cost is kept with its
document (per operation) unless the document's plan depends on variables.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from graphql import (
    DocumentNode,
    FragmentDefinitionNode,
    GraphQLSchema,
    GraphQLSyntaxError,
    NoSchemaIntrospectionCustomRule,
    OperationDefinitionNode,
    OverlappingFieldsCanBeMergedRule,
    ValidationContext,
    parse,
    specified_rules,
    validate,
)
from graphql.execution.values import VariableValues
from graphql.validation import ASTValidationRule
from graphql.validation.validate import ValidationAbortedError

from polyport.edges.graphql import errors
from polyport.edges.graphql.census import census
from polyport.edges.graphql.config import GraphQLConfig
from polyport.edges.graphql.errors import RequestError, request_error
from polyport.edges.graphql.introspection import IntrospectionSizes
from polyport.edges.graphql.limits import Limits
from polyport.edges.graphql.plan import (
    OperationPlan,
    PlanError,
    Planner,
    directives_use_variables,
)
from polyport.edges.graphql.scan import scan

#: A refusal as kept: the errors and the HTTP status (never the exception: its
#: traceback would keep the refused document's frames alive).
Refusal = tuple[list[dict[str, Any]], int]


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
    #: Operations refused when planned (too deep, too costly), unless ``dynamic``.
    refused: dict[str | None, Refusal] = field(default_factory=dict)

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
    return hashlib.sha256(text.encode(errors="surrogatepass")).hexdigest()


class MergeWorkExceeded(Exception):
    """The field-merging check spent its budget on a document."""


def budgeted_merging(budget: int) -> type[ASTValidationRule]:
    """graphql-core's OverlappingFieldsCanBeMergedRule, on ``budget`` units of work.

    The rule compares every pair of fields answering under the same name, and
    their subselections pair by pair: quadratic, and more through fragments.
    graphql-core meters that work (two units a pair of fields) and aborts past
    500,000 units (about 0.15 s on the bench machine) with a plain "Validation
    aborted."; this sets the budget per document and tells the abort apart.
    """

    class BudgetedMerging(OverlappingFieldsCanBeMergedRule):
        def __init__(self, context: ValidationContext) -> None:
            super().__init__(context)
            if hasattr(self.rule_context, "remaining_complexity_budget"):  # graphql-core 3.3.2+
                self.rule_context.remaining_complexity_budget = budget

        def enter_selection_set(self, *args: Any) -> None:
            try:
                super().enter_selection_set(*args)
            except ValidationAbortedError:
                if self.rule_context.remaining_complexity_budget < 0:
                    raise MergeWorkExceeded from None
                raise

    return BudgetedMerging


class DocumentCache:
    """Parses, validates and plans documents for one schema, keeping the latest ones."""

    def __init__(self, schema: GraphQLSchema, config: GraphQLConfig) -> None:
        self.schema = schema
        self.config = config
        self.size = config.document_cache
        self.sizes = IntrospectionSizes.of(schema)
        self.limits = Limits.of(config, introspection_cost=2 * self.sizes.standard_cost())
        merging = budgeted_merging(config.max_merge_work)
        self.rules = [
            merging if rule is OverlappingFieldsCanBeMergedRule else rule
            for rule in specified_rules
        ]
        if not config.introspection:
            self.rules.append(NoSchemaIntrospectionCustomRule)
        self._documents: OrderedDict[str, Document] = OrderedDict()
        self._persisted: OrderedDict[str, str] = OrderedDict()
        #: SHA-256 of a refused text → its refusal.
        self._refused: OrderedDict[bytes, Refusal] = OrderedDict()

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
        """The parsed and validated document of ``text``.

        Raises:
            RequestError: ``text`` is over a limit, or not a valid document.
        """
        found = self._documents.get(text)
        if found is not None:
            self._documents.move_to_end(text)
            return found
        digest = hashlib.sha256(text.encode(errors="surrogatepass")).digest()
        refused = self._refused.get(digest)
        if refused is not None:
            self._refused.move_to_end(digest)
            raise RequestError(*refused)
        try:
            document = self._load(text)
        except RequestError as exc:
            self._refused[digest] = (exc.errors, exc.status)
            if len(self._refused) > self.size:
                self._refused.popitem(last=False)
            raise
        self._documents[text] = document
        if len(self._documents) > self.size:
            self._documents.popitem(last=False)
        return document

    def _load(self, text: str) -> Document:
        limits = self.limits
        scan(text, limits)
        try:
            # max_tokens again: the scan counts as the lexer does, this makes sure of it.
            ast = parse(text, max_tokens=limits.tokens)
        except GraphQLSyntaxError as exc:
            if "tokens. Parsing aborted" in exc.message:
                raise request_error(
                    f"the document has more than {limits.tokens} tokens", errors.TOO_MANY_TOKENS
                ) from None
            raise errors.from_graphql_errors([exc], errors.PARSE_FAILED, 400) from None
        census(ast, limits, self.sizes)
        try:
            problems = validate(self.schema, ast, self.rules, max_errors=20)
        except MergeWorkExceeded:
            raise request_error(
                "the document's fields take too much work to merge"
                f" (more than {limits.merge_work} units); use fewer overlapping fields"
                " and fragments",
                errors.TOO_COMPLEX,
            ) from None
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
            refused = document.refused.get(name)
            if refused is not None:
                raise RequestError(*refused)
        try:
            plan = self._plan(document, name, variables)
        except RequestError as exc:
            if not document.dynamic and name in document.operations:
                document.refused[name] = (exc.errors, exc.status)
            raise
        if not document.dynamic:
            document.plans[name] = plan
        return plan

    def _plan(
        self, document: Document, name: str | None, variables: VariableValues | None
    ) -> OperationPlan:
        operation = document.operation(name)
        try:
            plan = Planner(self.schema, document.fragments, variables).plan(operation)
        except PlanError as exc:
            raise request_error(str(exc), errors.VALIDATION_FAILED) from None
        limits = self.limits
        if plan.depth > limits.depth:
            raise request_error(
                f"the query is {plan.depth} levels deep; at most {limits.depth} are allowed",
                errors.TOO_DEEP,
            )
        if plan.cost > limits.cost:
            raise request_error(
                f"the query may cost {plan.cost}; at most {limits.cost} is allowed",
                errors.TOO_COSTLY,
                cost=plan.cost,
                maxCost=limits.cost,
            )
        return plan


__all__ = ["Document", "DocumentCache", "sha256_hex"]
