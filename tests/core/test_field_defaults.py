"""``x: T = Field(…)`` — FastAPI's idiom — means exactly ``x: Annotated[T, Field(…)]``.

Before, the FieldInfo became the default: its constraints were not applied,
and a missing argument reached the handler as the FieldInfo (a 500, or its
repr leaking into the answer).
"""

from __future__ import annotations

from typing import Annotated, Any

import httpx
import pytest
from pydantic import Field

from polyport import ContractError, InvalidArgument, Service, Settings
from polyport.core.auth import Authenticator
from polyport.core.config import AuthConfig, RateLimitConfig
from polyport.core.dispatch import Caller, Dispatcher
from polyport.core.metrics import Metrics
from polyport.core.ratelimit import RateLimiter
from polyport.core.types import MISSING
from polyport.testing import serve_in_thread

svc = Service("fields")


@svc.method(public=True)
async def post(
    title: str = Field(min_length=1, max_length=20, description="The title."),
    votes: int = Field(5, ge=0, le=10),
    tags: list[str] = Field(default_factory=list),  # noqa: B008 (the idiom under test)
) -> dict[str, Any]:
    """Echo what arrived."""
    tags.append("seen")  # a fresh list every call, as a model's default_factory gives
    return {"title": title, "votes": votes, "tags": tags}


@svc.method(public=True)
async def annotated(
    title: Annotated[str, Field(min_length=1, max_length=20, description="The title.")],
    votes: Annotated[int, Field(ge=0, le=10)] = 5,
) -> dict[str, Any]:
    return {"title": title, "votes": votes}


def dispatcher() -> Dispatcher:
    return Dispatcher(
        svc.spec(),
        authenticator=Authenticator(AuthConfig(), dev=True),
        limiter=RateLimiter(RateLimitConfig()),
        metrics=Metrics(),
    )


async def call(d: Dispatcher, name: str, args: Any) -> Any:
    return await d.call(d.binding(name), args, Caller("test"))


async def test_constraints_and_defaults_apply() -> None:
    """The Field's bounds hold, its default fills a missing argument, its factory a fresh one."""
    d = dispatcher()
    assert await call(d, "post", {"title": "hi"}) == {"title": "hi", "votes": 5, "tags": ["seen"]}
    assert await call(d, "post", b'{"title": "hi"}') == {
        "title": "hi",
        "votes": 5,
        "tags": ["seen"],
    }
    for args in ({"title": ""}, {"title": "x" * 21}, {"title": "hi", "votes": 11}):
        with pytest.raises(InvalidArgument):
            await call(d, "post", args)


async def test_a_field_without_default_is_required() -> None:
    """``Field(min_length=1)`` with no default: a missing title is INVALID_ARGUMENT."""
    d = dispatcher()
    with pytest.raises(InvalidArgument) as missing:
        await call(d, "post", {})
    assert missing.value.details and missing.value.details[0]["field"] == "title"
    assert "FieldInfo" not in missing.value.message


def test_both_spellings_describe_the_same_parameters() -> None:
    """The type graph, and so every document, sees the two spellings alike."""
    spec = svc.spec()
    post, annotated = spec.methods["post"], spec.methods["annotated"]
    for name in ("title", "votes"):
        assert post.param(name).type == annotated.param(name).type
        assert post.param(name).required == annotated.param(name).required
        assert post.param(name).default == annotated.param(name).default
    assert post.param("title").required and post.param("title").description == "The title."
    assert post.param("votes").default == 5
    tags = post.param("tags")
    assert not tags.required and tags.default is MISSING


def test_an_aliased_parameter_is_refused_at_start() -> None:
    """A parameter's name is its wire name; an alias would make two names for one value."""
    bad = Service("aliased")

    @bad.method
    async def find(q: str = Field(alias="query")) -> str:
        return q

    with pytest.raises(ContractError, match="parameter 'q' has an alias"):
        bad.spec()


def test_over_rest(tmp_path: Any) -> None:
    """Over HTTP: a missing title is a 422 naming it, the document carries the constraints."""
    settings = Settings(dev=True, database=str(tmp_path / "db.sqlite3"), grpc={"port": 0})
    with serve_in_thread(svc, settings, edges=["rest"]) as node:
        missing = httpx.post(f"{node.url}/v1/post", json={})
        assert missing.status_code == 422
        assert missing.json()["errors"][0]["field"] == "title"
        assert httpx.post(f"{node.url}/v1/post", json={"title": "a"}).json()["votes"] == 5
        document = httpx.get(f"{node.url}/openapi.json").json()
        body = document["paths"]["/v1/post"]["post"]["requestBody"]["content"]
        schema = body["application/json"]["schema"]
        assert schema["required"] == ["title"]
        assert schema["properties"]["title"]["minLength"] == 1
        assert schema["properties"]["votes"] == {
            "type": "integer",
            "format": "int64",
            "minimum": 0,
            "maximum": 10,
            "default": 5,
        }
