"""The handlers every bench target serves: a user by id, and a page of users, from memory.

They are deliberately tiny, so that what a bench measures is the stack around
them — server, routing, validation, serialization — and not the handler.
"""

from __future__ import annotations

from pydantic import BaseModel

from polyport.core.errors import NotFound

#: The id the load generators ask for; any id in ``USERS`` would do.
BENCH_ID = 42
#: The path every REST target serves, and the request the generators send.
BENCH_PATH = f"/v1/users/{BENCH_ID}"
#: How many users the list calls ask for: the "list of 50 users" of the RPC bench.
LIST_LIMIT = 50


class User(BaseModel):
    """A user, as every target returns it."""

    id: int
    name: str
    email: str


USERS: dict[int, User] = {
    i: User(id=i, name=f"User {i}", email=f"user{i}@example.com") for i in range(1, 101)
}


async def get_user(id: int) -> User:
    """Read one user; an unknown id is :class:`~polyport.core.errors.NotFound`."""
    try:
        return USERS[id]
    except KeyError:
        raise NotFound(f"no user {id}") from None


async def list_users(limit: int = LIST_LIMIT, cursor: str | None = None) -> list[User]:
    """Up to ``limit`` users by id, after the user whose id is ``cursor``."""
    after = int(cursor) if cursor else 0
    return [USERS[i] for i in range(after + 1, min(after + limit, len(USERS)) + 1)]
