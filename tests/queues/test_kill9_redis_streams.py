"""SIGKILL a node on the Redis Streams broker while producers send and its consumer runs: no
acknowledged message is lost (see test_kill9.py), and the killed nodes' entries in flight
are taken over after their lease."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from tests.conftest import require_service
from tests.queues.test_kill9 import kill_rounds

pytestmark = [pytest.mark.services, pytest.mark.timeout(180)]

URL = "redis://127.0.0.1:6379/0"


def test_nothing_acknowledged_is_lost_across_kill_9_on_redis_streams(tmp_path: Path) -> None:
    """Three nodes killed mid-stream, then a fourth handles every acknowledged message."""
    require_service("Redis", 6379)
    from redis import Redis

    prefix = f"polyport-test-{uuid.uuid4().hex}"
    try:
        kill_rounds(tmp_path, f"{URL}?prefix={prefix}")
    finally:
        client = Redis.from_url(URL)
        try:
            keys = list(client.scan_iter(match=f"*{prefix}*", count=1000))
            if keys:
                client.delete(*keys)
        finally:
            client.close()
