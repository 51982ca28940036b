"""SIGKILL a node whose queues are NATS JetStream work queues: no acknowledged message is lost.

The rounds of :func:`tests.queues.test_kill9.kill_rounds` on ``--broker nats://``:
the producers' 202s are JetStream's acks of the publish, and the messages the
killed node held come back after the consumer's AckWait (the queue's 2 s lease).
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from tests.conftest import require_service
from tests.contract.test_broker_nats_jetstream import URL, delete_streams
from tests.queues.test_kill9 import kill_rounds

pytestmark = [pytest.mark.services, pytest.mark.timeout(180)]


def test_nothing_acknowledged_is_lost_across_kill_9_on_jetstream(tmp_path: Path) -> None:
    require_service("NATS", 4222)
    prefix = f"pptest-kill-{uuid.uuid4().hex[:12]}"
    try:
        kill_rounds(tmp_path, f"{URL}?prefix={prefix}")
    finally:
        asyncio.run(delete_streams(prefix))
