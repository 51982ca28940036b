"""The webhook store: the shared contract over the SQLite backend, and SQLite's own guarantees."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from tests.contract.webhookstore_contract import NodeFactory, WebhookStoreContract

from polyport.backends.sqlite import SqliteDatabase, SqliteEventLog, SqliteWebhookStore
from polyport.core.eventlog import EventLog
from polyport.core.webhookstore import WebhookStore
from polyport.webhooks.encryption import SecretCipher


class TestSqliteWebhookStore(WebhookStoreContract):
    """The embedded default: the store over the SQLite log, on one connection, as a node has."""

    @pytest.fixture
    def make_node(self, tmp_path: Path) -> NodeFactory:
        def make(name: str = "store", *, keys: Sequence[str] = ()) -> tuple[EventLog, WebhookStore]:
            db = SqliteDatabase(tmp_path / f"{name}.sqlite3")
            log = SqliteEventLog(db)
            return log, SqliteWebhookStore(db, log=log, cipher=SecretCipher(keys))

        return make


def test_the_store_and_its_log_share_one_database(tmp_path: Path) -> None:
    """Two connections would commit apart: a store over another database's log is refused."""
    log = SqliteEventLog(SqliteDatabase(tmp_path / "log.sqlite3"))
    with pytest.raises(ValueError, match="share one database"):
        SqliteWebhookStore(SqliteDatabase(tmp_path / "outbox.sqlite3"), log=log)


def test_without_its_log_the_store_keeps_no_cursor(tmp_path: Path) -> None:
    """Over a memory log (``event_log = "memory"``) there is no seq worth keeping."""
    assert not SqliteWebhookStore(SqliteDatabase(tmp_path / "db.sqlite3")).follows_log
