"""Relations: declared on the contract, analysed into the spec, resolved in batches."""

from __future__ import annotations

from typing import Annotated, Any

import pytest
from pydantic import BaseModel, Field

from polyport import Context, Internal, InvalidArgument, PermissionDenied, Service, Unauthenticated
from polyport.core.auth import Authenticator
from polyport.core.config import AuthConfig, RateLimitConfig
from polyport.core.context import ANONYMOUS, Principal
from polyport.core.dispatch import Caller, Dispatcher
from polyport.core.errors import ContractError
from polyport.core.metrics import Metrics
from polyport.core.ratelimit import RateLimiter
from polyport.core.types import ListOf, ModelRef


class Author(BaseModel):
    id: int
    name: str


class Post(BaseModel):
    id: int
    author_id: int
    title: str


def make(calls: list[Any]) -> Service:
    svc = Service("blog")
    authors = svc.resource("authors", Author, events=False)
    posts_by_author = {
        1: [Post(id=10, author_id=1, title="a"), Post(id=11, author_id=1, title="b")]
    }
    names = {1: "Ann", 2: "Ben"}

    @authors.get
    async def get_author(id: int) -> Author:
        return Author(id=id, name=names[id])

    @authors.relation("posts")
    async def posts_of(
        author_ids: list[int], limit: Annotated[int, Field(ge=1, le=10)] = 5
    ) -> dict[int, list[Post]]:
        """The author's posts."""
        calls.append(("posts", author_ids, limit))
        return {a: posts_by_author.get(a, [])[:limit] for a in author_ids if a in posts_by_author}

    @svc.relation(Post, "author", via="author_id", public=True)
    def author_of(ids: list[int], ctx: Context) -> list[Author | None]:
        calls.append(("author", ids, ctx.principal.subject))
        return [Author(id=i, name=names[i]) if i in names else None for i in ids]

    @svc.relation(Post, "secret", scopes=["admin"])
    async def secret_of(ids: list[int]) -> list[str]:
        return ["x" for _ in ids]

    @svc.relation(Post, "broken")
    async def broken_of(ids: list[int]) -> list[str]:
        return ["only one"]

    return svc


def dispatcher(svc: Service) -> Dispatcher:
    return Dispatcher(
        svc.spec(),
        authenticator=Authenticator(AuthConfig(), dev=False),
        limiter=RateLimiter(RateLimitConfig()),
        metrics=Metrics(),
    )


CALLER = Caller("test", peer="127.0.0.1")
ALICE = Principal("alice", frozenset())


def test_the_spec_reads_keys_arguments_and_value_type() -> None:
    spec = make([]).spec()
    posts = spec.relations["Author"]["posts"]
    assert posts.keys_param == "author_ids" and posts.by_key
    assert [p.name for p in posts.params] == ["limit"] and not posts.params[0].required
    assert posts.returns == ListOf(ModelRef("Post")) and not posts.nullable
    assert posts.summary == "The author's posts."
    author = spec.relations["Post"]["author"]
    assert author.via.name == "author_id" and author.context_param == "ctx"
    assert author.nullable and not author.by_key


async def test_one_call_per_level_with_deduplicated_keys() -> None:
    calls: list[Any] = []
    d = dispatcher(make(calls))
    posts = d.relations["Author"]["posts"]
    parents = [Author(id=1, name="Ann"), {"id": 2, "name": "Ben"}, Author(id=1, name="Ann")]
    values = await d.resolve(posts, parents, {"limit": 1}, ALICE, CALLER)
    assert calls == [("posts", [1, 2], 1)]
    assert [[p.id for p in v] for v in values] == [[10], [], [10]]
    assert values[1] is not values[0]  # a fresh empty list per parent
    author = d.relations["Post"]["author"]
    found = await d.resolve(author, [{"author_id": 2}, {"author_id": 9}], None, ANONYMOUS, CALLER)
    assert [a.name if a else None for a in found] == ["Ben", None]
    assert calls[-1] == ("author", [2, 9], "anonymous")  # sync functions run, with a context


async def test_access_arguments_and_handler_faults() -> None:
    d = dispatcher(make([]))
    rel = d.relations["Post"]
    posts = d.relations["Author"]["posts"]
    with pytest.raises(Unauthenticated):
        await d.resolve(posts, [{"id": 1}], None, ANONYMOUS, CALLER)
    with pytest.raises(PermissionDenied):
        await d.resolve(rel["secret"], [{"id": 1}], None, ALICE, CALLER)
    with pytest.raises(InvalidArgument):
        await d.resolve(posts, [{"id": 1}], {"limit": 99}, ALICE, CALLER)
    with pytest.raises(InvalidArgument):
        await d.resolve(posts, [{"id": 1}], {"nope": 1}, ALICE, CALLER)
    with pytest.raises(Internal):
        await d.resolve(rel["broken"], [{"id": 1}, {"id": 2}], None, ALICE, CALLER)
    assert await d.resolve(posts, [], None, ALICE, CALLER) == []


def test_declaration_errors_are_caught_early() -> None:
    svc = Service("bad")
    with pytest.raises(ContractError, match="already has a field"):
        svc.relation(Post, "title")
    with pytest.raises(ContractError, match="no field 'owner'"):
        svc.relation(Post, "author", via="owner")

    @svc.relation(Post, "tags")
    async def tags_of(id: int) -> list[str]:
        return []

    with pytest.raises(ContractError, match=r"list of parent keys|list\[K\]"):
        svc.spec()

    other = Service("bad2")

    @other.relation(Post, "tags")
    async def tags_of2(ids: list[int]) -> set[str]:
        return set()

    with pytest.raises(ContractError, match=r"return list\[V\]"):
        other.spec()
