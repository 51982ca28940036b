"""The GraphQL bench's data and its batch functions, shared by every target.

The users are :data:`polyport.bench.users.USERS`; each has five posts and each
post three comments by other users, all in memory. The batch functions take
the keys of many parents and make one lookup per level, as a data layer with
``WHERE … IN (…)`` would: polyport calls them as relations, the Strawberry
baseline through its ``DataLoader``\\ s — the same work for the same answer.

The two queries the lab sends, and the answer both targets must give, are here
too (:data:`QUERIES`, :func:`expected`).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from polyport.bench.users import USERS, User

POSTS_PER_USER = 5
COMMENTS_PER_POST = 3


class Post(BaseModel):
    """A post by a user."""

    id: int
    user_id: int
    title: str


class Comment(BaseModel):
    """A comment on a post, by a user."""

    id: int
    post_id: int
    user_id: int
    text: str


POSTS: dict[int, list[Post]] = {
    user_id: [
        Post(id=n, user_id=user_id, title=f"Post {n}")
        for n in range((user_id - 1) * POSTS_PER_USER + 1, user_id * POSTS_PER_USER + 1)
    ]
    for user_id in USERS
}
COMMENTS: dict[int, list[Comment]] = {
    post.id: [
        Comment(
            id=n,
            post_id=post.id,
            user_id=(post.user_id + k) % len(USERS) + 1,
            text=f"Comment {n}",
        )
        for k, n in enumerate(
            range((post.id - 1) * COMMENTS_PER_POST + 1, post.id * COMMENTS_PER_POST + 1)
        )
    ]
    for posts in POSTS.values()
    for post in posts
}


async def users_by_id(user_ids: list[int]) -> dict[int, User]:
    """The users with these ids (unknown ids are left out)."""
    return {i: USERS[i] for i in user_ids if i in USERS}


async def posts_of_users(user_ids: list[int], limit: int = 10) -> dict[int, list[Post]]:
    """Each user's posts, at most ``limit`` of them."""
    return {i: POSTS.get(i, [])[:limit] for i in user_ids}


async def comments_of_posts(post_ids: list[int], limit: int = 10) -> dict[int, list[Comment]]:
    """Each post's comments, at most ``limit`` of them."""
    return {i: COMMENTS.get(i, [])[:limit] for i in post_ids}


#: The id both queries ask for.
QUERY_USER = 1

#: The queries the lab sends, by case name: the issue's simple query and the guide's
#: "profile + posts + comments" (15 comments, each with its author: four levels).
QUERIES: dict[str, str] = {
    "simple": "{ user(id: 1) { id name email } }",
    "nested": (
        "{ user(id: 1) { id name posts(limit: 5) "
        "{ id title comments(limit: 3) { id text author { id name } } } } }"
    ),
}


def expected(case: str) -> dict[str, Any]:
    """The ``data`` every target must answer for ``QUERIES[case]``."""
    user = USERS[QUERY_USER]
    if case == "simple":
        return {"user": {"id": user.id, "name": user.name, "email": user.email}}
    posts = [
        {
            "id": post.id,
            "title": post.title,
            "comments": [
                {
                    "id": c.id,
                    "text": c.text,
                    "author": {"id": c.user_id, "name": USERS[c.user_id].name},
                }
                for c in COMMENTS[post.id][:3]
            ],
        }
        for post in POSTS[user.id][:5]
    ]
    return {"user": {"id": user.id, "name": user.name, "posts": posts}}
