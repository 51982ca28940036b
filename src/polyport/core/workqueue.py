"""The leased work queue port: work stored once, claimed under a lease, settled once.

Jobs, the receivers' inbox and (next) webhook deliveries and message queues
are all the same thing underneath: a unit of work is stored, durable, before
anyone is told it was accepted; a worker on some node claims it under a
lease; the worker settles it — done, retry later, dead letter — or its node
dies and the lease runs out, and another node claims it again. This port is
that thing, once, for every backend (memory, SQLite, PostgreSQL, Redis, NATS);
each passes the one contract suite in ``tests/contract/workqueue_contract.py``.

An item is named by ``(queue, key)``; ``payload`` is opaque bytes the user
of the queue encodes. Its life::

    pending ──claim──▶ running ──ack──▶ done
       ▲                  │
       ├──retry (later)───┤
       ├──release─────────┤
       ├──lease ran out───┘
       │                  └──dead_letter──▶ dead ──redrive──▶ pending
       └──────────────────────────────────────────────────────┘

Guarantees every backend gives (the contract suite checks each):

* **Idempotent enqueue within the retention window.** A key is known from
  its enqueue until :meth:`WorkQueue.purge` forgets it (only once it is final
  and older than the purge's bound) or :meth:`WorkQueue.drop` forgets its
  queue: enqueueing a known key changes nothing and answers False — across
  restarts, and across nodes sharing the store.
* **A claim is a lease.** A claim moves a due item to ``running`` with a
  fresh lease token, counts the attempt, and holds it until ``due``. A
  running item whose lease has passed (its node died mid-work) is due again
  and claimed anew, its attempts counted again; of claims racing for one
  item, exactly one wins.
* **Only the current lease settles.** :meth:`~WorkQueue.ack`,
  :meth:`~WorkQueue.retry`, :meth:`~WorkQueue.dead_letter`,
  :meth:`~WorkQueue.release` and :meth:`~WorkQueue.extend` act only on a
  running item whose lease token is still the one they carry; a node whose
  lease ran out and was claimed over is refused (False), never overwriting
  the node that took over. (A lease that ran out but was not claimed over yet
  still settles: nobody else holds the item.)
* **Final states never change**, except by redrive: ``dead`` only through
  :meth:`~WorkQueue.redrive`, which makes it pending with a fresh count of
  attempts, and ``done`` only through a redrive asked to ``replay`` it (a
  webhook sent again on its owner's request).
* **A group runs one item at a time, in order.** An item enqueued with a
  ``group`` is claimable only while no item of the same queue and group with
  a smaller ``seq`` (enqueued before it) is pending or running — whatever
  that item's due time: one waiting out a retry's backoff holds the later
  ones back, and so does a running one whose lease ran out (it is claimable
  itself, and stays the group's head). Done and dead items hold nothing back.
  So a group's items run one at a time, in the order they were enqueued,
  across every node sharing the store (as far as leases are kept: a lease
  that ran out lets its item be claimed again while its old holder may still
  be at work, as for any item); groups do not wait for each other, and items
  without a group are not affected. A held-back item is not due:
  :meth:`~WorkQueue.next_due` does not report it (a worker woken for it
  would find nothing to claim). A redrive keeps the item's ``seq``, so a
  redriven item is its group's head again when nothing enqueued before it
  is unfinished, and the group's later pending items wait for it once more;
  later items already done stay done, and one already running is not
  stopped — the redriven item may run while it finishes, the one way two
  items of a group run at once (an operator's redrive, not the queue's own
  doing).

Enqueues and redrives are durable when they return True. Claims and
outcomes are durable, and seen by other nodes, by the time the caller next
yields to its event loop (SQLite commits them with that loop iteration's
other writes; network engines before they return): one lost to a crash
leaves the item pending or running, so it runs again — at least once, never
lost. Times are Unix seconds given by the caller, so a backend keeps no clock
of its own. Failures of the backend itself (a lost connection, a full disk)
propagate as the backend's exceptions, or as
:class:`~polyport.core.errors.Unavailable`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from polyport.core.errors import InvalidArgument

WorkStatus = Literal["pending", "running", "done", "dead"]
WORK_STATUSES: tuple[WorkStatus, ...] = ("pending", "running", "done", "dead")
#: The longest queue name, key and group: backends may use them in keys and subjects.
MAX_NAME = 200


@dataclass(frozen=True, slots=True)
class WorkItem:
    """One unit of work and where it stands."""

    queue: str
    key: str
    #: The order the store received items in (larger is newer, within a queue at
    #: least): listings page by it.
    seq: int
    payload: bytes
    status: WorkStatus
    #: Claims so far in this round (a redrive of a dead item starts again at 0).
    attempts: int
    created: float
    #: When a pending item may next be claimed, or when a running one's lease ends.
    due: float
    #: The current claim's token, while running.
    lease: str | None
    #: When the current (or last) claim was made.
    claimed: float | None
    #: When it became done or dead.
    finished: float | None
    #: The last error given by retry or dead_letter (cleared by ack).
    error: str | None
    #: What ack recorded, if anything.
    result: bytes | None
    #: Who holds the current claim, as the claimer named itself (None unless running).
    owner: str | None = None
    #: The ordering group it was enqueued in: items of one group (in one queue) run one
    #: at a time, in ``seq`` order. None: no group, no order.
    group: str | None = None


class WorkQueue(Protocol):
    """Named queues of keyed work items in one store, shared by the nodes that open it.

    The node builds it (choosing the backend) and hands it to the parts that
    need it through :class:`~polyport.core.runtime.Runtime`. Each user opens
    and closes it; a backend counts opens, so one store serves several users.
    """

    async def open(self) -> None:
        """Connect and create what is missing."""
        ...

    async def close(self) -> None: ...

    async def enqueue(
        self,
        queue: str,
        key: str,
        payload: bytes,
        *,
        now: float,
        due: float | None = None,
        group: str | None = None,
    ) -> bool:
        """Store a new pending item, due at ``due`` (``now`` if None); False if the key is
        known in that queue (whatever group either names). Durable before it returns True.

        With a ``group`` (named as queues and keys are), the item waits behind the
        group's items enqueued before it: see the module's guarantees.
        """
        ...

    async def claim(
        self,
        queues: Sequence[str],
        *,
        now: float,
        limit: int,
        lease: float,
        owner: str | None = None,
    ) -> list[WorkItem]:
        """Lease up to ``limit`` due items of ``queues`` for ``lease`` seconds.

        Due means pending with ``due <= now``, or running with a lease that
        ended by ``now`` — and, for an item of a group, no item enqueued before
        it in its group unfinished (so one claim takes at most one item of a
        group). Earliest due first; each claimed item is returned
        running, with its new lease token, ``claimed = now``, its attempts
        counted and ``owner`` recorded (what a node names itself by, so that
        others can tell whose claims they see: the queue does not interpret it).
        """
        ...

    async def extend(self, items: Sequence[WorkItem], until: float) -> int:
        """Push the leases of those ``items`` still held under their token to ``until``;
        how many were. ``until`` may be in the past: the lease then ends now."""
        ...

    async def ack(self, item: WorkItem, *, now: float, result: bytes | None = None) -> bool:
        """The work succeeded: ``done``, finished at ``now``, with ``result`` kept and the
        error of an earlier attempt cleared."""
        ...

    async def retry(self, item: WorkItem, *, due: float, error: str) -> bool:
        """The work failed: pending again from ``due``, with the error kept."""
        ...

    async def release(self, item: WorkItem, *, now: float) -> bool:
        """Give a claimed item back unworked (the node is stopping): due ``now``, and
        the claim does not count as an attempt."""
        ...

    async def dead_letter(self, item: WorkItem, *, now: float, error: str) -> bool:
        """The work failed for the last time: ``dead``, finished at ``now``, with the error."""
        ...

    async def redrive(self, queue: str, key: str, *, now: float, replay: bool = False) -> bool:
        """Make a dead or pending item due ``now`` — and with ``replay``, a done one too;
        False if it is none of those (or unknown).

        A dead or done one starts a fresh count of attempts and loses its finish
        time (a done one its result too: the replay's outcome replaces it); a
        pending one keeps its count. Every one keeps its ``seq`` and group, so
        it takes its place in its group's order again (see the module's
        guarantees). Durable when this returns.
        """
        ...

    async def get(self, queue: str, key: str) -> WorkItem | None: ...

    async def items(
        self,
        queue: str,
        *,
        status: WorkStatus | None = None,
        before: int | None = None,
        limit: int = 50,
    ) -> list[WorkItem]:
        """A queue's items, newest first (by ``seq``); ``before`` is a ``seq`` (a cursor)."""
        ...

    async def counts(self, queue: str) -> dict[WorkStatus, int]:
        """How many items the queue has in each status (every status present)."""
        ...

    async def next_due(self, queues: Sequence[str]) -> float | None:
        """When the earliest pending item (or running lease) of ``queues`` falls due,
        of those a claim may take then: items held back by their group are left out."""
        ...

    async def purge(self, queue: str, before: float) -> int:
        """Forget done and dead items that finished before ``before``; how many.

        Their keys become unknown: this is where the idempotency window ends.
        Pending and running items are never purged.
        """
        ...

    async def drop(self, queue: str) -> int:
        """Forget a whole queue, whatever its items' states; how many items it had."""
        ...


def check_name(what: str, name: str) -> None:
    """Refuse an empty or overlong queue name, key or group, or one with control characters."""
    if not name or len(name) > MAX_NAME or not name.isprintable():
        raise InvalidArgument(
            f"a work {what} must be 1-{MAX_NAME} printable characters, not {name[:40]!r}"
        )


__all__ = ["MAX_NAME", "WORK_STATUSES", "WorkItem", "WorkQueue", "WorkStatus", "check_name"]
