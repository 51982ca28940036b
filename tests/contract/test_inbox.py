"""The receivers' inbox: the shared contract over the SQLite backend."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.contract.inbox_contract import InboxFactory, ReceiverInboxContract

from polyport.backends.sqlite import SqliteDatabase, SqliteReceiverInbox
from polyport.core.inbox import ReceiverInbox


class TestSqliteReceiverInbox(ReceiverInboxContract):
    """The embedded default: one connection per node to one file."""

    @pytest.fixture
    def make_inbox(self, tmp_path: Path) -> InboxFactory:
        def make(name: str = "inbox") -> ReceiverInbox:
            return SqliteReceiverInbox(SqliteDatabase(tmp_path / f"{name}.sqlite3"))

        return make
