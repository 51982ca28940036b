"""`polyport serve` mode: credentials required unless public, scopes, limits, 500s."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import jwt
import pytest

from polyport import Service, Settings
from polyport.testing import RunningNode, serve_in_thread

SECRET = "k" * 48


@pytest.fixture
def secure(db_path: str) -> Iterator[RunningNode]:
    from polyport.demo.shop import shop

    settings = Settings.model_validate(
        {
            "database": db_path,
            "auth": {
                "api_keys": [
                    {"key": "shopper-key", "subject": "shopper"},
                    {"key": "admin-key", "subject": "admin", "scopes": ["catalog:write"]},
                ],
                "jwt": {"hs256_secret": SECRET},
            },
            "rate_limit": {"rate": 5, "burst": 5},
        }
    )
    with serve_in_thread(shop, settings) as server:
        yield server


def test_anonymous_callers_reach_only_public_methods(secure: RunningNode) -> None:
    """401 with a Bearer challenge for protected routes; public ones answer."""
    with httpx.Client(base_url=secure.url) as c:
        denied = c.get("/v1/users/1")
        assert denied.status_code == 401
        assert denied.headers["www-authenticate"].startswith('Bearer realm="polyport"')
        assert denied.json()["code"] == "UNAUTHENTICATED"
        assert c.get("/v1/products/1").status_code == 200
        assert c.post("/v1/multiply", json={"a": 2, "b": 3}).json() == 6
        assert c.get("/v1/events", params={"channel": "orders/#"}).status_code == 401
        assert c.post("/v1/jobs/get_user", json={"id": 1}).status_code == 401


def test_api_keys_jwts_and_scopes(secure: RunningNode) -> None:
    """X-API-Key and bearer JWTs authenticate; scopes gate writes with 403."""
    with httpx.Client(base_url=secure.url) as c:
        shopper = {"x-api-key": "shopper-key"}
        assert c.get("/v1/users/1", headers=shopper).status_code == 200
        forbidden = c.post("/v1/products", headers=shopper, json={"name": "x", "price": "1.00"})
        assert forbidden.status_code == 403 and "catalog:write" in forbidden.json()["detail"]
        admin = {"authorization": "Bearer admin-key"}
        assert (
            c.post("/v1/products", headers=admin, json={"name": "x", "price": "1.00"}).status_code
            == 201
        )
        good = jwt.encode(
            {"sub": "jo", "exp": int(time.time()) + 60, "scope": "catalog:write"},
            SECRET,
            algorithm="HS256",
        )
        assert c.get("/v1/users/1", headers={"authorization": f"Bearer {good}"}).status_code == 200
        expired = jwt.encode(
            {"sub": "jo", "exp": int(time.time()) - 600}, SECRET, algorithm="HS256"
        )
        response = c.get("/v1/users/1", headers={"authorization": f"Bearer {expired}"})
        assert response.status_code == 401
        assert 'error="invalid_token"' in response.headers["www-authenticate"]
        assert "expired" in response.json()["detail"]
        garbage = c.get("/v1/users/1", headers={"authorization": "Bearer x.y.z"})
        assert garbage.status_code == 401
        basic = c.get("/v1/users/1", headers={"authorization": "Basic dXNlcjpwYXNz"})
        assert basic.status_code == 401
        events = c.get("/v1/events", params={"channel": "orders/#"}, headers=shopper)
        assert events.status_code == 200


def test_rate_limit_answers_429_with_retry_after(secure: RunningNode) -> None:
    """A principal over its budget gets 429 and when to come back; others are unaffected."""
    with httpx.Client(base_url=secure.url) as c:
        statuses = [
            c.get("/v1/users/1", headers={"x-api-key": "shopper-key"}).status_code for _ in range(8)
        ]
        assert statuses[:5] == [200] * 5 and 429 in statuses[5:]
        limited = c.get("/v1/users/1", headers={"x-api-key": "shopper-key"})
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        assert c.get("/v1/users/1", headers={"x-api-key": "admin-key"}).status_code == 200


def test_internal_errors_leak_nothing(db_path: str, caplog: pytest.LogCaptureFixture) -> None:
    """A crashing handler answers 500 with a request id and no internals."""
    svc = Service("crashy")

    @svc.method(public=True)
    async def explode() -> int:
        raise RuntimeError("secret connection string postgres://u:p@db")

    with (
        serve_in_thread(svc, Settings(database=db_path)) as server,
        httpx.Client(base_url=server.url) as c,
    ):
        response = c.post("/v1/explode", json={})
        assert response.status_code == 500
        body = response.json()
        assert body["code"] == "INTERNAL" and body["detail"] == "internal error"
        assert body["request_id"]
        assert "postgres" not in response.text and "RuntimeError" not in response.text
    logged = [r for r in caplog.records if getattr(r, "request_id", None) == body["request_id"]]
    assert logged and "postgres://" in str(logged[0].exc_info[1])  # type: ignore[index]
