"""The receiving side of ``polyport bench webhooks``: acknowledgements per second.

The lab starts a node in a process of its own
(:mod:`polyport.bench.webhooks_receiver_target`: one Standard Webhooks
receiver, ``POST /hooks/bench``, a handler that only counts, the SQLite inbox
in a temporary file) and drives it with a load generator of
:mod:`polyport.bench.loadgen` (wrk when installed, else the Python one), each
request a pre-signed delivery with an id of its own:

1. **new ids**: every answer is a verified, validated, committed
   ``200 accepted``; acknowledgements/s, p50/p99, the node's CPU (user +
   system, from ``/proc``) per acknowledgement;
2. **drain**: handlers share the node's event loop with the acknowledgements,
   which come first, so under load most deliveries wait in the inbox; the lab
   waits until the handler has run every stored one, and reports the rate at
   which the rest went (and the node's CPU per delivery meanwhile);
3. **repeated ids**: only ids stored in phase 1, round and round; every
   answer is ``200 duplicate``.

Acknowledged is not enough: after phase 1 the inbox must hold at least every
acknowledged id (its row count, through ``GET /hooks/bench/deliveries``), the
handler must have run each stored row once, and phase 3 must store nothing
new — otherwise the run is a :class:`~polyport.core.errors.ConfigError`, not
figures.
"""

from __future__ import annotations

import http.client
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from polyport.bench.loadgen import LoadGenerator, choose_generator, run_load
from polyport.bench.webhooks_receiver_target import (
    CALL,
    HOST,
    RECEIVER,
    ReceiverNode,
    SignedLoad,
    signed_ids,
)
from polyport.core.errors import ConfigError

#: Ids signed per second of a phase: more than a node acknowledges, so none goes round.
IDS_PER_SECOND = 10_000
#: How long the handler may take to run what is left in the inbox after phase 1.
DRAIN_TIMEOUT = 120.0


@dataclass(frozen=True, slots=True)
class AckPhase:
    """One measured run of the generator against the receiver."""

    acknowledgements: int  # answers received in the window, errors included
    errors: int
    seconds: float
    per_s: float
    p50_ms: float
    p99_ms: float
    #: The node's CPU time (user + system) per answer, in µs; None where /proc is missing.
    cpu_us: float | None


@dataclass(frozen=True, slots=True)
class ReceiverFigures:
    """What the receiver bench measured, and what the inbox held afterwards."""

    generator: str
    generator_version: str
    connections: int
    phase_seconds: float  # each phase's length as the generator runs it (wrk: whole seconds)
    new_ids: AckPhase
    duplicates: AckPhase
    #: Inbox rows after phase 1 (at least every acknowledged id), all handled.
    stored: int
    handled_during_load: int
    left_after_load: int
    drain_seconds: float
    #: Deliveries the handler ran per second once the load stopped (None: nothing was left).
    drained_per_s: float | None
    drain_cpu_us: float | None


def run_receiver_bench(
    *,
    seconds: float,
    connections: int,
    generator: str,
    status: Callable[[str], None] = lambda text: None,
) -> ReceiverFigures:
    """Measure ``POST /hooks/bench`` for new and repeated ids; check the inbox after."""
    load = check_options(seconds, connections, generator)
    measured = load.seconds(seconds)
    status("receiver: starting the node")
    with (
        ReceiverNode("polyport") as node,
        tempfile.TemporaryDirectory(prefix="polyport-hookbench-load-") as scratch,
    ):
        ids = signed_ids(math.ceil(measured) * IDS_PER_SECOND + connections)

        status(f"receiver: new ids, {connections} connections, {measured:g} s")
        new = _phase(SignedLoad(load, ids), node, connections, measured, Path(scratch) / "new")
        ended, during = time.time(), _tally(node.port)["handled"]
        acknowledged = new.acknowledgements - new.errors
        stored = _stored(node.port)
        if stored < acknowledged:
            raise ConfigError(
                f"the receiver acknowledged {acknowledged} new ids but stored {stored}: "
                "an id lost, or the prepared ids went round"
            )

        status("receiver: draining the inbox")
        cpu = node.cpu_seconds()
        drain = _drain(node, stored)
        cpu_after = node.cpu_seconds()
        left = stored - during
        drain_seconds = max(0.0, drain["last"] - ended) if left else 0.0
        counts = _counts(node.port)
        if counts["done"] != stored or drain["handled"] != stored:
            raise ConfigError(
                f"the handler ran {drain['handled']} times for {stored} stored deliveries "
                f"(inbox: {counts})"
            )

        # Only ids stored in phase 1: at most `connections` of the last ones sent were
        # still on their way when the generator stopped.
        seen = ids[: max(1, min(stored, acknowledged) - connections)]
        status(f"receiver: repeated ids, {connections} connections, {measured:g} s")
        again = _phase(SignedLoad(load, seen), node, connections, measured, Path(scratch) / "dup")
        if (after := _stored(node.port)) != stored:
            raise ConfigError(f"repeated ids stored {after - stored} new deliveries")

    return ReceiverFigures(
        generator=load.name,
        generator_version=load.version,
        connections=connections,
        phase_seconds=measured,
        new_ids=new,
        duplicates=again,
        stored=stored,
        handled_during_load=during,
        left_after_load=left,
        drain_seconds=round(drain_seconds, 3),
        drained_per_s=round(left / drain_seconds, 1) if left and drain_seconds > 0 else None,
        drain_cpu_us=(
            round((cpu_after - cpu) / left * 1e6, 1)
            if left and cpu is not None and cpu_after is not None
            else None
        ),
    )


