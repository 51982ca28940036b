"""The record store: the shared contract over the embedded backends."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.contract.records_contract import RecordStoreContract, StoreFactory

from polyport.backends.memory import MemoryRecordStore
from polyport.backends.sqlite import SqliteDatabase, SqliteRecordStore
from polyport.core.records import RecordStore


class TestMemoryRecordStore(RecordStoreContract):
    """One process's memory: nodes of one process share an instance."""

    @pytest.fixture
    def make_store(self) -> StoreFactory:
        stores: dict[str, MemoryRecordStore] = {}

        def make(name: str = "store") -> RecordStore:
            return stores.setdefault(name, MemoryRecordStore())

        return make


class TestSqliteRecordStore(RecordStoreContract):
    """The embedded default: one connection per node to one file."""

    @pytest.fixture
    def make_store(self, tmp_path: Path) -> StoreFactory:
        def make(name: str = "store") -> RecordStore:
            return SqliteRecordStore(SqliteDatabase(tmp_path / f"{name}.sqlite3"))

        return make
