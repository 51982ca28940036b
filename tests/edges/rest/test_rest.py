"""The REST edge over a real HTTP server, with httpx."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from polyport.testing import RunningNode


@pytest.fixture
def client(demo: RunningNode) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=demo.url, timeout=10) as c:
        yield c


def problem(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, object] = response.json()
    assert body["status"] == status
    assert str(body["type"]).startswith("urn:polyport:problem:")
    assert body["detail"]
    return body


def test_crud_with_the_status_codes_of_the_guide(client: httpx.Client) -> None:
    """GET 200, POST 201 + Location, PUT 200, DELETE 204, then 404."""
    assert client.get("/v1/users/1").json()["name"] == "Alice"
    created = client.post("/v1/users", json={"name": "Charlie", "email": "charlie@example.com"})
    assert created.status_code == 201
    user = created.json()
    assert created.headers["location"] == f"/v1/users/{user['id']}"
    assert client.get(created.headers["location"]).json() == user
    updated = client.put(
        f"/v1/users/{user['id']}", json={"name": "Charles", "email": "charlie@example.com"}
    )
    assert updated.status_code == 200 and updated.json()["name"] == "Charles"
    deleted = client.delete(f"/v1/users/{user['id']}")
    assert deleted.status_code == 204 and deleted.content == b""
    problem(client.get(f"/v1/users/{user['id']}"), 404)


def test_plain_methods_are_posts(client: httpx.Client) -> None:
    """POST /v1/{name} with named arguments answers the bare result."""
    response = client.post("/v1/multiply", json={"a": 5, "b": 7})
    assert response.status_code == 200 and response.json() == 35


def test_list_pagination_with_cursor_and_link(client: httpx.Client) -> None:
    """A full page carries next_cursor and a Link; following it walks every item once."""
    for i in range(5):
        client.post("/v1/users", json={"name": f"U{i}", "email": f"u{i}@example.com"})
    seen: list[int] = []
    url: str | None = "/v1/users?limit=2"
    pages = 0
    while url:
        response = client.get(url)
        assert response.status_code == 200
        body = response.json()
        seen.extend(u["id"] for u in body["items"])
        pages += 1
        if body["next_cursor"]:
            assert 'rel="next"' in response.headers["link"]
            url = f"/v1/users?limit=2&cursor={body['next_cursor']}"
        else:
            url = None
    assert seen == sorted(set(seen)) and len(seen) == 7 and pages == 4
    problem(client.get("/v1/users?cursor=not-a-cursor"), 422)
    problem(client.get("/v1/users?limit=0"), 422)
    problem(client.get("/v1/users?limit=1000000"), 422)


def test_etag_and_conditional_get(client: httpx.Client) -> None:
    """GETs carry ETag and Cache-Control; If-None-Match answers 304 until the item changes."""
    first = client.get("/v1/users/1")
    etag = first.headers["etag"]
    assert first.headers["cache-control"] == "private, no-cache"
    again = client.get("/v1/users/1", headers={"if-none-match": etag})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == etag
    assert client.get("/v1/users/1", headers={"if-none-match": f'W/{etag}, "x"'}).status_code == 304
    client.put("/v1/users/1", json={"name": "Alice B", "email": "alice@example.com"})
    changed = client.get("/v1/users/1", headers={"if-none-match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag
    public = client.get("/v1/products/1")
    assert public.headers["cache-control"] == "public, no-cache"
    listing = client.get(
        "/v1/products", headers={"if-none-match": client.get("/v1/products").headers["etag"]}
    )
    assert listing.status_code == 304


def test_head_and_method_not_allowed(client: httpx.Client) -> None:
    """HEAD answers GET's headers without a body; a wrong verb gets 405 with Allow."""
    head = client.head("/v1/users/1")
    assert head.status_code == 200 and head.content == b"" and head.headers["etag"]
    body = problem(client.patch("/v1/users/1", json={}), 405)
    assert body["code"] == "METHOD_NOT_ALLOWED"
    assert client.patch("/v1/users/1", json={}).headers["allow"] == "DELETE, GET, HEAD, PUT"