def check_options(seconds: float, connections: int, generator: str) -> LoadGenerator:
    """The generator for these options; :class:`ConfigError` when one is unusable."""
    if seconds <= 0:
        raise ConfigError(f"the receiver phases need a positive duration, not {seconds:g}")
    if not 1 <= connections <= 10_000:
        raise ConfigError(f"connections must be between 1 and 10000, not {connections}")
    return choose_generator(generator)


def _phase(
    load: LoadGenerator, node: ReceiverNode, connections: int, seconds: float, scratch: Path
) -> AckPhase:
    scratch.mkdir()
    cpu = node.cpu_seconds()
    result = run_load(
        load,
        HOST,
        node.port,
        CALL,
        connections,
        seconds,
        scratch,
        label=node.label,
        tick=lambda elapsed: None,
    )
    cpu_after = node.cpu_seconds()
    node.check_alive()
    return AckPhase(
        acknowledgements=result.requests,
        errors=result.errors,
        seconds=round(result.seconds, 3),
        per_s=round(result.requests_per_second, 1),
        p50_ms=round(result.p50_ms, 3),
        p99_ms=round(result.p99_ms, 3),
        cpu_us=(
            round((cpu_after - cpu) / result.requests * 1e6, 1)
            if result.requests and cpu is not None and cpu_after is not None
            else None
        ),
    )


def _drain(node: ReceiverNode, stored: int) -> dict[str, Any]:
    """Wait until the handler has run ``stored`` deliveries; its last tally."""
    deadline = time.monotonic() + DRAIN_TIMEOUT
    while (tally := _tally(node.port))["handled"] < stored:
        node.check_alive()
        if time.monotonic() > deadline:
            raise ConfigError(
                f"the handler ran {tally['handled']} of {stored} deliveries "
                f"in {DRAIN_TIMEOUT:g} s after the load"
            )
        time.sleep(0.1)
    return tally


def _counts(port: int) -> dict[str, int]:
    """The receiver's inbox rows by status, as its admin listing gives them."""
    counts: dict[str, int] = _call(port, "GET", f"/hooks/{RECEIVER}/deliveries?limit=1")["counts"]
    return counts


def _stored(port: int) -> int:
    return sum(_counts(port).values())


def _tally(port: int) -> dict[str, Any]:
    tally: dict[str, Any] = _call(port, "POST", "/v1/tally", {})
    return tally


def json_request(
    port: int, method: str, path: str, body: Any = None, *, timeout: float
) -> tuple[int, Any]:
    """One JSON request to a bench node on loopback: (status, the parsed body or None).

    A node that cannot be reached raises :class:`OSError`.
    """
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        payload = orjson.dumps(body) if body is not None else None
        headers = {"content-type": "application/json"} if payload is not None else {}
        connection.request(method, path, body=payload, headers=headers)
        response = connection.getresponse()
        data = response.read()
        return response.status, orjson.loads(data) if data else None
    finally:
        connection.close()


def _call(port: int, method: str, path: str, body: Any = None) -> Any:
    try:
        status, answer = json_request(port, method, path, body, timeout=30)
    except OSError as exc:
        raise ConfigError(f"the receiver node did not answer {method} {path}: {exc}") from None
    if status != 200:
        raise ConfigError(f"the receiver node answered {method} {path} with {status}")
    return answer


def markdown_lines(f: ReceiverFigures) -> list[str]:
    """The receiver's part of ``webhooks.md``."""

    def cpu(value: float | None) -> str:
        return f"{value:,.0f}" if value is not None else "n/a"

    def row(label: str, p: AckPhase) -> str:
        return (
            f"| {label} | {p.acknowledgements:,} | {p.per_s:,.0f} | {p.p50_ms:.2f} "
            f"| {p.p99_ms:.2f} | {p.errors} | {cpu(p.cpu_us)} |"
        )

    drained = (
        f"drained at {f.drained_per_s:,.0f} deliveries/s "
        f"({cpu(f.drain_cpu_us)} µs of node CPU each)"
        if f.drained_per_s is not None
        else "nothing was left to drain"
    )
    return [
        "### Receiver acknowledgements",
        "",
        f"`POST /hooks/{RECEIVER}` (Standard Webhooks, a counting handler, SQLite inbox) "
        f"driven by {f.generator} ({f.generator_version}), {f.connections} connections, "
        f"{f.phase_seconds:g} s per phase.",
        "",
        "| ids | acknowledgements | per s | p50 ms | p99 ms | errors | node CPU µs/ack |",
        "|---|---:|---:|---:|---:|---:|---:|",
        row("new (`200 accepted`)", f.new_ids),
        row("repeated (`200 duplicate`)", f.duplicates),
        "",
        f"Inbox after the new ids: {f.stored:,} deliveries stored (every acknowledged id), "
        f"each handled once. The handler ran {f.handled_during_load:,} during the load; "
        f"the {f.left_after_load:,} left {drained}.",
        "",
    ]
