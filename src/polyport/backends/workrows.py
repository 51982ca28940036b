"""Work items as the SQL backends (SQLite, PostgreSQL) store them: one row, these columns."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from polyport.core.workqueue import WorkItem

#: The columns a row is selected with, in the order :func:`item_from_row` reads them.
COLUMNS = (
    "seq",
    "queue",
    "key",
    "payload",
    "status",
    "attempts",
    "created",
    "due",
    "lease",
    "claimed",
    "finished",
    "error",
    "result",
    "owner",
    '"group"',  # a keyword of SQL: quoted
)


def item_from_row(row: Sequence[Any]) -> WorkItem:
    """The work item of a row selected with :data:`COLUMNS` (blobs as bytes or memoryview)."""
    seq, queue, key, payload, status, attempts, created, due, lease = row[:9]
    claimed, finished, error, result, owner, group = row[9:]
    return WorkItem(
        queue=queue,
        key=key,
        seq=seq,
        payload=bytes(payload),
        status=status,
        attempts=attempts,
        created=created,
        due=due,
        lease=lease,
        claimed=claimed,
        finished=finished,
        error=error,
        result=None if result is None else bytes(result),
        owner=owner,
        group=group,
    )


__all__ = ["COLUMNS", "item_from_row"]
