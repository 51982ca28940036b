"""The contract every record store backend passes, written once and subclassed per backend.

A backend's test module subclasses :class:`RecordStoreContract` and gives the
``make_store`` fixture: a factory of stores over storage of the test's own,
where the same ``name`` reaches the same storage — so a second store is a
second node sharing it, or the node restarted.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol

import pytest

from polyport.core.errors import InvalidArgument
from polyport.core.records import ABSENT, MAX_KEY, RecordStore, scan_all


class StoreFactory(Protocol):
    def __call__(self, name: str = "store") -> RecordStore: ...


class StoreOpener(Protocol):
    def __call__(self, name: str = "store") -> AbstractAsyncContextManager[RecordStore]: ...


class RecordStoreContract:
    """Whole writes, growing versions, compare-and-set, ordered scans, shared at once."""

    @pytest.fixture
    def make_store(self) -> StoreFactory:
        raise NotImplementedError("a backend's subclass gives make_store")

    @pytest.fixture
    def node(self, make_store: StoreFactory) -> StoreOpener:
        """A node's store over the shared storage, opened for the length of a ``with``."""

        @asynccontextmanager
        async def opened(name: str = "store") -> AsyncIterator[RecordStore]:
            found = make_store(name)
            await found.open()
            try:
                yield found
            finally:
                await found.close()

        return opened

    @pytest.fixture
    async def records(self, node: StoreOpener) -> AsyncIterator[RecordStore]:
        async with node() as found:
            yield found

    # -- reading and writing --------------------------------------------------------

    async def test_a_record_reads_back_as_written_on_every_node(
        self, records: RecordStore, node: StoreOpener
    ) -> None:
        """Any bytes, read back by another node at once and after a restart; unknown: None."""
        value = bytes(range(256)) * 8 + b"\x00"
        version = await records.put("a/1", value)
        assert version is not None and version > 0
        for _ in range(2):
            async with node() as other:
                found = await other.get("a/1")
                assert found is not None
                assert (found.key, found.value, found.version) == ("a/1", value, version)
                assert await other.get("a/2") is None
        assert await records.put("empty", b"") is not None
        found = await records.get("empty")
        assert found is not None and found.value == b""

    async def test_versions_only_grow_and_are_never_given_twice(self, records: RecordStore) -> None:
        """Each write of a key gives it a larger version, even after a delete."""
        seen = [await records.put("k", b"1"), await records.put("k", b"2")]
        assert await records.delete("k") is True
        seen.append(await records.put("k", b"3"))
        await records.put("other", b"x")
        seen.append(await records.put("k", b"4"))
        versions = [v for v in seen if v is not None]
        assert len(versions) == 4 and versions == sorted(set(versions))
        found = await records.get("k")
        assert found is not None and (found.value, found.version) == (b"4", versions[-1])

    async def test_delete_forgets_and_says_whether_there_was_a_record(
        self, records: RecordStore, node: StoreOpener
    ) -> None:
        await records.put("k", b"1")
        assert await records.delete("k") is True
        assert await records.delete("k") is False
        async with node() as other:
            assert await other.get("k") is None
            assert await other.scan("") == []

    # -- compare and set ------------------------------------------------------------

    async def test_a_write_expecting_absence_creates_only(self, records: RecordStore) -> None:
        first = await records.put("k", b"1", expect=ABSENT)
        assert first is not None
        assert await records.put("k", b"2", expect=ABSENT) is None
        found = await records.get("k")
        assert found is not None and (found.value, found.version) == (b"1", first)

    async def test_a_write_expecting_a_version_needs_that_version(
        self, records: RecordStore
    ) -> None:
        """Only the version read last matches: a stale one, or a record gone, does not."""
        first = await records.put("k", b"1")
        assert first is not None
        second = await records.put("k", b"2", expect=first)
        assert second is not None and second > first
        assert await records.put("k", b"stale", expect=first) is None
        assert await records.delete("k", expect=first) is False
        found = await records.get("k")
        assert found is not None and found.value == b"2"
        assert await records.delete("k", expect=second) is True
        assert await records.put("k", b"again", expect=second) is None  # gone
        assert await records.get("k") is None

    async def test_a_version_of_a_deleted_record_never_matches_its_successor(
        self, records: RecordStore
    ) -> None:
        """Deleted and written again: the version read before the delete no longer holds."""
        old = await records.put("k", b"1")
        assert old is not None
        await records.delete("k")
        await records.put("k", b"2")
        assert await records.put("k", b"3", expect=old) is None
        assert await records.delete("k", expect=old) is False

    async def test_of_two_nodes_setting_one_version_one_wins(
        self, records: RecordStore, node: StoreOpener
    ) -> None:
        """Both read the same version; the first write wins, the second is refused."""
        version = await records.put("counter", b"0")
        async with node() as other:
            mine = await records.put("counter", b"mine", expect=version)
            theirs = await other.put("counter", b"theirs", expect=version)
            assert mine is not None and theirs is None
            found = await other.get("counter")
            assert found is not None and found.value == b"mine"
            assert await other.put("counter", b"x", expect=ABSENT) is None

    # -- scans ----------------------------------------------------------------------

    async def test_a_scan_lists_a_prefix_in_key_order_from_a_cursor(
        self, records: RecordStore
    ) -> None:
        """Keys under the prefix only, in code point order, after the cursor, a page at a time."""
        keys = ["p/b", "p/a", "p/a/1", "p/ab", "p/A", "p/é", "p", "q/a", "o/z", "p/a~", "p/a "]
        for key in keys:
            await records.put(key, key.encode())
        under = sorted(k for k in keys if k.startswith("p/"))
        assert [r.key for r in await records.scan("p/")] == under
        assert [r.value for r in await records.scan("p/")] == [k.encode() for k in under]
        assert [r.key for r in await records.scan("p/", limit=3)] == under[:3]
        assert [r.key for r in await records.scan("p/", after=under[2], limit=3)] == under[3:6]
        assert [r.key for r in await records.scan("p/", after="p/a")] == under[2:]
        assert [r.key for r in await records.scan("p/", after="a")] == under
        assert await records.scan("p/", after=under[-1]) == []
        assert await records.scan("p/", limit=0) == []
        assert [r.key for r in await records.scan("")] == sorted(keys)
        assert [r.key for r in await records.scan("p/a/")] == ["p/a/1"]
        assert await records.scan("nowhere/") == []
        assert [r.key for r in await scan_all(records, "p/", page=2)] == under

    async def test_a_scan_sees_versions_and_survives_writes_between_pages(
        self, records: RecordStore
    ) -> None:
        """A cursor is a key: records written or deleted meanwhile do not upset the next page."""
        for n in range(6):
            await records.put(f"s/{n}", b"x")
        first = await records.scan("s/", limit=3)
        assert [r.version for r in first] == [
            (await records.get(r.key)).version  # type: ignore[union-attr]
            for r in first
        ]
        await records.delete("s/1")
        await records.put("s/4", b"changed")
        await records.put("s/2a", b"new")
        rest = await records.scan("s/", after=first[-1].key)
        assert [(r.key, r.value) for r in rest] == [
            ("s/2a", b"new"),
            ("s/3", b"x"),
            ("s/4", b"changed"),
            ("s/5", b"x"),
        ]

    @pytest.mark.parametrize("key", ["", "x" * (MAX_KEY + 1), "a\nb", "tab\there"])
    async def test_bad_keys_are_refused(self, records: RecordStore, key: str) -> None:
        with pytest.raises(InvalidArgument):
            await records.put(key, b"")

    async def test_keys_with_separators_stay_apart(self, records: RecordStore) -> None:
        """Characters a backend might use in its own keys are ordinary: nothing collides."""
        keys = ["a:b", "a.b", "a/b", "a*", "a>", "{a}", "a b", "a", "é", "a=b", "a%2Fb"]
        keys.append("x" * MAX_KEY)
        for key in keys:
            await records.put(key, key.encode())
        for key in keys:
            found = await records.get(key)
            assert found is not None and found.value == key.encode()
        assert [r.key for r in await records.scan("a")] == sorted(k for k in keys if k[0] == "a")
