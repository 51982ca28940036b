"""``polyport bench cluster``: events across nodes on a shared engine, against its own client.

For each engine (PostgreSQL, Redis, NATS JetStream) and each node count, the
lab measures two targets back to back, each in a fresh namespace on the
engine (:mod:`polyport.bench.cluster_engines`), removed afterwards:

* **polyport**: N node processes on the engine
  (:mod:`polyport.bench.cluster_apps`), as ``polyport serve --engine`` runs
  them; one SSE subscriber on every node, all in one client process
  (:mod:`polyport.bench.cluster_clients`); every node publishes its share of
  the offered rate (``rate / N``), each tick its own ``publish`` call;
* **bare**: N processes of the engine's own client
  (:mod:`polyport.bench.cluster_bare`), each publishing its share the same
  way and consuming every tick itself — the work polyport does, without it.

Every subscriber must receive every tick of every publisher: the subscriber
ledgers (:class:`~polyport.bench.cluster_ticks.Receipts`) count the lost and
the duplicated, and time each measured tick from its publish call (its
``ts``) to its arrival, cross-node apart from local. A run publishes each
node's primer until every subscriber has every primer, then ticks for
``warmup`` seconds (not timed) and ``duration`` seconds (timed), and waits
until every subscriber has every tick, or ``DRAIN`` more seconds.

With ``repeats`` above one, rounds repeat the whole sequence, polyport first
in even rounds and the bare client first in odd ones; each figure is the
median of the rounds (:mod:`polyport.bench.cluster_report`).
"""

from __future__ import annotations

import asyncio
import http.client
import importlib.util
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import chain
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from polyport.bench.clients import ClientProcess
from polyport.bench.cluster_apps import READY_PATH
from polyport.bench.cluster_engines import (
    DEFAULT_URLS,
    ENGINES,
    bare_url,
    create_bare,
    drop,
    namespaced,
    new_namespace,
    server_version,
    unreachable,
)
from polyport.bench.cluster_report import ClusterCase, ClusterReport, ClusterRun
from polyport.bench.cluster_ticks import Paced
from polyport.bench.pyload import percentile
from polyport.bench.report import machine_info
from polyport.bench.targets import TargetServer, process_cpu_seconds
from polyport.core.errors import ConfigError, MissingExtra

if importlib.util.find_spec("matplotlib") is None:
    raise MissingExtra("bench", "the benchmark lab")

#: Each engine's client libraries, and the extra that installs them.
DRIVERS = {
    "postgresql": ("psycopg", "psycopg_pool"),
    "redis": ("redis",),
    "nats": ("nats",),
}
#: Seconds a run waits, after the last publish, for every subscriber to have every tick.
DRAIN = 10.0
#: Seconds the subscribers may take to have every primer, and how often to publish them.
PRIME_WAIT = 2.0
PRIME_ATTEMPTS = 5
#: When the publishers start, after the lab tells them: time for every one to hear it.
START_DELAY = 0.3
#: The library versions a cluster result depends on.
_VERSIONED = (
    "polyport",
    "psycopg",
    "psycopg-pool",
    "redis",
    "nats-py",
    "uvloop",
    "orjson",
    "pydantic",
)


@dataclass(frozen=True, slots=True)
class Plan:
    """What every run of one bench does: the same ticks, at the same pace, on the same lanes."""

    run: str  # the ticks' run id, 12 characters
    rate: float  # offered ticks/s, all publishers together
    warmup: float
    duration: float
    size: int
    channels: str  # "shared": one channel for every node; "node": one channel per node

    def share(self, nodes: int) -> tuple[float, int]:
        """One publisher's rate and its last seq (its tick count), with ``nodes``."""
        rate = self.rate / nodes
        return rate, max(1, round(rate * (self.warmup + self.duration)))

    def lane(self, publisher: int) -> str:
        return "all" if self.channels == "shared" else f"n{publisher}"

    @property
    def subscription(self) -> str:
        """The channel (or pattern) every subscriber subscribes to."""
        return f"bench/{self.run}/" + ("all" if self.channels == "shared" else "+")


