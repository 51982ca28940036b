"""The record store on NATS JetStream KV: the shared contract, and what JetStream adds.

Each test gets bucket names of its own and deletes them afterwards; no test
touches a stream or bucket it did not make.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import pytest
from tests.conftest import require_service
from tests.contract.private_servers import closed_port
from tests.contract.records_contract import RecordStoreContract, StoreFactory

from polyport.backends.nats import NatsRecordStore
from polyport.backends.nats.workrecords import name_token
from polyport.core.errors import InvalidArgument, Unavailable
from polyport.core.records import ABSENT, RecordStore, scan_all

pytestmark = [pytest.mark.services, pytest.mark.timeout(60)]

URL = "nats://127.0.0.1:4222"


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    """A store name prefix no one else uses; the buckets made under it are deleted afterwards."""
    require_service("NATS", 4222)
    base = f"pptest-{uuid.uuid4().hex[:12]}"
    yield base
    import nats
    from nats.js.errors import NotFoundError

    nc = await nats.connect(URL)
    try:
        js = nc.jetstream()
        for info in await js.streams_info():
            stream = info.config.name
            if stream and stream.startswith(f"KV_{base}"):
                with contextlib.suppress(NotFoundError):
                    await js.delete_stream(stream)
    finally:
        await nc.close()


class TestNatsRecordStore(RecordStoreContract):
    """Each node a NatsRecordStore of its own connection, sharing the bucket of one name."""

    @pytest.fixture
    def make_store(self, prefix: str) -> StoreFactory:
        def make(name: str = "store") -> RecordStore:
            return NatsRecordStore(URL, name=f"{prefix}-{name}")

        return make


@pytest.fixture
async def store(prefix: str) -> AsyncIterator[NatsRecordStore]:
    opened = NatsRecordStore(URL, name=prefix)
    await opened.open()
    yield opened
    await opened.close()


async def test_of_two_connections_racing_on_one_version_exactly_one_wins(
    store: NatsRecordStore, prefix: str
) -> None:
    """Writes at one version from two connections at once: JetStream stores exactly one."""
    other = NatsRecordStore(URL, name=prefix)
    await other.open()
    try:
        for round_ in range(10):
            version = await store.put("race", b"start")
            assert version is not None
            results = await asyncio.gather(
                store.put("race", b"mine", expect=version),
                other.put("race", b"theirs", expect=version),
            )
            won = [r for r in results if r is not None]
            assert len(won) == 1, f"round {round_}: {results}"
            found = await other.get("race")
            assert found is not None and found.version == won[0]
            assert found.value == (b"mine" if results[0] is not None else b"theirs")
        deleted = await asyncio.gather(
            store.delete("race", expect=won[0]), other.delete("race", expect=won[0])
        )
        assert sorted(deleted) == [False, True]
        created = await asyncio.gather(
            store.put("fresh", b"a", expect=ABSENT), other.put("fresh", b"b", expect=ABSENT)
        )
        assert len([c for c in created if c is not None]) == 1
    finally:
        await other.close()


async def test_keys_a_subject_cannot_hold_read_back_and_scan_in_order(
    store: NatsRecordStore,
) -> None:
    """Dots, wildcards, spaces, colons and non-ASCII are ordinary key characters."""
    keys = ["k.a", "k.*", "k.>", "k a", "k:b", "k/é", "k/日本", "k/😀", "k", "k>", "k*", "k.a.b"]
    keys.append("k/" + "é" * 398)  # longer than a readable token: base64 instead
    for key in keys:
        assert await store.put(key, key.encode()) is not None
    for key in keys:
        found = await store.get(key)
        assert found is not None and found.value == key.encode()
    assert [r.key for r in await store.scan("k")] == sorted(keys)
    assert [r.key for r in await store.scan("k.")] == sorted(k for k in keys if k[:2] == "k.")
    assert [r.key for r in await scan_all(store, "k/", page=1)] == sorted(
        k for k in keys if k[:2] == "k/"
    )
    assert [await store.delete(key) for key in keys] == [True] * len(keys)
    assert await store.scan("") == []


async def test_create_over_a_delete_marker_expects_the_markers_revision(
    store: NatsRecordStore,
) -> None:
    """A delete marker left behind (a purge that failed, a KV delete) is absence."""
    version = await store.put("m", b"1")
    assert version is not None
    subject = f"$KV.{store.bucket}.r.{name_token('m')}"
    marker = await store.kv.publish(subject, b"", {"KV-Operation": "DEL"}, version)
    assert marker is not None
    assert await store.get("m") is None
    assert await store.scan("") == []
    assert await store.delete("m") is False
    created = await store.put("m", b"2", expect=ABSENT)
    assert created is not None and created > marker
    found = await store.get("m")
    assert found is not None and (found.value, found.version) == (b"2", created)


async def test_a_value_larger_than_a_message_is_stored_in_chunks(store: NatsRecordStore) -> None:
    """Values over the server's max_payload read back whole; a rewrite or delete purges
    the chunks of the record it replaced, a refused write its own."""
    big = bytes(range(256)) * (5 * 1024 * 1024 // 256 + 7)
    first = await store.put("big", big)
    assert first is not None
    found = await store.get("big")
    assert found is not None and (found.value, found.version) == (big, first)
    assert [r.value for r in await store.scan("b")] == [big]
    second = await store.put("big", big[::-1], expect=first)
    assert second is not None
    assert await store.put("big", big, expect=first) is None  # refused: its chunks go
    found = await store.get("big")
    assert found is not None and found.value == big[::-1]
    assert await store.delete("big", expect=second) is True
    info = await store.client.api(f"STREAM.INFO.{store.stream}")
    assert info["state"]["messages"] == 0


async def test_bad_keys_read_as_absent_and_bad_names_are_refused(store: NatsRecordStore) -> None:
    assert await store.get("") is None
    assert await store.delete("a\nb") is False
    with pytest.raises(InvalidArgument):
        NatsRecordStore(URL, name="a.b")


async def test_an_unreachable_server_is_unavailable() -> None:
    """Opening against a port nothing listens on fails at once with Unavailable."""
    store = NatsRecordStore(f"nats://127.0.0.1:{closed_port()}", name="unreachable", timeout=2)
    with pytest.raises(Unavailable):
        await store.open()
