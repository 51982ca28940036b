"""The RPC bench's results: two tables of calls, a table of streams, goals, claims, JSON, chart.

Ratios are between figures of the same run: polyport's gRPC over the plain
grpcio servicer, polyport's SOAP over Spyne, JSON-RPC over polyport's own
REST, and the batched event stream against the goal of 100,000 events/s.
"""

from __future__ import annotations

import shutil
import statistics
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from rich import box
from rich.table import Table

from polyport.bench.report import TIMES, write_results
from polyport.bench.rpc_calls import PAYLOADS, Payload
from polyport.bench.wire import WireBytes

#: The goals of the issue, on the 2-core machine.
GOAL_GRPC_VS_GRPCIO = 1.0
GOAL_EVENTS_PER_SECOND = 100_000.0
GOAL_SOAP_VS_SPYNE = 5.0
GOAL_JSONRPC_VS_REST = 0.9

CLAIMS = {
    "guide_size": f"protobuf is about 5{TIMES} smaller than JSON",
    "guide_speed": f"gRPC is 7 to 10{TIMES} faster than REST",
    "issue_grpcio": "a plain grpcio asyncio servicer: ~7,300 unary calls/s at 64 in flight, "
    "~20,000 messages/s on a server stream (one event per message)",
    "issue_spyne": "Spyne: ~1,400 calls/s here (the guide says 1k)",
}

#: What each call's ratio column compares it with (same payload, same run).
REFERENCES = {
    "jsonrpc": "rest",
    "xmlrpc": "rest",
    "grpc": "grpcio",
    "grpcio-uvloop": "grpcio",
    "soap": "spyne",
}


def paired_ratio(runs: list[float], reference: list[float]) -> float | None:
    """The median of the rounds' ratios, ``runs[i] / reference[i]``; None if they do not pair.

    Each round measures a call and its reference back to back (see
    :func:`polyport.bench.rpc.schedule`), so a round's ratio is free of the
    host's drift between rounds, which moves both sides alike. The ratio of the
    two median rounds mixes rounds minutes apart; it is kept beside this one.
    """
    if not runs or len(runs) != len(reference) or not all(r > 0 for r in reference):
        return None
    return statistics.median(a / b for a, b in zip(runs, reference, strict=True))


@dataclass(slots=True)
class CallFigures:
    """One call's figures: its representative run (median calls/s) and every run's rate."""

    name: str
    label: str
    target: str
    payload: Payload
    generator: str
    calls: int = 0
    errors: int = 0
    seconds: float = 0.0
    calls_per_second: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    server_cpu_seconds: float | None = None
    server_cpu_share: float | None = None
    cpu_us_per_call: float | None = None
    client_cpu_share: float | None = None  # the gRPC client process (wrk's is not read)
    wire: WireBytes | None = None
    runs: list[float] = field(default_factory=list)
    reference: str | None = None  # the call of the ratio column
    ratio: float | None = None  # the median of the rounds' ratios (see paired_ratio)
    ratio_of_medians: float | None = None  # the median round's rate over the reference's


@dataclass(slots=True)
class StreamFigures:
    """One server stream's figures: events (or items) per second to one subscriber."""

    name: str
    label: str
    target: str
    batched: bool
    events: int = 0
    messages: int = 0
    seconds: float = 0.0
    events_per_second: float = 0.0
    events_per_message: float = 0.0
    payload_per_event: float = 0.0  # gRPC messages with their 5-byte prefix, per event
    wire_per_event: float | None = None  # server → client through the counting proxy
    server_cpu_seconds: float | None = None
    cpu_us_per_event: float | None = None
    client_cpu_share: float | None = None
    runs: list[float] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Goal:
    text: str
    measured: str
    met: bool | None  # None: not measured (a target missing)