class ClusterNode(TargetServer):
    """One polyport node of the bench on a shared engine, in its own process."""

    module = "polyport.bench.cluster_apps"
    targets = {"node": "polyport node"}
    ready_path = READY_PATH

    def __init__(self, engine_url: str) -> None:
        super().__init__("node")
        self.engine_url = engine_url

    def arguments(self) -> list[str]:
        return ["node", self.engine_url]

    def pace(self, body: dict[str, Any], timeout: float) -> Paced:
        """``POST /v1/pace``: publish as ``body`` says; returns once every tick is acknowledged."""
        connection = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            headers = {"Content-Type": "application/json"}
            connection.request("POST", "/v1/pace", orjson.dumps(body), headers)
            response = connection.getresponse()
            answer = response.read()
        except OSError as exc:
            self.check_alive()
            raise ConfigError(f"the polyport node's pace request failed: {exc}") from None
        finally:
            connection.close()
        if response.status != 200:
            raise ConfigError(f"the polyport node answered {response.status}: {answer[:200]!r}")
        return Paced.model_validate_json(answer)


def run_cluster_bench(
    *,
    engines: str | Sequence[str] = ENGINES,
    nodes: str | Sequence[int] = (1, 2, 3),
    rate: float = 5000.0,
    duration: float = 5.0,
    warmup: float = 1.0,
    size: int = 100,
    channels: str = "shared",
    repeats: int = 1,
    urls: dict[str, str | None] | None = None,
    output: Path,
    console: Console,
) -> ClusterReport:
    """Measure every engine with every node count, polyport against the bare client."""
    chosen = _engines(engines)
    counts = _counts(nodes)
    _check("--rate", rate, 1, 100_000)
    _check("--duration", duration, 0.2, 600)
    _check("--warmup", warmup, 0, 60)
    _check("--size", size, 0, 7000)  # a NOTIFY payload holds at most 8,000 bytes
    _check("--repeats", repeats, 1, 20)
    if channels not in ("shared", "node"):
        raise ConfigError(f"--channels must be 'shared' or 'node', not {channels!r}")
    where = {e: (urls or {}).get(e) or DEFAULT_URLS[e] for e in chosen}
    plan = Plan(f"r{uuid.uuid4().hex[:11]}", rate, warmup, duration, size, channels)
    started = datetime.now(UTC)
    machine = machine_info(_VERSIONED)
    options: dict[str, Any] = {
        "engines": chosen,
        "urls": {e: _without_password(u) for e, u in where.items()},
        "nodes": counts,
        "rate": rate,
        "duration": duration,
        "warmup": warmup,
        "size": size,
        "channels": channels,
        "repeats": repeats,
        "subscribers_per_node": 1,
        "drain_seconds": DRAIN,
    }
    console.print(
        f"[bold]polyport bench cluster[/]: {', '.join(chosen)} with "
        f"{', '.join(map(str, counts))} node(s), polyport against each engine's own client; "
        f"{rate:,.0f} ticks/s offered, {warmup:g} s warm-up + {duration:g} s measured, "
        f"{repeats} round(s) · load average {machine.get('load_average_1m')}"
    )
    down = {e: reason for e in chosen if (reason := unreachable(e, where[e]))}
    servers = {e: down.get(e) or server_version(e, where[e]) for e in chosen}
    cases = {(e, n): ClusterCase(e, n, [], []) for e in chosen for n in counts}
    with (
        Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[phase]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        ) as progress,
        tempfile.TemporaryDirectory(prefix="polyport-bench-cluster-") as folder,
    ):
        lab = _Lab(plan, progress, Path(folder))
        for round_ in range(repeats):
            for engine in chosen:
                for count in counts:
                    targets = ("polyport", "bare") if round_ % 2 == 0 else ("bare", "polyport")
                    for target in targets:
                        run = ClusterRun(engine, target, count, round_, rate)
                        if engine in down:
                            run.error = down[engine]
                        else:
                            lab.measure(run, where[engine], repeats)
                        case = cases[engine, count]
                        (case.polyport if target == "polyport" else case.bare).append(run)
    machine["load_average_1m_after"] = _load()
    report = ClusterReport(options, started, machine, list(cases.values()), servers)
    console.print(report.table())
    for note in report.notes():
        console.print(f"[bold yellow]note:[/] {escape(note)}")
    for line in report.goal_lines():
        console.print(line)
    json_path, png_path = report.write(output)
    console.print(f"results: {escape(str(json_path))} · chart: {escape(str(png_path))}")
    return report


