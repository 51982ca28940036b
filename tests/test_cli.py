"""The polyport command: clear one-line errors, routes, the demo's start-up."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from polyport import __version__
from polyport.cli import app

runner = CliRunner()


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env=env)
    return result.exit_code, result.output


def test_version() -> None:
    """--version prints the version."""
    code, output = run("--version")
    assert code == 0 and output.strip() == f"polyport {__version__}"


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("no_such_module_xyz:svc", "cannot import module 'no_such_module_xyz': no such module"),
        ("polyport.demo.shop:nope", "module 'polyport.demo.shop' has no attribute 'nope'"),
        ("polyport.demo.shop", "expected MODULE:SERVICE"),
        ("polyport.demo.shop:store", "is a ShopStore, not a polyport.Service"),
    ],
)
def test_bad_module_paths(target: str, message: str) -> None:
    """A wrong MODULE:SERVICE is one line naming what is wrong, exit code 2."""
    code, output = run("serve", target)
    assert code == 2
    assert message in " ".join(output.split())
    assert "Traceback" not in output


def test_a_taken_port(tmp_path: Path) -> None:
    """Serving on a port in use says so in one line instead of a traceback."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, output = run(
            "serve",
            "polyport.demo.shop:shop",
            "--port",
            str(port),
            "--database",
            str(tmp_path / "db.sqlite3"),
        )
    assert code == 2
    assert f"port {port} on 127.0.0.1 is already in use" in " ".join(output.split())


def test_bad_config_values(tmp_path: Path) -> None:
    """Bad values name the setting and where it came from: variable, file or flag."""
    code, output = run("serve", "polyport.demo.shop:shop", env={"POLYPORT_PORT": "eighty"})
    assert code == 2 and "bad config value for port (from POLYPORT_PORT)" in " ".join(
        output.split()
    )
    config = tmp_path / "polyport.toml"
    config.write_text("[rate_limit]\nrate = -5\n")
    code, output = run("serve", "polyport.demo.shop:shop", "--config", str(config))
    assert code == 2 and f"rate_limit.rate (from {config})" in " ".join(output.split())
    config.write_text("port = [")
    code, output = run("serve", "polyport.demo.shop:shop", "--config", str(config))
    assert code == 2 and "is not valid TOML" in output
    code, output = run("serve", "polyport.demo.shop:shop", "--config", str(tmp_path / "none.toml"))
    assert code == 2 and "does not exist" in output
    code, output = run("serve", "polyport.demo.shop:shop", env={"POLYPORT_NOPE": "1"})
    assert code == 2 and "nope" in output and "Extra inputs" in output


def test_routes_lists_every_endpoint_per_pattern() -> None:
    """`polyport routes --json` covers REST, polling, long polling and jobs."""
    code, output = run("routes", "polyport.demo.shop:shop", "--json")
    assert code == 0
    entries = json.loads(output)
    found = {(e["target"], e["pattern"]): e["address"] for e in entries}
    assert found[("get_user", "REST")] == "GET /v1/users/{id}"
    assert found[("create_order", "REST")] == "POST /v1/orders"
    assert found[("multiply", "REST")] == "POST /v1/multiply"
    assert found[("multiply", "jobs")] == "POST /v1/jobs/multiply"
    assert found[("orders.created", "polling")].startswith("GET /v1/events?channel=orders/created")
    assert "wait=25" in found[("orders.created", "long polling")]
    code, table = run("routes")
    assert code == 0 and "get_user" in table


def test_demo_binds_loopback_and_warns(tmp_path: Path) -> None:
    """`polyport demo` announces development mode and listens on 127.0.0.1 only."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "polyport",
            "demo",
            "--port",
            "0",
            "--database",
            str(tmp_path / "demo.sqlite3"),
        ],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "POLYPORT_HOST": "0.0.0.0", "COLUMNS": "200"},
    )
    assert process.stderr is not None
    lines = []
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = process.stderr.readline()
            lines.append(line)
            if "serving" in line or not line:
                break
        text = "".join(lines)
        assert "DEVELOPMENT MODE" in text
        assert re.search(r"serving shop v1 on http://127\.0\.0\.1:\d+", text), text
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(15)
        process.stderr.close()
