"""The inbox on its own, with explicit clocks: leases, takeovers, retries, redrive, purge."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from polyport.backends.sqlite.db import SqliteDatabase
from polyport.edges.hooks.inbox import HookInbox

T0 = 1_000_000.0


@pytest.fixture
def inbox(tmp_path: Path) -> Iterator[HookInbox]:
    found = HookInbox(SqliteDatabase(tmp_path / "inbox.sqlite3"))
    found.open()
    yield found
    found.close()


def put(inbox: HookInbox, delivery_id: str, receiver: str = "r", now: float = T0) -> bool:
    return inbox.insert(
        receiver,
        delivery_id,
        event_type=None,
        signed_at=None,
        body=b"{}",
        headers={},
        now=now,
    )


def test_the_primary_key_is_the_idempotency_check(inbox: HookInbox, tmp_path: Path) -> None:
    """Insert is refused for a known (receiver, id), also from another connection later."""
    assert put(inbox, "a") is True
    assert put(inbox, "a") is False
    assert put(inbox, "a", receiver="other") is True
    reopened = HookInbox(SqliteDatabase(tmp_path / "inbox.sqlite3"))
    reopened.open()
    try:
        assert put(reopened, "a") is False
    finally:
        reopened.close()


def test_an_expired_lease_is_taken_over_and_the_old_holder_cannot_settle(
    inbox: HookInbox,
) -> None:
    """A node that died (or stalled) mid-handler loses the delivery when its lease ends."""
    put(inbox, "a")
    (first,) = inbox.claim(["r"], T0, 10, lease_seconds=60)
    assert first.status == "running" and first.attempts == 1
    assert inbox.claim(["r"], T0 + 59, 10, lease_seconds=60) == []  # still leased
    (second,) = inbox.claim(["r"], T0 + 61, 10, lease_seconds=60)
    assert second.attempts == 2 and second.lease != first.lease
    assert inbox.complete(first, T0 + 62) is False  # the stale holder's write is refused
    assert inbox.complete(second, T0 + 62) is True
    done = inbox.get("r", "a")
    assert done is not None and done.status == "done" and done.attempts == 2


def test_retry_waits_until_due_and_bury_keeps_the_error(inbox: HookInbox) -> None:
    """A failed attempt is due again later; the last one makes a dead letter."""
    put(inbox, "a")
    (row,) = inbox.claim(["r"], T0, 10, lease_seconds=60)
    assert inbox.retry(row, T0 + 5, "boom") is True
    assert inbox.claim(["r"], T0 + 4, 10, lease_seconds=60) == []
    assert inbox.next_due(["r"]) == T0 + 5
    (row,) = inbox.claim(["r"], T0 + 5, 10, lease_seconds=60)
    assert inbox.bury(row, T0 + 6, "boom again") is True
    dead = inbox.get("r", "a")
    assert dead is not None and dead.status == "dead" and dead.error == "boom again"
    assert inbox.counts("r") == {"pending": 0, "running": 0, "done": 0, "dead": 1}
    assert inbox.redrive("r", "a", T0 + 7) is True
    again = inbox.get("r", "a")
    assert again is not None and again.status == "pending" and again.attempts == 0
    assert inbox.redrive("r", "missing", T0) is False


def test_release_gives_a_delivery_back_without_using_an_attempt(inbox: HookInbox) -> None:
    """What a stopping node does with handlers it had to cancel."""
    put(inbox, "a")
    (row,) = inbox.claim(["r"], T0, 10, lease_seconds=60)
    assert inbox.release(row, T0 + 1) is True
    back = inbox.get("r", "a")
    assert back is not None and back.status == "pending" and back.attempts == 0


def test_claim_respects_the_limit_and_the_receivers(inbox: HookInbox) -> None:
    """Only the named receivers' due rows, at most ``limit``, oldest first."""
    for n in range(5):
        put(inbox, f"m{n}", now=T0 + n)
    put(inbox, "x", receiver="elsewhere")
    claimed = inbox.claim(["r"], T0 + 10, 3, lease_seconds=60)
    assert [row.id for row in claimed] == ["m0", "m1", "m2"]
    assert inbox.claim(["nobody"], T0 + 10, 3, lease_seconds=60) == []


def test_purge_forgets_finished_deliveries_after_the_retention(inbox: HookInbox) -> None:
    """After the window an id is unknown again; pending work is never purged."""
    put(inbox, "old")
    put(inbox, "waiting", now=T0 + 100)  # not due yet when "old" is claimed
    (row,) = inbox.claim(["r"], T0, 1, lease_seconds=60)
    inbox.complete(row, T0 + 1)
    assert inbox.purge(before=T0 + 1) == 0  # finished exactly then: kept
    assert inbox.purge(before=T0 + 2) == 1
    assert inbox.get("r", "old") is None and inbox.get("r", "waiting") is not None
    assert put(inbox, "old") is True


def test_listing_pages_newest_first(inbox: HookInbox) -> None:
    """``before`` is the rowid cursor of the previous page."""
    for n in range(5):
        put(inbox, f"m{n}")
    page = inbox.list("r", status=None, before=None, limit=2)
    assert [row.id for row in page] == ["m4", "m3"]
    page = inbox.list("r", status=None, before=page[-1].rowid, limit=2)
    assert [row.id for row in page] == ["m2", "m1"]
    assert inbox.list("r", status="dead", before=None, limit=10) == []


def test_final_states_never_change_from_another_connection(
    inbox: HookInbox, tmp_path: Path
) -> None:
    """done and dead stay as they are, whatever a second node with a stale claim writes."""
    other = HookInbox(SqliteDatabase(tmp_path / "inbox.sqlite3"))
    other.open()
    try:
        put(inbox, "a")
        put(inbox, "b")
        claimed = {row.id: row for row in inbox.claim(["r"], T0, 10, lease_seconds=60)}
        assert set(claimed) == {"a", "b"}
        assert inbox.complete(claimed["a"], T0 + 1)
        assert inbox.bury(claimed["b"], T0 + 1, "gave up")
        for row in claimed.values():  # the same claims, written again from the other node
            assert not other.retry(row, T0 + 2, "late failure")
            assert not other.release(row, T0 + 2)
            assert not other.complete(row, T0 + 2)
            assert not other.bury(row, T0 + 2, "late")
        done, dead = other.get("r", "a"), other.get("r", "b")
        assert done is not None and (done.status, done.error) == ("done", None)
        assert dead is not None and (dead.status, dead.error) == ("dead", "gave up")
        assert other.claim(["r"], T0 + 1000, 10, lease_seconds=60) == []
    finally:
        other.close()