class _Lab:
    """Runs one target on one engine with N nodes, and fills its :class:`ClusterRun`."""

    def __init__(self, plan: Plan, progress: Progress, folder: Path) -> None:
        self.plan = plan
        self.progress = progress
        self.folder = folder
        self.task: TaskID | None = None

    def measure(self, run: ClusterRun, url: str, repeats: int) -> None:
        label = f"{run.engine} · {run.nodes} node{'s' if run.nodes > 1 else ''} · {run.target}"
        if repeats > 1:
            label += f" ({run.round + 1}/{repeats})"
        total = self.plan.warmup + self.plan.duration
        self.task = self.progress.add_task(label, total=total, phase="starting")
        measure = self._polyport if run.target == "polyport" else self._bare
        kind = "bench" if run.target == "polyport" else "bare"
        run.namespace = name = new_namespace(kind)
        try:
            measure(run, url, name)
        except ConfigError as exc:
            run.error = str(exc)
        finally:
            self._phase("cleaning up")
            try:
                asyncio.run(drop(run.engine, url, name))
            except Exception as exc:  # the figures stand; the leftover is named
                run.note = f"namespace {name} could not be removed: {exc}"
        summary = "failed" if run.error else _summary(run)
        self.progress.update(self.task, completed=total, phase=summary)

    def _phase(self, phase: str, completed: float | None = None) -> None:
        assert self.task is not None
        self.progress.update(self.task, phase=phase, completed=completed)

    # -- polyport ---------------------------------------------------------------------------

    def _polyport(self, run: ClusterRun, url: str, name: str) -> None:
        plan = self.plan
        rate, last = plan.share(run.nodes)
        with ExitStack() as stack:
            nodes = []
            for i in range(run.nodes):
                self._phase(f"starting node {i + 1}")
                nodes.append(stack.enter_context(ClusterNode(namespaced(run.engine, url, name))))
            config = {
                "nodes": [[n.host, n.port] for n in nodes],
                "channel": plan.subscription,
                "publishers": run.nodes,
                "last": last,
            }
            subscribers = ClientProcess(
                "polyport.bench.cluster_clients",
                orjson.dumps(config).decode(),
                self.folder / "subscribers.stderr",
            )
            stack.callback(subscribers.close)
            self._phase("subscribing")
            ready = subscribers.expect("ready", 30.0)
            if ready is None or ready["error"]:
                raise ConfigError(
                    f"the subscribers could not subscribe: {ready and ready['error']}"
                )

            def body(p: int, first: int, count: int, start_ns: int) -> dict[str, Any]:
                measure_from = start_ns + int(plan.warmup * 1e9)
                return {
                    "run": plan.run,
                    "p": p,
                    "first": first,
                    "count": count,
                    "rate": rate,
                    "size": plan.size,
                    "start_ns": start_ns,
                    "lane": plan.lane(p),
                    "measure_from_ns": measure_from,
                }

            self._phase("priming")
            for _ in range(PRIME_ATTEMPTS):
                for p, node in enumerate(nodes):
                    node.pace(body(p, 0, 1, time.monotonic_ns()), 30.0)
                if subscribers.expect("primed", PRIME_WAIT) is not None:
                    break
            else:
                raise ConfigError("a subscriber never got every node's primer")
            cpu = _cpu(n.pid for n in nodes)
            start_ns = time.monotonic_ns() + int(START_DELAY * 1e9)
            subscribers.tell(f"measure {start_ns + int(plan.warmup * 1e9)}")
            timeout = last / rate + 60.0
            with ThreadPoolExecutor(run.nodes) as pool:
                calls = [
                    pool.submit(node.pace, body(p, 1, last, start_ns), timeout)
                    for p, node in enumerate(nodes)
                ]
                self._publishing(start_ns, lambda: all(c.done() for c in calls))
                paced = [_result(call) for call in calls]
            _excuse([subscribers], paced)
            done = self._drained(subscribers)
            cpu_used = _used(cpu, _cpu(n.pid for n in nodes))
            _fill(run, paced, done["subscribers"], cpu_used)

    # -- the bare client --------------------------------------------------------------------

    def _bare(self, run: ClusterRun, url: str, name: str) -> None:
        plan = self.plan
        rate, last = plan.share(run.nodes)
        self._phase("making the stream")
        asyncio.run(create_bare(run.engine, url, name))
        lanes = [plan.lane(p) for p in range(run.nodes)]
        with ExitStack() as stack:
            clients = []
            for i in range(run.nodes):
                config = {
                    "engine": run.engine,
                    "url": bare_url(run.engine, url),
                    "name": name,
                    "index": i,
                    "run": plan.run,
                    "publishers": run.nodes,
                    "last": last,
                    "rate": rate,
                    "warmup": plan.warmup,
                    "size": plan.size,
                    "lane": lanes[i],
                    "lanes": lanes,
                }
                client = ClientProcess(
                    "polyport.bench.cluster_bare",
                    orjson.dumps(config).decode(),
                    self.folder / f"bare-{i}.stderr",
                )
                stack.callback(client.close)
                clients.append(client)
            self._phase("subscribing")
            for client in clients:
                if client.expect("ready", 30.0) is None:
                    raise ConfigError(f"the bare {run.engine} client did not connect within 30 s")
            self._phase("priming")
            for _ in range(PRIME_ATTEMPTS):
                for client in clients:
                    client.tell("prime")
                if all(c.expect("primed", PRIME_WAIT + 1.0) is not None for c in clients):
                    break
            else:
                raise ConfigError("a bare client never got every process's primer")
            cpu = _cpu(c.process.pid for c in clients)
            start_ns = time.monotonic_ns() + int(START_DELAY * 1e9)
            for client in clients:
                client.tell(f"go {start_ns}")
            answers: list[dict[str, Any] | None] = [None] * len(clients)

            def all_paced() -> bool:
                for i, client in enumerate(clients):
                    if answers[i] is None:
                        answers[i] = client.expect("paced", 0.05)
                return all(a is not None for a in answers)

            self._publishing(start_ns, all_paced, deadline=last / rate + 60.0)
            paced = [Paced.model_validate(a) for a in answers if a is not None]
            _excuse(clients, paced)
            ledgers = [self._drained(c)["subscribers"][0] for c in clients]
            cpu_used = _used(cpu, _cpu(c.process.pid for c in clients))
            _fill(run, paced, ledgers, cpu_used)

    # -- both -------------------------------------------------------------------------------

    def _publishing(
        self, start_ns: int, finished: Callable[[], bool], deadline: float | None = None
    ) -> None:
        """Show the publishing until ``finished()``; a ConfigError past ``deadline`` s."""
        total = self.plan.warmup + self.plan.duration
        while not finished():
            elapsed = max(0.0, (time.monotonic_ns() - start_ns) / 1e9)
            phase = "warm-up" if elapsed < self.plan.warmup else "measuring"
            self._phase(phase, min(elapsed, total))
            if deadline is not None and elapsed > deadline:
                raise ConfigError(f"the publishers did not finish within {deadline:.0f} s")
            time.sleep(0.1)
        self._phase("draining", total)

    def _drained(self, client: ClientProcess) -> dict[str, Any]:
        """A client's ``done``: once it has every tick, or what it has after ``DRAIN`` s."""
        done = client.expect("done", DRAIN)
        if done is None:
            client.stop()
            done = client.expect("done", 10.0)
        if done is None:
            raise ConfigError("a subscriber did not report its ledger")
        return done


