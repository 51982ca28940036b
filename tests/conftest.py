"""Shared fixtures: backends, a running demo node, service reachability."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from polyport.settings import Settings
from polyport.testing import RunningNode, serve_in_thread

REQUIRE_SERVICES = os.environ.get("POLYPORT_REQUIRE_SERVICES") == "1"


def require_service(name: str, port: int, host: str = "127.0.0.1") -> None:
    """Skip (or, in CI, fail) when an external service is not reachable."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return
    except OSError as exc:
        message = f"{name} is not reachable on {host}:{port}: {exc}"
    if REQUIRE_SERVICES:
        pytest.fail(message + " (POLYPORT_REQUIRE_SERVICES=1)")
    pytest.skip(message)


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "polyport.sqlite3")


@pytest.fixture
def demo(db_path: str) -> Iterator[RunningNode]:
    """The demo shop in development mode on a free port."""
    from polyport.demo.shop import shop

    with serve_in_thread(shop, Settings(dev=True, database=db_path)) as server:
        yield server
