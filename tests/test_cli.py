"""The polyport command: clear one-line errors, routes, the demo's start-up."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
import tomllib
from pathlib import Path

import httpx
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


def test_routes_names_the_broker_the_queues_are_on() -> None:
    """With queues.broker set, routes says where the queues live (the password hidden)."""
    url = "amqp://guest:secret@127.0.0.1:5672/?prefix=shop"
    code, table = run("routes", env={"POLYPORT_QUEUES__BROKER": url, "COLUMNS": "200"})
    assert code == 0, table
    assert "queues on RabbitMQ amqp://guest:***@127.0.0.1:5672/?prefix=shop" in table
    assert "secret" not in table


def test_the_banner_names_the_broker_the_queues_are_on() -> None:
    """The banner's rows say where things live: the queues' broker among them."""
    from rich.console import Console

    from polyport.banner import print_banner
    from polyport.demo.shop import shop
    from polyport.node import Node
    from polyport.settings import Settings

    url = "amqp://guest:secret@127.0.0.1:5672/?prefix=shop"
    settings = Settings.model_validate(
        {"dev": True, "database": ":memory:", "queues": {"broker": url}}
    )
    console = Console(record=True, width=200)
    print_banner(console, Node(shop, settings, announce=False), "http://127.0.0.1:8000")
    text = console.export_text()
    assert "queues     on RabbitMQ amqp://guest:***@127.0.0.1:5672/?prefix=shop" in text
    assert "secret" not in text


def test_help_shows_the_defaults() -> None:
    """The options' help texts keep their defaults (rich help used to swallow "[default: …]")."""
    code, output = run("serve", "--help", env={"COLUMNS": "200"})
    text = " ".join(output.split())
    assert code == 0
    assert "HTTP port (default 8000; 0: any free port" in text
    assert "Address to listen on (default 127.0.0.1)" in text
    assert "(default polyport.sqlite3)" in text
    assert "HTTP port ." not in text
    code, output = run("demo", "--help", env={"COLUMNS": "200"})
    assert code == 0 and "HTTP port (default 8000" in " ".join(output.split())