@dataclass(slots=True)
class RpcReport:
    """Everything one ``polyport bench rpc`` run measured, and how."""

    started: datetime
    machine: dict[str, Any]
    options: dict[str, Any]
    calls: list[CallFigures]
    streams: list[StreamFigures]
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for call in self.calls:
            call.reference = REFERENCES.get(call.name)
            base = self.call(call.reference, call.payload) if call.reference else None
            if base is not None and base.calls_per_second > 0:
                call.ratio_of_medians = call.calls_per_second / base.calls_per_second
                call.ratio = paired_ratio(call.runs, base.runs) or call.ratio_of_medians

    def call(self, name: str, payload: Payload) -> CallFigures | None:
        return next((c for c in self.calls if c.name == name and c.payload == payload), None)

    def stream(self, name: str) -> StreamFigures | None:
        return next((s for s in self.streams if s.name == name), None)

    # -- goals and claims -------------------------------------------------------------------

    def goals(self) -> list[Goal]:
        return [
            self._ratio_goal("grpc", "gRPC unary", GOAL_GRPC_VS_GRPCIO, "a plain grpcio servicer"),
            self._events_goal(),
            self._ratio_goal("soap", "SOAP", GOAL_SOAP_VS_SPYNE, "Spyne"),
            self._ratio_goal("jsonrpc", "JSON-RPC", GOAL_JSONRPC_VS_REST, "polyport's REST"),
        ]

    def _ratio_goal(self, name: str, what: str, goal: float, baseline: str) -> Goal:
        """Met when the call's calls/s ratio reaches ``goal`` for one User and for the list.

        Beside the verdict: the same ratio by server CPU per call (the baseline's µs over
        ours), the figure a busy neighbour changes least.
        """
        text = f"polyport {what} ≥ {goal:.1f}{TIMES} {baseline}"
        measured = [c for p in PAYLOADS if (c := self.call(name, p)) and c.ratio is not None]
        if not measured:
            return Goal(text, "not measured", None)
        shown = ", ".join(f"{c.ratio:.2f}{TIMES} for {PAYLOADS[c.payload]}" for c in measured)
        by_cpu = [ratio for c in measured if (ratio := self._cpu_ratio(c, c.reference))]
        if len(by_cpu) == len(measured):
            shown += f"; by server CPU per call {' and '.join(by_cpu)}"
        if name == "grpc":
            # The verdict is against the servicer as grpcio's examples run it (the default
            # loop); the same servicer on uvloop, as polyport runs grpc.aio, is shown beside it.
            versus = []
            for c in measured:
                theirs = self.call("grpcio-uvloop", c.payload)
                if theirs is not None and theirs.calls_per_second > 0:
                    paired = paired_ratio(c.runs, theirs.runs)
                    paired = paired or c.calls_per_second / theirs.calls_per_second
                    versus.append(f"{paired:.2f}{TIMES}")
            if versus:
                shown += f"; against grpcio on uvloop {' and '.join(versus)}"
        if any(len(c.runs) > 1 for c in measured):
            medians = " and ".join(
                f"{c.ratio_of_medians:.2f}{TIMES}" for c in measured if c.ratio_of_medians
            )
            shown += f"; the median rounds' ratio {medians}"
        met = all(c.ratio is not None and c.ratio >= goal for c in measured)
        return Goal(text, shown, met)

    def _cpu_ratio(self, call: CallFigures, reference: str | None) -> str | None:
        base = self.call(reference, call.payload) if reference else None
        if base is None or not base.cpu_us_per_call or not call.cpu_us_per_call:
            return None
        return f"{base.cpu_us_per_call / call.cpu_us_per_call:.2f}{TIMES}"

    def _events_goal(self) -> Goal:
        text = f"events over a gRPC server stream ≥ {GOAL_EVENTS_PER_SECOND:,.0f}/s (batched)"
        events = self.stream("events")
        if events is None or not events.events_per_second:
            return Goal(text, "not measured", None)
        measured = (
            f"{events.events_per_second:,.0f}/s live, "
            f"{events.events_per_message:,.0f} events per message"
        )
        if events.cpu_us_per_event:
            measured += f", {events.cpu_us_per_event:.1f} µs of server CPU per event"
        baseline = self.stream("grpcio-events")
        if baseline is not None and baseline.events_per_second:
            ratio = events.events_per_second / baseline.events_per_second
            measured += f"; {ratio:.1f}{TIMES} grpcio's one message per event"
        replay = self.stream("replay")
        if replay is not None and replay.events_per_second:
            measured += f"; {replay.events_per_second:,.0f}/s from history"
        return Goal(text, measured, events.events_per_second >= GOAL_EVENTS_PER_SECOND)

    def goal_lines(self) -> list[str]:
        verdicts = {True: "[bold green]PASS[/]", False: "[bold red]MISS[/]", None: "NOT MEASURED"}
        return [f"Goal: {g.text} — {verdicts[g.met]} ({g.measured})" for g in self.goals()]

    def findings(self) -> dict[str, str]:
        """What the run says about the guide's claims, in one line each."""
        found: dict[str, str] = {}
        sizes = []
        for payload in PAYLOADS:
            rest, grpc = self.call("rest", payload), self.call("grpc", payload)
            if rest and grpc and rest.wire and grpc.wire and grpc.wire.response_payload:
                body = rest.wire.response_payload / grpc.wire.response_payload
                wire = rest.wire.total / grpc.wire.total
                sizes.append(
                    f"{PAYLOADS[payload]}: JSON {rest.wire.response_payload:,} B / protobuf "
                    f"{grpc.wire.response_payload:,} B = {body:.1f}{TIMES} "
                    f"(whole call on the wire: REST {rest.wire.total:,.0f} B / "
                    f"gRPC {grpc.wire.total:,.0f} B = {wire:.1f}{TIMES})"
                )
        if sizes:
            found["size"] = "; ".join(sizes)
        speeds = []
        for payload in PAYLOADS:
            rest, grpc = self.call("rest", payload), self.call("grpc", payload)
            if rest and grpc and rest.calls_per_second:
                ratio = grpc.calls_per_second / rest.calls_per_second
                speed = f"{PAYLOADS[payload]}: gRPC {ratio:.2f}{TIMES} REST's calls/s"
                if rest.cpu_us_per_call and grpc.cpu_us_per_call:
                    speed += (
                        f", {grpc.cpu_us_per_call / rest.cpu_us_per_call:.1f}{TIMES} its "
                        "server CPU per call"
                    )
                speeds.append(speed)
        if speeds:
            found["speed"] = "; ".join(speeds)
        return found

    def warnings(self) -> list[str]:
        return [
            f"{c.label} ({PAYLOADS[c.payload]}) had {c.errors:,} errors in {c.calls:,} calls: "
            "its figures are not comparable"
            for c in self.calls
            if c.errors
        ]

    # -- shown ------------------------------------------------------------------------------

    def tables(self) -> list[Table]:
        return [self._calls_table(payload) for payload in PAYLOADS] + [self._streams_table()]

    def _calls_table(self, payload: Payload) -> Table:
        table = Table(
            box=box.SIMPLE_HEAD,
            show_edge=False,
            padding=(0, 0, 0, 1),
            title=f"{PAYLOADS[payload]} per call · {self.options['connections']} in flight · "
            f"{self.options['duration']:g} s each",
            caption="CPU: the server's share of one core · µs: server CPU per call · wire: "
            "bytes per call, request + response, headers and framing included · "
            "payload: the response's body or message",
        )
        table.add_column("pattern", style="bold", no_wrap=True)
        for heading in ("calls/s", "p50 ms", "p99 ms", "CPU", "µs/call", "wire B", "payload B"):
            table.add_column(heading, justify="right")
        table.add_column(f"{TIMES}", justify="left", style="dim")
        for c in self.calls:
            if c.payload != payload:
                continue
            table.add_row(
                c.label,
                f"{c.calls_per_second:,.0f}",
                f"{c.p50_ms:.2f}",
                f"{c.p99_ms:.2f}",
                _share(c.server_cpu_share),
                "—" if c.cpu_us_per_call is None else f"{c.cpu_us_per_call:,.0f}",
                "—" if c.wire is None else f"{c.wire.request:,.0f} + {c.wire.response:,.0f}",
                "—" if c.wire is None else f"{c.wire.response_payload:,}",
                "" if c.ratio is None else f"{c.ratio:.2f}{TIMES} {c.reference}",
            )
        return table

    def _streams_table(self) -> Table:
        table = Table(
            box=box.SIMPLE_HEAD,
            show_edge=False,
            padding=(0, 0, 0, 1),
            title=f"server streams · {self.options['stream_events']:,} events to one subscriber",
            caption="per msg: events per gRPC message · µs: server CPU per event · wire: "
            "bytes per event, server to client, framing included",
        )
        table.add_column("stream", style="bold", no_wrap=True)
        for heading in ("events/s", "per msg", "µs/event", "wire B", "client CPU"):
            table.add_column(heading, justify="right")
        for s in self.streams:
            table.add_row(
                s.label,
                f"{s.events_per_second:,.0f}",
                f"{s.events_per_message:,.0f}",
                "—" if s.cpu_us_per_event is None else f"{s.cpu_us_per_event:,.1f}",
                "—" if s.wire_per_event is None else f"{s.wire_per_event:,.0f}",
                _share(s.client_cpu_share),
            )
        return table

    # -- written ----------------------------------------------------------------------------

    def as_json(self) -> dict[str, Any]:
        goals = self.goals()
        return {
            "bench": "rpc",
            "timestamp": self.started.isoformat(timespec="seconds"),
            "machine": self.machine,
            **self.options,
            "notes": self.notes,
            "claims": CLAIMS,
            "findings": self.findings(),
            "goals": [{"goal": g.text, "measured": g.measured, "met": g.met} for g in goals],
            "goal_met": all(g.met for g in goals),
            "calls": [asdict(c) for c in self.calls],
            "streams": [asdict(s) for s in self.streams],
        }

    def markdown(self) -> str:
        """The run as Markdown: its command line, the tables, the goals and the findings."""
        o, m = self.options, self.machine
        versions = ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items() if v)
        lines = [
            f"# polyport bench rpc — {self.started:%Y-%m-%d %H:%M} UTC",
            "",
            f"`polyport bench rpc --duration {o['grpc_duration']:g} --warmup {o['grpc_warmup']:g} "
            f"--connections {o['connections']} --repeats {o['repeats']} "
            f"--generator {o['generator']}`",
            "",
            f"{m.get('cpu_count')} cores ({m.get('cpu_model')}), load average "
            f"{m.get('load_average_1m')} before the run, CPython reference loop "
            f"{m.get('reference_loop_ms')} ms (2M additions: lower is a faster host); "
            f"Python {m.get('python')}; {versions}. "
            f"HTTP load: {o['generator']} ({o['generator_version']}); gRPC load: "
            f"{o['grpc_client']}. {o['stream_events']:,} events per stream.",
        ]
        refs = {"rest": "REST", "grpcio": "grpcio", "spyne": "Spyne"}
        for payload in PAYLOADS:
            lines += [
                "",
                f"## {PAYLOADS[payload]} per call",
                "",
                f"| pattern | calls/s | p50 ms | p99 ms | {TIMES} | server CPU | CPU µs/call "
                "| wire B: request + response | payload B |",
                "|---|---:|---:|---:|---|---:|---:|---:|---:|",
            ]
            for c in self.calls:
                if c.payload != payload:
                    continue
                ratio = "" if c.ratio is None else f"{c.ratio:.2f}{TIMES} {refs[c.reference or '']}"
                wire = "—" if c.wire is None else f"{c.wire.request:,.0f} + {c.wire.response:,.0f}"
                lines.append(
                    f"| {c.label} | {' · '.join(f'{r:,.0f}' for r in c.runs)} "
                    f"| {c.p50_ms:.2f} | {c.p99_ms:.2f} | {ratio} | {_share(c.server_cpu_share)} "
                    f"| {_number(c.cpu_us_per_call)} | {wire} "
                    f"| {'—' if c.wire is None else f'{c.wire.response_payload:,}'} |"
                )
        lines += [
            "",
            "## Server streams, to one subscriber",
            "",
            "| stream | events/s | events per message | CPU µs/event | wire B per event |",
            "|---|---:|---:|---:|---:|",
        ]
        for s in self.streams:
            lines.append(
                f"| {s.label} | {' · '.join(f'{r:,.0f}' for r in s.runs)} "
                f"| {s.events_per_message:,.0f} | {_number(s.cpu_us_per_event, '.1f')} "
                f"| {_number(s.wire_per_event)} |"
            )
        lines += ["", "## Goals", ""]
        verdicts = {True: "**PASS**", False: "**MISS**", None: "NOT MEASURED"}
        lines += [f"* {g.text} — {verdicts[g.met]} ({g.measured})" for g in self.goals()]
        findings = self.findings()
        if findings:
            lines += ["", "## The guide's claims", ""]
            for key, claim in (("size", CLAIMS["guide_size"]), ("speed", CLAIMS["guide_speed"])):
                if key in findings:
                    lines.append(f"* claimed: {claim} — measured: {findings[key]}")
        notes = self.notes + self.warnings()
        if notes:
            lines += ["", "## Notes", "", *(f"* {note}" for note in notes)]
        lines += [
            "",
            "calls/s: every round's (with --repeats); the other figures are the median "
            "round's. Server CPU: its share of one core. Wire: bytes per call, headers and "
            "framing included; payload: the response's body or message alone.",
        ]
        return "\n".join(lines) + "\n"

    def write(self, output: Path) -> tuple[Path, Path, Path]:
        """``rpc-YYYYmmdd-HHMMSS.json``, ``.md`` and ``.png`` in ``output``; each copied to
        ``rpc-latest``."""
        from polyport.bench.rpc_chart import draw_rpc_chart

        json_path, png_path = write_results(
            output, "rpc", self.started, self.as_json(), lambda path: draw_rpc_chart(self, path)
        )
        md_path = json_path.with_suffix(".md")
        md_path.write_text(self.markdown(), encoding="utf-8")
        shutil.copyfile(md_path, output / "rpc-latest.md")
        return json_path, md_path, png_path


def _number(value: float | None, spec: str = ",.0f") -> str:
    return "—" if value is None else format(value, spec)


def _share(share: float | None) -> str:
    return "—" if share is None else f"{share:.0%}"
