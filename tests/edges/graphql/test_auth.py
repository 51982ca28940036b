"""Secure mode: the same pipeline as every edge — credentials, scopes per method and relation."""

from __future__ import annotations

from typing import Any

import httpx

from polyport.testing import RunningNode

ADMIN_KEY = "admin-key-0123456789"
USER_KEY = "user-key-0123456789"


def post(node: RunningNode, query: str, key: str | None = None, **headers: str) -> httpx.Response:
    if key is not None:
        headers["x-api-key"] = key
    with httpx.Client(base_url=node.url, timeout=10) as c:
        return c.post("/graphql", json={"query": query}, headers=headers)


def codes(body: dict[str, Any]) -> list[str]:
    return [e["extensions"]["code"] for e in body.get("errors", [])]


def test_public_fields_need_no_credentials(secure: RunningNode) -> None:
    assert post(secure, "{ user(id: 1) { name } }").json() == {"data": {"user": {"name": "user 1"}}}


def test_protected_methods_answer_unauthenticated_then_forbidden(secure: RunningNode) -> None:
    """Anonymous: UNAUTHENTICATED; signed in without the scope: FORBIDDEN; with it: the value."""
    anonymous = post(secure, "mutation { wipe }").json()
    assert anonymous["data"] == {"wipe": None} and codes(anonymous) == ["UNAUTHENTICATED"]
    user = post(secure, "mutation { wipe }", USER_KEY).json()
    assert user["data"] == {"wipe": None} and codes(user) == ["FORBIDDEN"]
    assert post(secure, "mutation { wipe }", ADMIN_KEY).json() == {"data": {"wipe": 0}}


def test_relations_are_authorized_per_field(secure: RunningNode) -> None:
    """A relation needing a scope is null with FORBIDDEN beside the fields that are allowed."""
    query = "{ user(id: 2) { name secret } }"
    denied = post(secure, query, USER_KEY).json()
    assert denied["data"] == {"user": {"name": "user 2", "secret": None}}
    assert codes(denied) == ["FORBIDDEN"]
    assert denied["errors"][0]["path"] == ["user", "secret"]
    allowed = post(secure, query, ADMIN_KEY).json()
    assert allowed == {"data": {"user": {"name": "user 2", "secret": "secret 2"}}}


def test_bad_credentials_are_401(secure: RunningNode) -> None:
    """Unknown keys and malformed Authorization headers: 401 with a Bearer challenge."""
    unknown = post(secure, "{ _service }", "not-a-key")
    assert unknown.status_code == 401
    assert codes(unknown.json()) == ["UNAUTHENTICATED"]
    assert unknown.headers["www-authenticate"].startswith("Bearer")
    malformed = post(secure, "{ _service }", authorization="Basic abc")
    assert malformed.status_code == 401


def test_errors_inside_lists_have_full_paths(secure: RunningNode) -> None:
    """One error per parent a forbidden relation was asked under, each with its list index."""
    denied = post(secure, "{ users(first: 2) { nodes { id secret } } }", USER_KEY).json()
    assert denied["data"] == {
        "users": {"nodes": [{"id": 1, "secret": None}, {"id": 2, "secret": None}]}
    }
    assert [e["path"] for e in denied["errors"]] == [
        ["users", "nodes", 0, "secret"],
        ["users", "nodes", 1, "secret"],
    ]
