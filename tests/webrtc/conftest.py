"""Nodes for the WebRTC tests: one in development mode, one with API keys; loopback ICE."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from polyport import Settings
from polyport.testing import RunningNode, serve_in_thread

WEBRTC: dict[str, Any] = {
    "loopback": True,
    "max_room_size": 3,
    "max_rooms": 2,
    "max_message": 4096,
    "rate": 20.0,
    "burst": 40,
    "connect_timeout": 3.0,
    "max_server_peers": 4,
}


def signal_url(node: RunningNode) -> str:
    return node.url.replace("http://", "ws://") + "/webrtc/signal"


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[RunningNode]:
    """The demo shop in development mode (anonymous may do everything)."""
    from polyport.demo.shop import shop

    settings = Settings.model_validate(
        {
            "dev": True,
            "database": str(tmp_path / "db.sqlite3"),
            "rate_limit": {"enabled": False},
            "webrtc": WEBRTC,
        }
    )
    with serve_in_thread(shop, settings) as server:
        yield server


@pytest.fixture
def secure(tmp_path: Path) -> Iterator[RunningNode]:
    """The demo shop with API keys; signaling needs the scope 'rtc'."""
    from polyport.demo.shop import shop

    settings = Settings.model_validate(
        {
            "database": str(tmp_path / "db.sqlite3"),
            "auth": {
                "api_keys": [
                    {"key": "rtc-key", "subject": "alice", "scopes": ["rtc"]},
                    {"key": "plain-key", "subject": "bob"},
                ]
            },
            "webrtc": {**WEBRTC, "scope": "rtc"},
        }
    )
    with serve_in_thread(shop, settings) as server:
        yield server
