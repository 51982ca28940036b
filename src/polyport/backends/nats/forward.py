"""Handing a channel's appends to the node that writes it, instead of racing that node.

Several nodes appending to one channel race for each message (see
:mod:`.writer`): every round one wins and the others lose, and a node can
lose many rounds in a row. `polyport bench cluster` measured it (three nodes
on one channel, 5,000 events/s in all): the events at the 99th percentile of
publish→deliver had waited on their node through 10 to 13 lost rounds, 25 to
80 ms, about nine tenths of their latency; the delivery to the other nodes
took 4 to 5 ms of it.

So a node whose message lost a round stops racing: the channel's last
message names the node that wrote it (its ``Nats-Msg-Id`` begins with that
writer's nonce), and from then on this node *forwards* its appends to that
one, the channel's *leader* — a core NATS request to
``polyport-append.{stream}.{nonce}``, the events as a pack (see
:mod:`.messages`) with where each call's run begins. The leader queues them
like its own, sends them in its next message and answers
with where each run was stored; a channel then has one writer, and no round
is lost. The leader answers for each run:

* **stored**, with its events' places (stream sequence, index) and the
  headers of the messages that hold them;
* **back**: not sent, and never will be — it was not the channel's writer
  any more (it forwards too), the run waited longer than :data:`WINDOW` in
  its queue, or the leader stopped or lost NATS first; the forwarding node
  takes the run back and races for it again;
* **failed**, with why: the run's append is Unavailable, as the leader's own
  would be (stored or not, as the leader's own failures say).

No answer (``no responders``: the leader stopped) is *back* for every run. No
answer within :data:`WINDOW` plus the client's timeout fails the runs
(Unavailable, maybe stored), and the node races again. A node that forwards
refuses forwards for that channel (no chains), and a node holding others'
runs never forwards them. Each node keeps at most one forward or message in
flight per channel, so its appends keep their order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from polyport.backends.nats.appends import Batch, Run, Tail, TakenBack, fail_runs
from polyport.backends.nats.client import JetStreamClient, engine_errors, status, unavailable
from polyport.backends.nats.messages import LAST_INDEX, Entry, Meta, pack, stream_seq_of, unpack
from polyport.core.errors import PolyportError, Unavailable
from polyport.core.events import check_channel

if TYPE_CHECKING:
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription

log = logging.getLogger("polyport.backends.nats")

#: Seconds a forwarded run may wait in the leader's queue before it is taken back unsent.
WINDOW = 1.0
#: The header of a forward: ``{channel} {epoch} {events per run, comma-separated}``.
HEADER = "Polyport-Forward"
#: Runs one forward carries at most (a message holds at most 1,024 events).
MAX_RUNS = 1024


def inbox(stream: str, nonce: str) -> str:
    """The subject on which the writer ``nonce`` of the log ``stream`` takes forwards."""
    return f"polyport-append.{stream}.{nonce}"


def writer_of(msg: Msg) -> str | None:
    """The nonce of the writer that sent a message of the log (None: not a writer's id)."""
    msg_id = (msg.headers or {}).get("Nats-Msg-Id", "")
    nonce, dash, _ = msg_id.partition("-")
    return nonce if dash and nonce else None


@dataclass(frozen=True, slots=True)
class Forward:
    """A forward as the leader reads it: a channel, its epoch, and each call's run."""

    channel: str
    epoch: str
    runs: list[list[Entry]]


def request(
    channel: str, epoch: str, runs: Sequence[Sequence[Entry]]
) -> tuple[dict[str, str], bytes]:
    """The headers and payload of a forward of ``runs`` on ``channel``."""
    counts = ",".join(str(len(run)) for run in runs)
    return {HEADER: f"{channel} {epoch} {counts}"}, pack([e for run in runs for e in run])


def read_request(msg: Msg) -> Forward | None:
    """The forward ``msg`` carries; None if it is not one."""
    value = (msg.headers or {}).get(HEADER)
    if value is None:
        return None
    try:
        channel, epoch, counts_text = value.split(" ")
        counts = [int(n) for n in counts_text.split(",")]
        if not 0 < len(counts) <= MAX_RUNS or min(counts) < 1:
            return None
        check_channel(channel)
        entries = unpack(msg.data, sum(counts))
    except (ValueError, PolyportError):
        return None
    runs, start = [], 0
    for count in counts:
        runs.append(entries[start : start + count])
        start += count
    return Forward(channel, epoch, runs)


#: Where a stored run's events are: ``(stream sequence, index of the first, how many)``.
Placement = list[tuple[int, int, int]]


@dataclass(frozen=True, slots=True)
class Stored:
    """A run stored by the leader: where its events are."""

    at: Placement


@dataclass(frozen=True, slots=True)
class Back:
    """A run not sent, which never will be: the forwarding node sends it itself."""

    why: str


@dataclass(frozen=True, slots=True)
class Failed:
    """A run whose append failed on the leader (Unavailable there, so here)."""

    why: str


Outcome = Stored | Back | Failed


def answer(outcomes: Sequence[Outcome], metas: Sequence[Meta]) -> bytes:
    """The leader's answer: each run's outcome, and the messages holding stored ones."""
    runs: list[Any] = []
    for outcome in outcomes:
        if isinstance(outcome, Stored):
            runs.append(["at", [list(segment) for segment in outcome.at]])
        else:
            runs.append(["back" if isinstance(outcome, Back) else "failed", outcome.why])
    messages = [[m.seq, m.offset, m.count, m.prev, m.time] for m in metas]
    return orjson.dumps({"runs": runs, "messages": messages})


def read_answer(data: bytes, runs: int) -> tuple[list[Outcome], dict[int, Meta]]:
    """Each of ``runs`` runs' outcome, and the messages by stream sequence; ValueError if
    ``data`` is not an answer to that many runs, or places events in no message named."""
    try:
        document = orjson.loads(data)
        metas = {
            int(seq): Meta(int(seq), int(offset), int(count), int(prev), float(time))
            for seq, offset, count, prev, time in document["messages"]
        }
        outcomes: list[Outcome] = []
        for kind, value in document["runs"]:
            if kind == "at":
                at = [(int(seq), int(index), int(n)) for seq, index, n in value]
                if not at or any(seq not in metas for seq, _, _ in at):
                    raise ValueError("a run placed in no message named")
                outcomes.append(Stored(at))
            elif kind in ("back", "failed"):
                outcomes.append((Back if kind == "back" else Failed)(str(value)))
            else:
                raise ValueError(f"unknown outcome {kind!r}")
    except (KeyError, TypeError, orjson.JSONDecodeError) as exc:
        raise ValueError(f"not an answer to a forward: {exc}") from exc
    if len(outcomes) != runs:
        raise ValueError(f"an answer for {len(outcomes)} runs, not {runs}")
    return outcomes, metas


# -- both ends, for one writer --------------------------------------------------------


class Queues(Protocol):
    """What forwarding needs of the node's :class:`~.writer.Writer`."""

    @property
    def open(self) -> bool:
        """Whether it takes appends."""
        ...

    def tail_of(self, channel: str) -> Tail: ...

    def wake(self, tail: Tail) -> None:
        """Have the channel's queue sent."""
        ...

    def place(self, tail: Tail, run: Run, at: Placement, metas: dict[int, Meta]) -> None:
        """A run is stored ``at`` those places (ValueError if they do not hold it)."""
        ...

    def remember(self, meta: Meta) -> None:
        """A message holding this node's events is stored (see ``Writer.is_end``)."""
        ...

    def trouble(self) -> None:
        """Check the stream before the next append."""
        ...


class Forwarder:
    """Forwards a writer's runs to a channel's leader, and takes other nodes' forwards."""

    def __init__(self, client: JetStreamClient, stream: str, nonce: str, queues: Queues) -> None:
        self.client = client
        self.stream = stream
        self.queues = queues
        self._subject = inbox(stream, nonce)
        self._inbox: Subscription | None = None
        self._answering: set[asyncio.Task[None]] = set()  # answers to forwards, awaited

    async def start(self) -> None:
        """Take other nodes' forwards from now on."""
        with engine_errors("take forwarded appends"):
            self._inbox = await self.client.conn.subscribe(self._subject, cb=self._take)
            await self.client.conn.flush(timeout=max(1, int(self.client.timeout)))  # it listens

    async def stop(self) -> None:
        """Take no more forwards (call before failing the queues)."""
        inbox, self._inbox = self._inbox, None
        if inbox is not None:
            with contextlib.suppress(Exception):
                await inbox.unsubscribe()

    async def answered(self) -> None:
        """Wait (a second at most) for the answers to forwards whose runs are settled."""
        if self._answering:
            await asyncio.wait(set(self._answering), timeout=1.0)

    # -- this node forwarding ---------------------------------------------------------

    async def send(self, tail: Tail, runs: list[Run]) -> None:
        """Hand ``runs`` to the channel's leader (``tail.leader``) and settle them by its
        answer: stored, failed, or back in the queue, the leader forgotten (this node then
        sends them itself)."""
        leader = tail.leader
        assert leader is not None
        answer: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()

        def answered(msg: Msg) -> None:
            if not answer.done():
                answer.set_result(msg)

        reply, token = self.client.reply_to(answered)
        headers, payload = request(tail.channel, tail.epoch, [run.entries for run in runs])
        tail.forwarding = runs
        try:
            try:
                await self.client.send(inbox(self.stream, leader), payload, reply, headers)
            except Unavailable:
                tail.queue.extendleft(reversed(runs))  # not sent: failed with the queue
                raise
            try:
                async with asyncio.timeout(WINDOW + self.client.timeout):
                    msg = await answer
            except TimeoutError:
                # The leader may have stored them, or may yet: nothing can be said.
                tail.leader, tail.known = None, False
                fail_runs(runs, unavailable("did not acknowledge an append in time"))
                return
        finally:
            tail.forwarding = None
            self.client.drop(token)
        if status(msg) is not None:  # no responders: the leader is gone, nothing was sent
            self._take_back(tail, runs)
            return
        try:
            outcomes, metas = read_answer(msg.data, len(runs))
            for run, outcome in zip(runs, outcomes, strict=True):
                if isinstance(outcome, Stored):
                    self.queues.place(tail, run, outcome.at, metas)
        except ValueError:
            log.warning("a forwarded append was answered with %r", msg.data[:200])
            tail.leader, tail.known = None, False
            fail_runs(runs, unavailable("answered an append wrongly"))  # the placed have theirs
            return
        for run, outcome in zip(runs, outcomes, strict=True):
            if isinstance(outcome, Failed):
                run.batch.fail(unavailable(outcome.why))
        for meta in metas.values():
            self.queues.remember(meta)
            if meta.seq > tail.seq:  # the channel's end as far as known (read before a round)
                tail.last, tail.offset, tail.known = meta, meta.last, False
        self._take_back(
            tail, [r for r, o in zip(runs, outcomes, strict=True) if isinstance(o, Back)]
        )

    def _take_back(self, tail: Tail, runs: list[Run]) -> None:
        """Runs the leader did not send: first in the queue again, for this node to send."""
        if runs:
            tail.leader = None
            tail.queue.extendleft(reversed(runs))
            self.queues.trouble()  # another epoch there? The stream is looked at first

    # -- another node forwarding ------------------------------------------------------

    async def _take(self, msg: Msg) -> None:
        """Another node's forward: queue its runs as this node's, answer once each is settled.
        Back at once if this node does not write the channel (it forwards itself)."""
        forward = read_request(msg)
        if forward is None or not msg.reply:
            return
        tail = self.queues.tail_of(forward.channel)
        if (
            not self.queues.open
            or not self.client.connected
            or tail.leader is not None
            or tail.epoch != forward.epoch
        ):
            await self._answer(msg.reply, [Back("not the channel's writer")] * len(forward.runs))
            return
        deadline = asyncio.get_running_loop().time() + WINDOW
        runs = []
        for entries in forward.runs:
            run = Run(Batch(len(entries), forwarded=True), deadline)
            for index, entry in enumerate(entries):
                run.add(index, entry)
            runs.append(run)
        tail.queue.extend(runs)
        self.queues.wake(tail)
        task = asyncio.create_task(self._settle(msg.reply, runs), name="polyport-nats-forward")
        self._answering.add(task)
        task.add_done_callback(self._answering.discard)

    async def _settle(self, reply: str, runs: list[Run]) -> None:
        """Answer a forward once each of its runs is stored, taken back or failed."""
        outcomes: list[Outcome] = []
        metas: dict[int, Meta] = {}
        for run in runs:
            try:
                events = await run.batch.done
            except TakenBack as exc:
                outcomes.append(Back(exc.message))
            except Unavailable as exc:
                outcomes.append(Failed(exc.message))
            else:
                at: Placement = []
                for event in events:
                    seq, index = stream_seq_of(event.seq), event.seq & LAST_INDEX
                    if at and at[-1][0] == seq:
                        at[-1] = (seq, at[-1][1], at[-1][2] + 1)
                    else:
                        at.append((seq, index, 1))
                outcomes.append(Stored(at))
                metas.update(run.batch.metas or {})
        await self._answer(reply, outcomes, list(metas.values()))

    async def _answer(
        self, reply: str, outcomes: Sequence[Outcome], metas: Sequence[Meta] = ()
    ) -> None:
        with contextlib.suppress(Unavailable):  # unanswered, the other node gives up in time
            await self.client.publish(reply, answer(outcomes, metas))
