"""Metadata authentication on a node that requires credentials (no development mode)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import grpc
import jwt
import pytest

from polyport.testing import RunningNode, serve_in_thread

SECRET = "s" * 40
pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def secure(usersvc: Any) -> Iterator[tuple[RunningNode, Any]]:
    settings = usersvc.settings(
        dev=False,
        auth={
            "api_keys": [{"key": "k-good", "subject": "robot"}],
            "jwt": {"hs256_secret": SECRET},
        },
    )
    with serve_in_thread(usersvc.svc, settings) as node:
        target = f"127.0.0.1:{usersvc.grpc_edge(node).port}"
        with grpc.insecure_channel(target) as channel:
            yield node, usersvc.Reflected(channel)


def code_of(call: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code()  # type: ignore[no-any-return]


def test_no_credentials_is_unauthenticated(secure: tuple[RunningNode, Any]) -> None:
    """A method that is not public needs credentials."""
    _, rpc = secure
    assert code_of(lambda: rpc("GetUser", {"id": 1})) == grpc.StatusCode.UNAUTHENTICATED
    # ... and the anonymous caller does not even learn the argument schema
    assert code_of(lambda: rpc("GetUser", {"id": 0})) == grpc.StatusCode.UNAUTHENTICATED


def test_api_key_metadata(secure: tuple[RunningNode, Any]) -> None:
    """`x-api-key` authenticates; a wrong key does not."""
    _, rpc = secure
    assert rpc("GetUser", {"id": 1}, metadata=[("x-api-key", "k-good")]).name == "Ada"
    wrong = [("x-api-key", "k-bad")]
    assert code_of(lambda: rpc("GetUser", {"id": 1}, metadata=wrong)) == (
        grpc.StatusCode.UNAUTHENTICATED
    )


def test_bearer_metadata(secure: tuple[RunningNode, Any]) -> None:
    """`authorization: Bearer <jwt>` authenticates; other schemes are refused."""
    _, rpc = secure
    token = jwt.encode({"sub": "alice", "exp": int(time.time()) + 60}, SECRET, "HS256")
    user = rpc("GetUser", {"id": 1}, metadata=[("authorization", f"Bearer {token}")])
    assert user.name == "Ada"
    for value in ("Basic YTpi", "Bearer not-a-jwt", "Bearer"):
        metadata = [("authorization", value)]
        assert code_of(lambda m=metadata: rpc("GetUser", {"id": 1}, metadata=m)) == (
            grpc.StatusCode.UNAUTHENTICATED
        ), value


def test_streams_check_credentials_too(secure: tuple[RunningNode, Any]) -> None:
    """Streaming methods are admitted like unary ones; public methods need nothing."""
    _, rpc = secure
    assert code_of(lambda: list(rpc("ListUsers", {}))) == grpc.StatusCode.UNAUTHENTICATED
    users = list(rpc("ListUsers", {}, metadata=[("x-api-key", "k-good")]))
    assert users and users[0].name == "Ada"
    assert rpc("PostNote", {"topic": "t", "text": "hello"}).value == 1
