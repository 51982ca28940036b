"""Bad documents and limits: each refused with its own ``extensions.code``, the node unharmed."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from polyport.testing import RunningNode

RESPONSE_JSON = "application/graphql-response+json"


def post(node: RunningNode, query: str, accept: str | None = None, **extra: Any) -> httpx.Response:
    headers = {"accept": accept} if accept else {}
    with httpx.Client(base_url=node.url, timeout=10) as c:
        return c.post("/graphql", json={"query": query, **extra}, headers=headers)


def code_of(response: httpx.Response) -> str:
    body = response.json()
    assert "data" not in body or body["data"] is None
    return body["errors"][0]["extensions"]["code"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("{ user(id: 1) { id ", "GRAPHQL_PARSE_FAILED"),
        ("{ user(id: 1) { password } }", "GRAPHQL_VALIDATION_FAILED"),
        ('{ user(id: "one") { id } }', "GRAPHQL_VALIDATION_FAILED"),
        ("{ user { id } }", "GRAPHQL_VALIDATION_FAILED"),
        ("{ user(id: 1) }", "GRAPHQL_VALIDATION_FAILED"),
        ("{ user(id: 1) { orders { user { orders { user { id } } } } } }", "QUERY_TOO_DEEP"),
        ("{ users(first: 100) { nodes { orders(limit: 50) { id } } } }", "QUERY_TOO_COSTLY"),
        ("{ a: _service b: _service c: _service d: _service }", "TOO_MANY_ALIASES"),
        ("{ " + "_service " * 200 + "}", "TOO_MANY_TOKENS"),
    ],
)
def test_each_bad_document_has_its_code(strict: RunningNode, query: str, code: str) -> None:
    """application/json: 200 with the error; graphql-response+json: 400."""
    legacy = post(strict, query)
    assert legacy.status_code == 200
    assert code_of(legacy) == code
    modern = post(strict, query, accept=RESPONSE_JSON)
    assert modern.status_code == 400
    assert modern.headers["content-type"].startswith(RESPONSE_JSON)
    assert code_of(modern) == code


def test_wrong_variable_types_are_bad_user_input(strict: RunningNode) -> None:
    """Variables that do not coerce are refused before anything runs."""
    response = post(strict, "query Q($id: Long!) { user(id: $id) { id } }", variables={"id": "x"})
    assert code_of(response) == "BAD_USER_INPUT"
    missing = post(strict, "query Q($id: Long!) { user(id: $id) { id } }")
    assert code_of(missing) == "BAD_USER_INPUT"


def test_the_timeout_answers_timeout(strict: RunningNode) -> None:
    """A request past graphql.timeout is answered TIMEOUT, and the node keeps serving."""
    response = post(strict, "mutation { slow(seconds: 5) }")
    assert response.status_code == 200
    body = response.json()
    assert body["data"] is None
    assert body["errors"][0]["extensions"]["code"] == "TIMEOUT"
    assert post(strict, "{ _service }").json() == {"data": {"_service": "gqlshop"}}


def test_not_a_graphql_request(strict: RunningNode) -> None:
    """Bodies that are not a GraphQL request are 400 whatever the media type."""
    with httpx.Client(base_url=strict.url, timeout=10) as c:
        broken = c.post("/graphql", content=b"{nope", headers={"content-type": "application/json"})
        assert broken.status_code == 400
        assert broken.json()["errors"][0]["extensions"]["code"] == "BAD_REQUEST"
        assert c.post("/graphql", json={"variables": {}}).status_code == 400
        assert c.post("/graphql", json=[1, 2]).status_code == 400
        text = c.post("/graphql", content=b"{ _service }", headers={"content-type": "text/plain"})
        assert text.status_code == 415
        refused = c.post("/graphql", json={"query": "{ _service }"}, headers={"accept": "text/csv"})
        assert refused.status_code == 406


def test_malformed_request_fields(strict: RunningNode) -> None:
    """operationName, variables and extensions of the wrong shape are BAD_REQUEST, even for a
    document already planned."""
    assert post(strict, "{ _service }").status_code == 200  # planned and cached
    for extra in (
        {"operationName": ["x"]},
        {"variables": "id=1"},
        {"extensions": {"persistedQuery": {"version": 1}}},
        {"extensions": {"persistedQuery": {"version": 1, "sha256Hash": "00"}}},
    ):
        response = post(strict, "{ _service }", **extra)
        assert response.status_code in (200, 400)
        assert code_of(response) in ("BAD_REQUEST", "PERSISTED_QUERY_HASH_MISMATCH"), extra
