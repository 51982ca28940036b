"""A node serving the monitoring contract, its MQTT port, and clients to reach it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.mqtt.service import monitoring

from polyport import Settings
from polyport.testing import RunningNode, serve_in_thread

KEYS = {
    "reader": ("reader-key", ["read", "alerts"]),
    "sensor": ("sensor-key", ["telemetry", "read", "calibrate"]),
    "nobody": ("nobody-key", []),
}


def node_settings(tmp_path: Path, **more: Any) -> Settings:
    values: dict[str, Any] = {
        "database": str(tmp_path / "db.sqlite3"),
        "rate_limit": {"enabled": False},
        "mqtt": {"port": 0, "connect_timeout": 1.0},
        "log": {"level": "warning"},
    }
    values.update(more)
    return Settings.model_validate(values)


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[RunningNode]:
    """The monitoring contract in development mode: anonymous clients may do everything."""
    with serve_in_thread(monitoring, node_settings(tmp_path, dev=True)) as node:
        yield node


@pytest.fixture
def secure(tmp_path: Path) -> Iterator[RunningNode]:
    """The monitoring contract with API keys: a reader, a sensor, and a key with no scope."""
    keys = [
        {"key": key, "subject": subject, "scopes": scopes}
        for subject, (key, scopes) in KEYS.items()
    ]
    with serve_in_thread(monitoring, node_settings(tmp_path, auth={"api_keys": keys})) as node:
        yield node
