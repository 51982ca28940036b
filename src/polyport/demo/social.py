"""The guide's social-platform shape, on the demo service: users, posts, comments.

Imported by :mod:`polyport.demo.shop` so that one service carries both examples.
The users are the shop's; posts and comments live in the same store. The
relations below make the guide's "user profile + posts + comments in one
request" a single GraphQL query (or one REST call with ``?expand=``)::

    { user(id: 1) { name posts(limit: 5) { title comments(limit: 3) { author { name } text } } } }

Each level is one SQL query for all its parents, whatever their number.
Creating a post or a comment publishes ``posts.created`` / ``comments.created``.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, Field

from polyport import NotFound
from polyport.demo.shop import Id, User, _marks, _ts, _user, shop, store, users

Title = Annotated[str, Field(min_length=1, max_length=200)]
Body = Annotated[str, Field(max_length=10_000)]
Text = Annotated[str, Field(min_length=1, max_length=2000)]
PerParent = Annotated[int, Field(ge=1, le=100)]

SCHEMA = """
CREATE TABLE IF NOT EXISTS social_posts (
    id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL, title TEXT NOT NULL,
    body TEXT NOT NULL DEFAULT '', created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS social_posts_by_user ON social_posts (user_id, id);
CREATE TABLE IF NOT EXISTS social_comments (
    id INTEGER PRIMARY KEY, post_id INTEGER NOT NULL, user_id INTEGER NOT NULL,
    text TEXT NOT NULL, created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS social_comments_by_post ON social_comments (post_id, id);
"""

#: (author's email, title, body, [(commenter's email, text), ...])
SEED_POSTS = [
    (
        "alice@example.com",
        "Getting Started with GraphQL",
        "One endpoint, and the client asks for exactly the fields it needs.",
        [("bob@example.com", "Great post!"), ("alice@example.com", "Thanks for sharing")],
    ),
    (
        "alice@example.com",
        "REST or GraphQL?",
        "REST for simple, cacheable endpoints; GraphQL for flexible nested reads.",
        [("bob@example.com", "Why not both?")],
    ),
    (
        "bob@example.com",
        "Real-time chat over WebSocket",
        "Pub/sub fans each message out to everyone in the room.",
        [("alice@example.com", "Works nicely with the shop's support chat.")],
    ),
]


class Post(BaseModel):
    """Something a user wrote."""

    id: int
    user_id: int
    title: str
    body: str = ""
    created_at: datetime


class Comment(BaseModel):
    """A user's reply to a post."""

    id: int
    post_id: int
    user_id: int
    text: str
    created_at: datetime


posts = shop.resource("posts", Post, description="Posts of the social platform")
comments = shop.resource("comments", Comment, description="Comments on posts")


@shop.on_startup
def _open() -> None:
    # Runs after the shop's own start-up hook (this module is imported at the
    # end of shop.py), so the store is open and the shop's users are seeded.
    store.db.executescript(SCHEMA)
    if store.one("SELECT 1 FROM social_posts LIMIT 1") is None:
        _seed()


def _seed() -> None:
    ids = dict(store.all("SELECT email, id FROM shop_users"))
    now = time.time()
    with store.transaction():
        for author, title, body, replies in SEED_POSTS:
            if author not in ids:
                continue
            post = store.run(
                "INSERT INTO social_posts (user_id, title, body, created) VALUES (?, ?, ?, ?)",
                ids[author],
                title,
                body,
                now,
            )
            for commenter, text in replies:
                if commenter in ids:
                    store.run(
                        "INSERT INTO social_comments (post_id, user_id, text, created) "
                        "VALUES (?, ?, ?, ?)",
                        post.lastrowid,
                        ids[commenter],
                        text,
                        now,
                    )


def _require_user(id: int) -> None:
    if store.one("SELECT 1 FROM shop_users WHERE id=?", id) is None:
        raise NotFound(f"no user {id}")


# -- posts ----------------------------------------------------------------------------------

_POST = "SELECT id, user_id, title, body, created FROM social_posts"


def _post(row: tuple[Any, ...]) -> Post:
    return Post(id=row[0], user_id=row[1], title=row[2], body=row[3], created_at=_ts(row[4]))


def _one_post(id: int) -> Post:
    row = store.one(f"{_POST} WHERE id=?", id)
    if row is None:
        raise NotFound(f"no post {id}")
    return _post(row)


@posts.get
async def get_post(id: Id) -> Post:
    """Read one post."""
    return _one_post(id)


@posts.list
async def list_posts(
    limit: int = 50, cursor: str | None = None, user_id: Id | None = None
) -> list[Post]:
    """List posts by id, optionally of one author."""
    sql = f"{_POST} WHERE id > ?"
    args: list[object] = [int(cursor) if cursor else 0]
    if user_id is not None:
        sql += " AND user_id = ?"
        args.append(user_id)
    return [_post(row) for row in store.all(sql + " ORDER BY id LIMIT ?", *args, limit)]


@posts.create
async def create_post(user_id: Id, title: Title, body: Body = "") -> Post:
    """Publish a post as a user."""
    _require_user(user_id)
    cursor = store.run(
        "INSERT INTO social_posts (user_id, title, body, created) VALUES (?, ?, ?, ?)",
        user_id,
        title,
        body,
        time.time(),
    )
    return _one_post(cursor.lastrowid or 0)


@posts.update
async def update_post(id: Id, title: Title, body: Body = "") -> Post:
    """Replace a post's title and body."""
    _one_post(id)
    store.run("UPDATE social_posts SET title=?, body=? WHERE id=?", title, body, id)
    return _one_post(id)


@posts.delete
async def delete_post(id: Id) -> None:
    """Delete a post and its comments."""
    _one_post(id)
    with store.transaction():
        store.run("DELETE FROM social_comments WHERE post_id=?", id)
        store.run("DELETE FROM social_posts WHERE id=?", id)


# -- comments -------------------------------------------------------------------------------

_COMMENT = "SELECT id, post_id, user_id, text, created FROM social_comments"


def _comment(row: tuple[Any, ...]) -> Comment:
    return Comment(id=row[0], post_id=row[1], user_id=row[2], text=row[3], created_at=_ts(row[4]))


def _one_comment(id: int) -> Comment:
    row = store.one(f"{_COMMENT} WHERE id=?", id)
    if row is None:
        raise NotFound(f"no comment {id}")
    return _comment(row)


@comments.get
async def get_comment(id: Id) -> Comment:
    """Read one comment."""
    return _one_comment(id)


@comments.list
async def list_comments(
    limit: int = 50, cursor: str | None = None, post_id: Id | None = None
) -> list[Comment]:
    """List comments by id, optionally on one post."""
    sql = f"{_COMMENT} WHERE id > ?"
    args: list[object] = [int(cursor) if cursor else 0]
    if post_id is not None:
        sql += " AND post_id = ?"
        args.append(post_id)
    return [_comment(row) for row in store.all(sql + " ORDER BY id LIMIT ?", *args, limit)]


@comments.create
async def create_comment(post_id: Id, user_id: Id, text: Text) -> Comment:
    """Comment on a post as a user."""
    _one_post(post_id)
    _require_user(user_id)
    cursor = store.run(
        "INSERT INTO social_comments (post_id, user_id, text, created) VALUES (?, ?, ?, ?)",
        post_id,
        user_id,
        text,
        time.time(),
    )
    return _one_comment(cursor.lastrowid or 0)


@comments.delete
async def delete_comment(id: Id) -> None:
    """Delete a comment."""
    _one_comment(id)
    store.run("DELETE FROM social_comments WHERE id=?", id)


# -- relations: one query per level, whatever the number of parents -------------------------


@users.relation("posts")
async def posts_of_users(user_ids: list[int], limit: PerParent = 10) -> dict[int, list[Post]]:
    """The user's posts, newest first.

    Args:
        limit: At most this many posts per user.
    """
    rows = store.all(
        "SELECT id, user_id, title, body, created FROM ("
        "  SELECT *, row_number() OVER (PARTITION BY user_id ORDER BY id DESC) AS n"
        f"  FROM social_posts WHERE user_id IN ({_marks(user_ids)})"
        ") WHERE n <= ? ORDER BY id DESC",
        *user_ids,
        limit,
    )
    by_user: dict[int, list[Post]] = {}
    for row in rows:
        by_user.setdefault(row[1], []).append(_post(row))
    return by_user


@posts.relation("comments")
async def comments_of_posts(post_ids: list[int], limit: PerParent = 10) -> dict[int, list[Comment]]:
    """The post's comments, oldest first.

    Args:
        limit: At most this many comments per post.
    """
    rows = store.all(
        "SELECT id, post_id, user_id, text, created FROM ("
        "  SELECT *, row_number() OVER (PARTITION BY post_id ORDER BY id) AS n"
        f"  FROM social_comments WHERE post_id IN ({_marks(post_ids)})"
        ") WHERE n <= ? ORDER BY id",
        *post_ids,
        limit,
    )
    by_post: dict[int, list[Comment]] = {}
    for row in rows:
        by_post.setdefault(row[1], []).append(_comment(row))
    return by_post


def _users_by_id(user_ids: list[int]) -> dict[int, User]:
    rows = store.all(
        f"SELECT id, name, email, created FROM shop_users WHERE id IN ({_marks(user_ids)})",
        *user_ids,
    )
    return {row[0]: _user(row, 0) for row in rows}


@posts.relation("author", via="user_id")
async def authors_of_posts(user_ids: list[int]) -> dict[int, User]:
    """Who wrote the post (null if the user has been deleted since)."""
    return _users_by_id(user_ids)


@comments.relation("author", via="user_id")
async def authors_of_comments(user_ids: list[int]) -> dict[int, User]:
    """Who wrote the comment (null if the user has been deleted since)."""
    return _users_by_id(user_ids)
