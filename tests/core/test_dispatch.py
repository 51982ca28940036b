"""The dispatch pipeline: auth, scopes, limits, validation, errors, context, streams."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import BaseModel

from polyport import (
    Context,
    Credentials,
    DeadlineExceeded,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    RateLimited,
    Service,
    Unauthenticated,
)
from polyport.core.auth import Authenticator
from polyport.core.config import AuthConfig, RateLimitConfig
from polyport.core.dispatch import Caller, Dispatcher, PageResult, decode_cursor
from polyport.core.metrics import Metrics
from polyport.core.ratelimit import RateLimiter

SECRET = "s" * 40


class User(BaseModel):
    id: int
    name: str


def make_service() -> tuple[Service, list[Any]]:
    seen: list[Any] = []
    svc = Service("svc")
    users = svc.resource("users", User, events=False)
    data = {i: User(id=i, name=f"u{i}") for i in range(1, 8)}

    @users.get
    async def get_user(id: int) -> User:
        if id not in data:
            raise NotFound(f"no user {id}")
        return data[id]

    @users.list
    async def list_users(limit: int = 3, cursor: str | None = None) -> list[User]:
        after = int(cursor) if cursor else 0
        return [u for i, u in sorted(data.items()) if i > after][:limit]

    @svc.method(public=True)
    async def echo(text: str) -> str:
        return text

    @svc.method(scopes=["admin"])
    async def secret() -> str:
        return "42"

    @svc.method
    async def whoami(ctx: Context) -> str:
        seen.append(ctx)
        return ctx.principal.subject

    @svc.method
    async def boom() -> int:
        raise RuntimeError("database password is hunter2")

    @svc.method
    async def wrong_type() -> int:
        return "not an int"  # type: ignore[return-value]

    @svc.method(timeout=0.05)
    async def slow() -> int:
        await asyncio.sleep(5)
        return 1

    def blocking(n: int) -> int:
        time.sleep(0.01)
        return n * 2

    svc.method(blocking)

    @svc.stream
    async def count(n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i

    @svc.method
    async def total(values: AsyncIterator[int]) -> int:
        return sum([v async for v in values])

    return svc, seen


def make_dispatcher(
    *, dev: bool = False, rate: float = 1000, burst: int = 1000, auth: AuthConfig | None = None
) -> tuple[Dispatcher, list[Any]]:
    svc, seen = make_service()
    auth = auth or AuthConfig.model_validate(
        {
            "api_keys": [
                {"key": "user-key", "subject": "carol", "scopes": []},
                {
                    "key_sha256": hashlib.sha256(b"admin-key").hexdigest(),
                    "subject": "root",
                    "scopes": ["admin"],
                },
            ],
            "jwt": {"hs256_secret": SECRET, "audience": "polyport-tests"},
        }
    )
    dispatcher = Dispatcher(
        svc.spec(),
        authenticator=Authenticator(auth, dev=dev),
        limiter=RateLimiter(RateLimitConfig(rate=rate, burst=burst)),
        metrics=Metrics(),
    )
    return dispatcher, seen


def as_key(key: str) -> Caller:
    return Caller("test", Credentials(api_key=key), peer="127.0.0.1")


def as_bearer(token: str) -> Caller:
    return Caller("test", Credentials(bearer=token), peer="127.0.0.1")


ANON = Caller("test", peer="127.0.0.1")


def token(**claims: Any) -> str:
    base = {"sub": "dave", "aud": "polyport-tests", "exp": int(time.time()) + 60, "scope": "admin"}
    base.update(claims)
    return jwt.encode({k: v for k, v in base.items() if v is not None}, SECRET, algorithm="HS256")


async def call(d: Dispatcher, name: str, args: Any = None, caller: Caller = ANON) -> Any:
    return await d.call(d.binding(name), args, caller)


async def test_secure_by_default_and_public_methods() -> None:
    """Without dev mode, anonymous callers reach only public methods."""
    d, _ = make_dispatcher()
    assert await call(d, "echo", {"text": "hi"}) == "hi"
    with pytest.raises(Unauthenticated):
        await call(d, "get_user", {"id": 1})
    assert (await call(d, "get_user", {"id": 1}, as_key("user-key"))).name == "u1"


async def test_development_mode_lets_anonymous_do_everything() -> None:
    """In dev mode an anonymous caller passes every check, scopes included."""
    d, _ = make_dispatcher(dev=True)
    assert await call(d, "secret") == "42"
    assert await call(d, "whoami") == "anonymous"


async def test_scopes_are_enforced_per_method() -> None:
    """A known principal without the method's scope gets PermissionDenied."""
    d, _ = make_dispatcher()
    with pytest.raises(PermissionDenied, match="admin"):
        await call(d, "secret", caller=as_key("user-key"))
    assert await call(d, "secret", caller=as_key("admin-key")) == "42"


