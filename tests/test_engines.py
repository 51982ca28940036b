"""Engines by URL: the embedded ones read into the database settings, shared ones built
by their backends, anything else refused in one line."""

from __future__ import annotations

import pytest
from tests.test_node import make_service

from polyport import engines
from polyport.core.errors import ConfigError
from polyport.core.eventlog import History
from polyport.node import Node
from polyport.settings import Settings


def test_embedded_urls_are_the_database_settings() -> None:
    """sqlite:///FILE is the database file; memory:// keeps the history in memory."""
    relative = engines.embedded(Settings(engine="sqlite:///data/app.sqlite3"))
    assert (relative.database, relative.event_log) == ("data/app.sqlite3", "sqlite")
    absolute = engines.embedded(Settings(engine="sqlite:////var/lib/app.sqlite3"))
    assert absolute.database == "/var/lib/app.sqlite3"
    assert engines.embedded(Settings(engine="memory://")).event_log == "memory"
    assert engines.embedded(Settings()) == Settings()
    with pytest.raises(ConfigError, match="name the file"):
        engines.embedded(Settings(engine="sqlite://"))


@pytest.mark.parametrize("url", ["mysql://h/db", "http://x", "kafka://broker:9092", "nonsense"])
def test_an_unknown_engine_is_one_clear_line(url: str) -> None:
    """The error names the engine (without its password) and every scheme known."""
    with pytest.raises(ConfigError) as refused:
        engines.scheme_of(url)
    message = str(refused.value)
    assert "unknown scheme" in message and "postgresql://" in message and "nats://" in message
    assert "\n" not in message


def test_passwords_never_reach_the_banner_or_an_error() -> None:
    """A URL is shown with its password masked."""
    assert (
        engines.redacted("postgresql://app:s3cret@db:5432/app?schema=x")
        == "postgresql://app:***@db:5432/app?schema=x"
    )
    with pytest.raises(ConfigError) as refused:
        engines.scheme_of("mysql://root:hunter2@db/x")
    assert "hunter2" not in str(refused.value)


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("postgresql://postgres@127.0.0.1:5432/test?schema=pp_registry", "Postgres"),
        ("redis://127.0.0.1:6379/0?prefix=pp-registry", "Redis"),
        ("nats://127.0.0.1:4222?name=pp-registry", "Nats"),
    ],
)
def test_shared_engines_are_built_by_their_backends(url: str, kind: str) -> None:
    """Each shared scheme makes its backend's log, bus and work queue; nothing connects
    until opened."""
    shared = engines.shared_engine(url, History())
    assert type(shared.log).__name__ == f"{kind}EventLog"
    assert type(shared.bus).__name__ == f"{kind}Bus"
    assert type(shared.work_queue).__name__ == f"{kind}WorkQueue"
    assert type(shared.records).__name__ == f"{kind}RecordStore"
    assert shared.where == url


def test_a_node_on_a_shared_engine_keeps_everything_there() -> None:
    """Events, jobs, the receivers' inbox and webhooks: nothing of it in the SQLite file,
    so the node has nothing to warn about."""
    settings = Settings(
        dev=True, database=":memory:", engine="redis://127.0.0.1:6379/0?prefix=pp-warn"
    )
    node = Node(make_service("engine_warning"), settings)
    assert node.shared is not None
    assert node.runtime.hub.log is node.shared.log
    assert not any("shared" in warning for warning in node.warnings())
