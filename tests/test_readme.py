"""The README's tour, followed literally against a fresh demo, shows what it says.

Every ``$ curl …`` of the tour, from REST to SOAP, runs in order against a
demo node on a fresh database (as after ``rm -rf .polyport && make run``), and
its output must match the lines the README shows under it: ``…`` stands for
anything, and event ids, epochs, ETags and times, which differ on every run,
match any value. A command the README marks "use your …" runs but is not
compared (its value is the reader's). The Python blocks run too, as scripts
(a stream that keeps waiting is stopped after a few seconds): they must not
fail. The webhooks, receivers and jobs parts need a receiver on port 9000
and a restart, and are not walked here.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from polyport.settings import Settings
from polyport.testing import RunningNode, serve_in_thread

README = Path(__file__).parent.parent / "README.md"
#: Seconds a command may take; SSE streams and waiting gRPC streams are cut there.
COMMAND_TIME = 3.0


@dataclass
class Command:
    line: str
    expected: list[str] = field(default_factory=list)
    background: bool = False


@dataclass
class Block:
    kind: str  # "console" or "python"
    text: str
    commands: list[Command] = field(default_factory=list)


def tour() -> list[Block]:
    """The console and Python blocks from "A tour" up to "Webhooks"."""
    text = README.read_text(encoding="utf-8")
    start = text.index("## A tour, with copy-paste commands")
    end = text.index("### Webhooks", start)
    blocks = []
    for kind, body in re.findall(r"```(console|python)\n(.*?)```", text[start:end], re.S):
        block = Block(kind, body)
        if kind == "console":
            block.commands = commands_of(body)
        blocks.append(block)
    return blocks


def commands_of(body: str) -> list[Command]:
    """``$ `` lines (joined across ``\\`` and open quotes) with the output lines after them."""
    commands: list[Command] = []
    lines = iter(body.splitlines())
    for line in lines:
        if line.startswith("$ "):
            command = line[2:]
            while command.endswith("\\") or command.count("'") % 2:
                command += "\n" + next(lines)  # bash reads both as the reader's paste
            commands.append(Command(command))
        elif line.startswith("# …in another terminal"):
            commands[-1].background = True
        elif commands and not line.startswith("#"):
            commands[-1].expected.append(line)
    return commands


def pattern_of(expected: list[str]) -> re.Pattern[str]:
    """What the README shows, as a pattern: "…" is anything, as are run-dependent values."""
    pieces = []
    for line in expected:
        piece = re.escape(line.strip())
        piece = piece.replace("…", r"[\s\S]*?")
        piece = re.sub(
            r"(?<![A-Za-z0-9_])[a-z0-9]{10}(?=(?:\\?[:@]|\\\"|\"))", "[a-z0-9]{10}", piece
        )
        piece = re.sub(r"\d{4}\\-\d\d\\-\d\dT[\d:\\.]+Z", r"[0-9T:.Z-]+", piece)
        piece = re.sub(r'(etag:\\ )"[^"]*"', r'\1"[^"]+"', piece)
        pieces.append(piece)
    return re.compile(r"[\s\S]*?".join(pieces))


def node_address(text: str, node: RunningNode) -> str:
    """The README's addresses, pointed at the test's node."""
    http = f"{node.host}:{node.port}"
    text = text.replace("localhost:8000", http).replace("127.0.0.1:8000", http)
    return text.replace("localhost:50051", node.grpc_address or "")


@pytest.fixture
def fresh_demo(tmp_path: Path) -> Iterator[RunningNode]:
    """The demo on a database of its own: a first run."""
    from polyport.demo.shop import shop

    settings = Settings(dev=True, database=str(tmp_path / "demo.sqlite3"), log={"format": "text"})
    with serve_in_thread(shop, settings) as node:
        yield node


def run_shell(command: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["bash", "-c", command],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # curl's progress meter, shown when its output is piped
        stdin=subprocess.DEVNULL,
        text=True,
    )


def output_of(process: subprocess.Popen[str]) -> str:
    try:
        out, _ = process.communicate(timeout=COMMAND_TIME + 10)
    except subprocess.TimeoutExpired:
        process.kill()
        out, _ = process.communicate()
    return out


def test_the_tour_shows_what_a_fresh_demo_answers(fresh_demo: RunningNode, tmp_path: Path) -> None:
    """Each curl of the tour, run in order on a fresh demo, prints what the README shows."""
    if shutil.which("curl") is None:
        if os.environ.get("POLYPORT_REQUIRE_SERVICES") == "1":
            pytest.fail("curl is not installed (POLYPORT_REQUIRE_SERVICES=1)")
        pytest.skip("curl is not installed (apt-get install curl)")
    blocks = tour()
    assert sum(len(b.commands) for b in blocks) > 20, "the tour was not found"
    failures: list[str] = []
    pending: list[tuple[Command, subprocess.Popen[str]]] = []
    for block in blocks:
        if block.kind == "python":
            if ":8000" not in block.text and ":50051" not in block.text:
                continue
            script = tmp_path / "block.py"
            script.write_text(node_address(block.text, fresh_demo))
            process = subprocess.Popen(
                [sys.executable, str(script)],
                cwd=tmp_path,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            try:
                out, _ = process.communicate(timeout=COMMAND_TIME)
            except subprocess.TimeoutExpired:  # a stream still waiting for events: fine
                process.kill()
                process.communicate()
                continue
            if process.returncode != 0:
                failures.append(f"python block failed:\n{block.text}\n---\n{out}")
            continue
        for command in block.commands:
            line = command.line.strip()
            if line.startswith("curl "):
                line = f"curl --max-time {COMMAND_TIME:g}" + line.removeprefix("curl")
            elif line.startswith(".venv/bin/python -m grpc_tools"):
                line = shlex.quote(sys.executable) + line.removeprefix(".venv/bin/python")
            else:
                continue  # make, grpcurl, the interactive WebSocket client
            process = run_shell(node_address(line, fresh_demo), tmp_path)
            if command.background:
                pending.append((command, process))
                continue
            out = output_of(process)
            for held, held_process in pending:
                check(held, output_of(held_process), failures)
            pending.clear()
            check(command, out, failures)
    assert not failures, "\n\n".join(failures)


def check(command: Command, out: str, failures: list[str]) -> None:
    if "use your" in command.line or not command.expected:
        return
    if not pattern_of(command.expected).match(out):
        failures.append(
            f"$ {command.line}\nREADME shows:\n" + "\n".join(command.expected) + f"\ngot:\n{out}"
        )