async def test_api_keys_and_bearer_api_keys() -> None:
    """API keys work in X-API-Key and as bearer tokens; unknown keys are refused."""
    d, _ = make_dispatcher()
    assert await call(d, "whoami", caller=as_key("user-key")) == "carol"
    assert await call(d, "whoami", caller=as_bearer("user-key")) == "carol"
    with pytest.raises(Unauthenticated, match="unknown API key") as exc:
        await call(d, "whoami", caller=as_key("nope"))
    assert exc.value.invalid_token


async def test_jwt_hs256() -> None:
    """Valid HS256 tokens authenticate with their scopes; bad ones say why."""
    d, _ = make_dispatcher()
    assert await call(d, "secret", caller=as_bearer(token())) == "42"
    with pytest.raises(Unauthenticated, match="expired"):
        await call(d, "whoami", caller=as_bearer(token(exp=int(time.time()) - 3600)))
    with pytest.raises(Unauthenticated, match="audience"):
        await call(d, "whoami", caller=as_bearer(token(aud="someone-else")))
    with pytest.raises(Unauthenticated, match="exp"):
        await call(d, "whoami", caller=as_bearer(token(exp=None)))
    forged = jwt.encode(
        {"sub": "x", "aud": "polyport-tests", "exp": int(time.time()) + 60},
        "w" * 40,
        algorithm="HS256",
    )
    with pytest.raises(Unauthenticated, match="signature"):
        await call(d, "whoami", caller=as_bearer(forged))
    unsigned = jwt.encode({"sub": "x", "exp": int(time.time()) + 60}, None, algorithm="none")
    with pytest.raises(Unauthenticated, match="algorithm"):
        await call(d, "whoami", caller=as_bearer(unsigned))
    with pytest.raises(Unauthenticated, match="malformed"):
        await call(d, "whoami", caller=as_bearer("a.b.c"))


