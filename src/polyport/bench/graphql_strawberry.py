"""The GraphQL bench's baseline: a plain Strawberry app over the same data.

Written as Strawberry's documentation writes it — ``@strawberry.type``
classes, resolvers, one ``DataLoader`` per relation created per request (so a
nested query makes one batch call per level, as polyport's relations do) —
and served by Strawberry's own ASGI app, ``strawberry.asgi.GraphQL``. The
GraphiQL page it offers for browsers is left on: it costs nothing on POST.
Plain, it parses and validates every request; with ``cached=True`` it uses
Strawberry's parser and validation caches, the first thing to switch on for speed.

Imported only by the bench target process: it needs the ``bench`` extra.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, TypeVar

import strawberry
from strawberry.asgi import GraphQL
from strawberry.dataloader import DataLoader
from strawberry.extensions import ParserCache, SchemaExtension, ValidationCache

from polyport.bench import graphql_data
from polyport.bench.users import get_user

V = TypeVar("V")


@strawberry.type(name="User")
class UserType:
    id: int
    name: str
    email: str

    @strawberry.field
    async def posts(self, info: strawberry.Info, limit: int = 10) -> list[PostType]:
        posts = await info.context["posts"].load((self.id, limit))
        return [PostType(id=p.id, user_id=p.user_id, title=p.title) for p in posts]


@strawberry.type(name="Post")
class PostType:
    id: int
    user_id: int
    title: str

    @strawberry.field
    async def comments(self, info: strawberry.Info, limit: int = 10) -> list[CommentType]:
        comments = await info.context["comments"].load((self.id, limit))
        return [
            CommentType(id=c.id, post_id=c.post_id, user_id=c.user_id, text=c.text)
            for c in comments
        ]


@strawberry.type(name="Comment")
class CommentType:
    id: int
    post_id: int
    user_id: int
    text: str

    @strawberry.field
    async def author(self, info: strawberry.Info) -> UserType | None:
        user = await info.context["users"].load(self.user_id)
        return None if user is None else UserType(id=user.id, name=user.name, email=user.email)


@strawberry.type
class Query:
    @strawberry.field
    async def user(self, id: int) -> UserType:
        found = await get_user(id)
        return UserType(id=found.id, name=found.name, email=found.email)


def _per_limit(
    batch: Callable[[list[int], int], Awaitable[dict[int, list[V]]]],
) -> Callable[[list[tuple[int, int]]], Awaitable[Sequence[list[V]]]]:
    """A loader function for ``(parent key, limit)`` keys: one batch call per distinct limit."""

    async def load(keys: list[tuple[int, int]]) -> Sequence[list[V]]:
        by_limit: defaultdict[int, list[int]] = defaultdict(list)
        for parent, limit in keys:
            by_limit[limit].append(parent)
        found: dict[tuple[int, int], list[V]] = {}
        for limit, parents in by_limit.items():
            values = await batch(parents, limit)
            for parent in parents:
                found[parent, limit] = values.get(parent, [])
        return [found[key] for key in keys]

    return load


async def _load_users(keys: list[int]) -> Sequence[Any]:
    users = await graphql_data.users_by_id(keys)
    return [users.get(key) for key in keys]


class BenchGraphQL(GraphQL[dict[str, Any], None]):
    """Strawberry's ASGI app with fresh DataLoaders for every request."""

    async def get_context(self, request: Any, response: Any) -> dict[str, Any]:
        return {
            "users": DataLoader(load_fn=_load_users),
            "posts": DataLoader(load_fn=_per_limit(graphql_data.posts_of_users)),
            "comments": DataLoader(load_fn=_per_limit(graphql_data.comments_of_posts)),
        }


def strawberry_app(*, cached: bool = False) -> BenchGraphQL:
    """The ASGI app: ``POST /graphql`` (and GET, as Strawberry allows by default).

    ``cached`` adds Strawberry's own ``ParserCache`` and ``ValidationCache``
    extensions, which skip parsing and validating a document seen before — what
    polyport's document cache does — so the lab can show both baselines.
    """
    # Factories, as Strawberry asks: the caches themselves live at module level.
    extensions: list[Callable[[], SchemaExtension]] = (
        [partial(ParserCache, maxsize=1000), partial(ValidationCache, maxsize=1000)]
        if cached
        else []
    )
    return BenchGraphQL(strawberry.Schema(query=Query, extensions=extensions))