def start(*args: str, env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    """``python -m polyport ARGS`` with its stderr read up to the banner's last line (or exit)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "polyport", *args],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "COLUMNS": "200", **env},
    )
    assert process.stderr is not None
    lines = []
    for line in process.stderr:
        lines.append(line)
        if "press Ctrl-C to stop" in line:
            break
    return process, "".join(lines)


def stop(process: subprocess.Popen[str]) -> str:
    """Ctrl-C, and the rest of what the process wrote on stderr."""
    assert process.stderr is not None
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    process.wait(15)
    rest = process.stderr.read()
    process.stderr.close()
    return rest


def grpc_health(address: str) -> int:
    """The health service's answer for the whole server at ``address``."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        status: int = stub.Check(health_pb2.HealthCheckRequest(), timeout=10).status
        return status


def test_the_demo_banner_follows_every_bind(tmp_path: Path) -> None:
    """The banner comes once gRPC is bound and shows its real port; development mode is
    announced once; the demo's data files and how to start afresh are named."""
    from grpc_health.v1 import health_pb2

    database = tmp_path / "demo.sqlite3"
    process, banner = start(
        "demo", "--port", "0", "--database", str(database), env={"POLYPORT_GRPC__PORT": "0"}
    )
    try:
        found = re.search(r"serving shop v1 on (http://127\.0\.0\.1:\d+)", banner)
        assert found, banner
        assert httpx.get(found[1] + "/healthz").status_code == 200
        grpc_line = re.search(r"\n  gRPC +127\.0\.0\.1:(\d+) \(reflection, health\)", banner)
        assert grpc_line, banner
        assert grpc_health(f"127.0.0.1:{grpc_line[1]}") == health_pb2.HealthCheckResponse.SERVING
        shop = tmp_path / "demo.shop.sqlite3"
        assert f"{database} and {shop}, kept between runs; to start afresh" in banner
        assert re.search(r"\n  SOAP +http://127\.0\.0\.1:\d+/soap", banner)
    finally:
        everything = banner + stop(process)
    assert everything.count("DEVELOPMENT MODE") == 1, everything


def test_a_grpc_port_set_and_taken_stops_the_start_before_the_banner(tmp_path: Path) -> None:
    """grpc.port set explicitly but in use: one error line, exit 2, and no "serving" banner."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process, output = start(
            "serve",
            "polyport.demo.shop:shop",
            "--port",
            "0",
            "--database",
            str(tmp_path / "db.sqlite3"),
            env={"POLYPORT_GRPC__PORT": str(port)},
        )
        output += stop(process)
    assert process.returncode == 2, output
    assert f"error: gRPC cannot listen on 127.0.0.1:{port}: the port is in use" in output
    assert "choose another with grpc.port" in output
    assert "serving" not in output and "Traceback" not in output


def test_secure_mode_without_credentials_says_so(tmp_path: Path) -> None:
    """`polyport serve` with no key and no JWT configured warns at start, naming `polyport key`;
    with a key configured it does not."""
    args = ("serve", "polyport.demo.shop:shop", "--port", "0")
    env = {"POLYPORT_GRPC__PORT": "0"}
    process, banner = start(*args, "--database", str(tmp_path / "a.sqlite3"), env=env)
    stop(process)
    assert "WARNING no credentials are configured" in banner, banner
    assert "answers 401" in banner and "`polyport key`" in banner
    assert "metrics (needs the scope 'metrics')" in " ".join(banner.split())
    assert "DEVELOPMENT MODE" not in banner
    keys = '[{"key": "k-123", "subject": "me", "scopes": ["*"]}]'
    process, banner = start(
        *args,
        "--database",
        str(tmp_path / "b.sqlite3"),
        env={**env, "POLYPORT_AUTH__API_KEYS": keys},
    )
    stop(process)
    assert "serving shop v1" in banner and "no credentials" not in banner


def test_key_prints_a_key_and_the_settings_that_accept_it() -> None:
    """`polyport key`: the TOML lines and the variable it prints both accept the key it prints."""
    from polyport.core.auth import Authenticator, Credentials
    from polyport.settings import Settings, load_settings

    code, output = run(
        "key", "--subject", "scraper", "--scope", "metrics", "--scope", "orders:read"
    )
    assert code == 0
    key = re.search(r"^    (pp_\S+)$", output, re.M)
    toml_lines = re.search(r"^    (\[\[auth\.api_keys\]\]\n(?:    .*\n)+)", output, re.M)
    variable = re.search(r"^    POLYPORT_AUTH__API_KEYS='(.*)'$", output, re.M)
    assert key and toml_lines and variable, output
    from_file = Settings.model_validate(tomllib.loads(textwrap.dedent(toml_lines[1])))
    from_env = load_settings(environ={"POLYPORT_AUTH__API_KEYS": variable[1]})
    assert key[1] not in toml_lines[1] and key[1] not in variable[1]  # only the digest is kept
    for settings in (from_file, from_env):
        principal = Authenticator(settings.auth).authenticate(Credentials(api_key=key[1]))
        assert principal.subject == "scraper"
        assert principal.scopes == {"metrics", "orders:read"}


def test_routes_show_the_configured_grpc_port(tmp_path: Path) -> None:
    """`polyport routes` reads the settings: gRPC addresses carry grpc.port, not always 50051."""
    code, output = run("routes", "--json", env={"POLYPORT_GRPC__PORT": "6123"})
    assert code == 0
    grpc = [e["address"] for e in json.loads(output) if e["pattern"] == "gRPC"]
    assert "grpc 127.0.0.1:6123 polyport.shop.v1.ShopService/GetUser" in grpc
    config = tmp_path / "polyport.toml"
    config.write_text('[grpc]\nhost = "::1"\nport = 0\n')
    code, output = run("routes", "--json", "--config", str(config))
    assert code == 0
    grpc = [e["address"] for e in json.loads(output) if e["pattern"] == "gRPC"]
    assert "grpc [::1]:(any free port) polyport.shop.v1.ShopService/GetUser" in grpc


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
        env={
            **os.environ,
            "POLYPORT_HOST": "0.0.0.0",
            "POLYPORT_GRPC__PORT": "0",
            "COLUMNS": "200",
        },
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