async def test_jwt_rs256() -> None:
    """RS256 tokens verify against the configured public key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    auth = AuthConfig.model_validate({"jwt": {"rs256_public_key": public, "scope_claim": "scp"}})
    d, _ = make_dispatcher(auth=auth)
    good = jwt.encode(
        {"sub": "erin", "exp": int(time.time()) + 60, "scp": ["admin"]}, key, algorithm="RS256"
    )
    assert await call(d, "secret", caller=as_bearer(good)) == "42"
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    bad = jwt.encode({"sub": "erin", "exp": int(time.time()) + 60}, other, algorithm="RS256")
    with pytest.raises(Unauthenticated, match="signature"):
        await call(d, "whoami", caller=as_bearer(bad))
    # An HS256 token signed with the public key text must not pass (algorithm confusion).
    with pytest.raises(Unauthenticated):
        await call(d, "whoami", caller=as_bearer(token()))


async def test_rate_limit_per_principal() -> None:
    """Each principal has its own bucket; an empty one answers RateLimited with a delay."""
    d, _ = make_dispatcher(rate=1, burst=2)
    await call(d, "echo", {"text": "1"})
    await call(d, "echo", {"text": "2"})
    with pytest.raises(RateLimited) as exc:
        await call(d, "echo", {"text": "3"})
    assert exc.value.retry_after is not None and exc.value.retry_after > 0
    assert await call(d, "whoami", caller=as_key("user-key")) == "carol"


async def test_authentication_comes_before_validation() -> None:
    """An anonymous caller learns nothing about arguments: 401, not 422."""
    d, _ = make_dispatcher()
    with pytest.raises(Unauthenticated):
        await call(d, "get_user", {"id": "not a number", "extra": 1})


async def test_validation_errors_name_each_field() -> None:
    """Wrong types, missing and unexpected fields all come back, per field."""
    d, _ = make_dispatcher(dev=True)
    with pytest.raises(InvalidArgument) as exc:
        await call(d, "echo", b'{"text": 5, "other": 1}')
    fields = {detail["field"] for detail in exc.value.details or []}
    assert fields == {"text", "other"}
    with pytest.raises(InvalidArgument) as missing:
        await call(d, "echo", b"{}")
    assert missing.value.details and missing.value.details[0]["type"] == "missing"
    with pytest.raises(InvalidArgument) as broken:
        await call(d, "echo", b'{"text": ')
    assert broken.value.unparseable
    # Text (a URL's query or path) is read as the values it spells; decoded wire values
    # are held to their types: a string is no int.
    text = d.binding("get_user").from_text({"id": "3"})
    assert await call(d, "get_user", text) == User(id=3, name="u3")
    with pytest.raises(InvalidArgument, match="id: Input should be a valid integer"):
        await call(d, "get_user", {"id": "3"})


async def test_internal_errors_hide_their_message() -> None:
    """A crashing handler becomes Internal; its message never reaches the caller."""
    d, _ = make_dispatcher(dev=True)
    with pytest.raises(Internal) as exc:
        await call(d, "boom")
    assert "hunter2" not in str(exc.value)
    result = await call(d, "wrong_type")
    with pytest.raises(Internal):
        d.binding("wrong_type").dump_json(result)
    assert d.metrics.calls("test", "boom", "INTERNAL") == 1


async def test_context_carries_the_call() -> None:
    """A handler asking for Context gets principal, ids, deadline and edge."""
    d, seen = make_dispatcher()
    caller = as_key("user-key")
    caller.request_id = "req-1"
    caller.trace_id = "0af7651916cd43dd8448eb211c80319c"
    caller.timeout = 10
    await call(d, "whoami", caller=caller)
    ctx = seen[0]
    assert ctx.principal.subject == "carol"
    assert ctx.request_id == "req-1"
    assert ctx.trace_id == "0af7651916cd43dd8448eb211c80319c"
    assert ctx.edge == "test"
    assert 0 < ctx.remaining() <= 10


async def test_deadlines_end_slow_handlers() -> None:
    """A method's own timeout (or the caller's) raises DeadlineExceeded."""
    d, _ = make_dispatcher(dev=True)
    with pytest.raises(DeadlineExceeded):
        await call(d, "slow")


async def test_plain_functions_run_in_a_thread() -> None:
    """A synchronous handler works and does not block the loop."""
    d, _ = make_dispatcher(dev=True)
    assert await call(d, "blocking", {"n": 21}) == 42


async def test_list_pagination_with_opaque_cursors() -> None:
    """Full pages get a next cursor; the handler sees its own raw cursor back."""
    d, _ = make_dispatcher(dev=True)
    page: PageResult = await call(d, "list_users", {"limit": 3})
    assert [u.id for u in page.items] == [1, 2, 3]
    assert page.next_cursor is not None and decode_cursor(page.next_cursor) == "3"
    page = await call(d, "list_users", {"limit": 3, "cursor": page.next_cursor})
    assert [u.id for u in page.items] == [4, 5, 6]
    page = await call(d, "list_users", {"limit": 3, "cursor": page.next_cursor})
    assert [u.id for u in page.items] == [7] and page.next_cursor is None
    with pytest.raises(InvalidArgument, match="cursor"):
        await call(d, "list_users", {"cursor": "garbage!"})
    with pytest.raises(InvalidArgument):
        await call(d, "list_users", {"limit": 100_000})


async def test_streams() -> None:
    """Server streams yield validated items; client streams validate what comes in."""
    d, _ = make_dispatcher(dev=True)
    items = await d.open_stream(d.binding("count"), {"n": 3}, ANON)
    assert [i async for i in items] == [0, 1, 2]

    async def inbound() -> AsyncIterator[Any]:
        for value in (1, "2", 3):
            yield value

    result = await d.open_stream(d.binding("total"), None, ANON, inbound())
    assert [r async for r in result] == [6]

    async def bad() -> AsyncIterator[Any]:
        yield "x"

    result = await d.open_stream(d.binding("total"), None, ANON, bad())
    with pytest.raises(InvalidArgument):
        [r async for r in result]
    with pytest.raises(InvalidArgument):
        await d.open_stream(d.binding("echo"), {"text": "a"}, ANON)