def _excuse(receivers: list[ClientProcess], paced: list[Paced]) -> None:
    """Tell every receiver which ticks it is not owed: those refused, and those not sent."""
    for p, publisher in enumerate(paced):
        for first, last in (*publisher.failed, *publisher.unsent):
            for receiver in receivers:
                receiver.tell(f"excuse {p} {first} {last}")


def _fill(
    run: ClusterRun,
    paced: list[Paced],
    ledgers: list[dict[str, Any]],
    cpu: float | None,
) -> None:
    """A run's figures from what its publishers did and its subscribers' ledgers."""
    run.published = sum(p.published for p in paced)
    run.publish_errors = sum(p.errors for p in paced)
    run.publish_error = next((p.error for p in paced if p.error), None)
    run.unsent = sum(last - first + 1 for p in paced for first, last in p.unsent)
    sent = [p for p in paced if p.published]
    if sent:
        first, final = min(p.first_ns for p in sent), max(p.last_ns for p in sent)
        if final > first:
            run.published_per_second = run.published / ((final - first) / 1e9)
        run.behind_ms = max(p.behind_ms for p in sent)
        run.call_p50_us = percentile(sorted(p.call_p50_us for p in sent), 0.5)
        run.call_p99_us = max(p.call_p99_us for p in sent)
    run.subscribers = len(ledgers)
    run.expected = run.subscribers * sum(p.measured for p in paced)
    run.delivered = sum(int(ledger["measured_received"]) for ledger in ledgers)
    run.lost = sum(int(ledger["missing"]) for ledger in ledgers)
    run.duplicates = sum(int(ledger["duplicates"]) for ledger in ledgers)
    run.unacknowledged = sum(int(ledger["unacknowledged"]) for ledger in ledgers)
    notes = [ledger["lost_stream"] for ledger in ledgers if ledger.get("lost_stream")]
    unknown = sum(int(ledger["unknown"]) for ledger in ledgers)
    if unknown:
        notes.append(f"{unknown:,} deliveries were not ticks of this run")
    run.note = "; ".join(notes) or run.note
    firsts = [ledger["first_ts"] for ledger in ledgers if ledger["first_ts"]]
    lasts = [ledger["last_arrival"] for ledger in ledgers if ledger["last_arrival"]]
    if firsts and lasts and max(lasts) > min(firsts):
        run.seconds = (max(lasts) - min(firsts)) / 1e9
        run.delivered_per_second = run.delivered / run.seconds
    cross = sorted(chain.from_iterable(ledger["cross_us"] for ledger in ledgers))
    local = sorted(chain.from_iterable(ledger["local_us"] for ledger in ledgers))
    run.cross_samples, run.local_samples = len(cross), len(local)
    if cross:
        run.cross_p50_ms = percentile(cross, 0.50) / 1000
        run.cross_p99_ms = percentile(cross, 0.99) / 1000
        run.cross_max_ms = cross[-1] / 1000
    if local:
        run.local_p50_ms = percentile(local, 0.50) / 1000
        run.local_p99_ms = percentile(local, 0.99) / 1000
    run.cpu_seconds = cpu
    if cpu is not None and run.published:
        run.cpu_us_per_tick = cpu / run.published * 1e6


