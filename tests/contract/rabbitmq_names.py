"""RabbitMQ names of the tests' own: a fresh prefix per test, and deleting what it made.

Every queue, stream and exchange a RabbitMQ broker declares is named after
its prefix and its queues (``polyport.backends.rabbitmq.layout``); a test
takes a prefix no one else uses and deletes exactly those names afterwards,
never any other queue of the server (others' tests may be using it).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field

import pytest
from tests.conftest import require_service

from polyport.backends.rabbitmq.layout import Layout

URL = "amqp://guest:guest@127.0.0.1:5672/"


@dataclass
class Names:
    """A prefix of a test's own, and the queues made under it (deleted after the test)."""

    prefix: str
    layouts: set[Layout] = field(default_factory=set)

    def url(self, **options: object) -> str:
        query = "&".join(f"{k}={v}" for k, v in {"prefix": self.prefix, **options}.items())
        return f"{URL}?{query}"

    def made(self, queue: str, partitions: int = 8) -> Layout:
        layout = Layout(self.prefix, queue, partitions)
        self.layouts.add(layout)
        return layout


async def delete_layouts(layouts: Iterable[Layout]) -> None:
    """Delete every queue, stream and exchange of ``layouts`` (those that exist)."""
    import aio_pika

    from polyport.backends.rabbitmq.topology import delete

    connection = await aio_pika.connect(URL)
    try:
        assert connection.transport is not None
        channel = await connection.transport.connection.channel()
        for layout in layouts:
            await delete(channel, layout)
    finally:
        await connection.close()


@pytest.fixture
async def rabbit() -> AsyncIterator[Names]:
    """A prefix of the test's own; every queue recorded with ``made`` is deleted after."""
    require_service("RabbitMQ", 5672)
    names = Names(f"pptest-{uuid.uuid4().hex[:12]}")
    yield names
    await delete_layouts(names.layouts)