def test_bad_input_gets_clear_problems_and_changes_nothing(client: httpx.Client) -> None:
    """Malformed JSON, wrong types, missing fields, unknown routes, oversize, wrong media."""
    before = client.get("/v1/users").json()
    broken = problem(
        client.post(
            "/v1/users", content=b'{"name": ', headers={"content-type": "application/json"}
        ),
        400,
    )
    assert broken["code"] == "INVALID_ARGUMENT"
    wrong = problem(client.post("/v1/users", json={"name": 5, "email": []}), 422)
    assert {e["field"] for e in wrong["errors"]} == {"name", "email"}  # type: ignore[union-attr]
    missing = problem(client.post("/v1/users", json={}), 422)
    assert {e["type"] for e in missing["errors"]} == {"missing"}  # type: ignore[union-attr]
    problem(client.post("/v1/users", json=[1, 2]), 422)
    problem(client.post("/v1/users", json={"name": "x", "email": "x@y", "admin": True}), 422)
    problem(
        client.post("/v1/users", content=b"name=x", headers={"content-type": "text/plain"}), 415
    )
    problem(client.get("/v1/nowhere"), 404)
    problem(client.get("/v1/users/abc"), 422)
    problem(client.get("/v1/users/99999999999999999999999999"), 422)
    big = b'{"name": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    problem(
        client.post("/v1/users", content=big, headers={"content-type": "application/json"}), 413
    )
    problem(client.put("/v1/users/1", json={"id": 2, "name": "A", "email": "a@b"}), 422)
    conflict = problem(
        client.post("/v1/users", json={"name": "A", "email": "alice@example.com"}), 409
    )
    assert conflict["code"] == "CONFLICT"
    assert client.get("/v1/users").json() == before


def test_a_chunked_oversized_body_is_refused(demo: RunningNode) -> None:
    """The size limit holds without Content-Length too (chunked uploads)."""

    def chunks() -> Iterator[bytes]:
        yield b'{"name": "'
        for _ in range(40):
            yield b"x" * 65536
        yield b'"}'

    with httpx.Client(base_url=demo.url) as c:
        response = c.post(
            "/v1/users", content=chunks(), headers={"content-type": "application/json"}
        )
    assert response.status_code == 413


def test_request_ids_and_internal_errors(client: httpx.Client) -> None:
    """Unexpected failures say 500 with a request id, never the exception text."""
    response = client.post("/v1/sales_report", json={"delay": "x"})
    problem(response, 422)
    assert client.get("/healthz").json() == {"status": "ok"}


def test_metrics_are_prometheus_text(client: httpx.Client) -> None:
    """/metrics parses with the Prometheus client's own parser and counts calls per edge."""
    from prometheus_client.parser import text_string_to_metric_families

    client.get("/v1/users/1")
    client.get("/v1/users/999")
    text = client.get("/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    calls = families["polyport_calls"].samples
    assert any(
        s.labels == {"edge": "rest", "method": "get_user", "code": "OK"} and s.value >= 1
        for s in calls
    )
    assert any(s.labels.get("code") == "NOT_FOUND" for s in calls)
    assert "polyport_call_seconds" in families


def test_cors_is_off_unless_configured(client: httpx.Client) -> None:
    """No CORS headers by default; browsers on other origins are not let in silently."""
    response = client.get("/v1/users/1", headers={"origin": "http://evil.example"})
    assert "access-control-allow-origin" not in response.headers


def test_timeout_header(client: httpx.Client) -> None:
    """X-Request-Timeout bounds a call: the handler's deadline, then 504."""
    response = client.post(
        "/v1/sales_report", json={"delay": 2}, headers={"x-request-timeout": "0.2"}
    )
    assert problem(response, 504)["code"] == "DEADLINE_EXCEEDED"
    problem(
        client.post("/v1/multiply", json={"a": 1, "b": 1}, headers={"x-request-timeout": "soon"}),
        422,
    )