def _result(call: Future[Paced]) -> Paced:
    try:
        return call.result()
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"a publisher failed: {exc}") from exc


def _summary(run: ClusterRun) -> str:
    rate = run.delivered_per_second
    p99 = run.cross_p99_ms if run.cross_samples else run.local_p99_ms
    text = "no deliveries" if rate is None else f"{rate:,.0f} deliveries/s"
    if p99 is not None:
        text += f" · p99 {p99:.1f} ms"
    if run.lost or run.duplicates:
        text += f" · {run.lost:,} lost, {run.duplicates:,} duplicated"
    return text


def _cpu(pids: Iterable[int]) -> float | None:
    """CPU seconds the processes ``pids`` have used together; None off Linux."""
    total = 0.0
    for pid in pids:
        used = process_cpu_seconds(pid)
        if used is None:
            return None
        total += used
    return total


def _used(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


def _engines(engines: str | Sequence[str]) -> list[str]:
    names = [e.strip() for e in engines.split(",")] if isinstance(engines, str) else list(engines)
    names = [e for e in names if e]
    unknown = [e for e in names if e not in ENGINES]
    if unknown or not names:
        raise ConfigError(f"--engines takes some of {', '.join(ENGINES)}, not {engines!r}")
    for engine in names:
        if any(importlib.util.find_spec(module) is None for module in DRIVERS[engine]):
            raise MissingExtra(engine, f"the {engine} engine")
    return list(dict.fromkeys(names))


def _counts(nodes: str | Sequence[int]) -> list[int]:
    try:
        counts = [int(n) for n in nodes.split(",")] if isinstance(nodes, str) else list(nodes)
    except ValueError:
        raise ConfigError(f"--nodes takes node counts such as 1,2,3, not {nodes!r}") from None
    if not counts or any(not 1 <= n <= 8 for n in counts):
        raise ConfigError(f"--nodes takes counts from 1 to 8, not {nodes!r}")
    return sorted(set(counts))


def _check(option: str, value: float, lowest: float, highest: float) -> None:
    if not lowest <= value <= highest:
        raise ConfigError(f"{option} must be between {lowest:g} and {highest:g}, not {value:g}")


def _without_password(url: str) -> str:
    from polyport.engines import redacted

    return redacted(url)


def _load() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None
