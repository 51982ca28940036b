"""The monitoring demo: sensors publishing over MQTT, alerts with hysteresis, webhooks."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.edges.webhooks.conftest import Receiver

from polyport import Settings
from polyport.demo.monitoring import Hysteresis, Temperature, TemperatureEvent
from polyport.demo.sensors import FLEET, SensorFleet, SimulatedSensor
from polyport.demo.shop import shop
from polyport.testing import RunningNode, serve_in_thread

EDGES = ["rest", "poll", "mqtt", "webhooks"]


def settings(tmp_path: Path, **demo: Any) -> Settings:
    return Settings.model_validate(
        {
            "dev": True,
            "database": str(tmp_path / "demo.sqlite3"),
            "rate_limit": {"enabled": False},
            "demo": demo,
            "webhooks": {"allow_private": ["127.0.0.1/32"], "poll_interval": 0.05},
        }
    )


@pytest.fixture
def node(tmp_path: Path) -> Iterator[RunningNode]:
    """The demo service with its alert watcher, without the fleet (readings come from tests)."""
    with serve_in_thread(shop, settings(tmp_path), edges=EDGES) as running:
        yield running


def events(node: RunningNode | str, channel: str) -> list[dict[str, Any]]:
    """Every event of ``channel`` (a pattern) the log of a node (or its URL) holds, oldest
    first."""
    url = node if isinstance(node, str) else node.url
    response = httpx.get(
        f"{url}/v1/events",
        params={"channel": channel, "after": "earliest", "limit": 1000},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["events"]
    return found


def wait_for(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    """Poll ``check()`` until it returns something truthy (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    pytest.fail("gave up waiting")


def test_hysteresis_raises_once_and_clears_below_the_lower_line() -> None:
    """Readings wobbling around the alert line raise once; only the clear line clears."""
    lines = Hysteresis(above=30.0, clear=28.0)
    readings = [25, 30.0, 29.9, 30.5, 28.1, 31, 28.0, 29, 29.9, 30.1]
    crossed = [lines.reading("g", c) for c in readings]
    assert crossed == [None, "raised", None, None, None, None, "cleared", None, None, "raised"]
    assert lines.reading("other", 29.9) is None  # each sensor has its own state


def test_the_fleet_publishes_over_mqtt_to_the_port_the_node_bound(tmp_path: Path) -> None:
    """With demo.sensors on, every sensor's readings land in the log, over MQTT connections.

    serve_in_thread gives MQTT a free port (never 1883): the fleet finds it in
    /asyncapi.json, as it does when the node moved off a taken 1883.
    """
    config = settings(tmp_path, sensors=True, sensor_interval=0.1)
    with serve_in_thread(shop, config, edges=EDGES) as node:
        assert node.mqtt_port not in (None, 1883)
        wanted = {f"sensors/{s.name}/{kind}" for s in FLEET for kind in ("temperature", "humidity")}
        wait_for(lambda: wanted <= {e["channel"] for e in events(node, "sensors/#")})
        metrics = httpx.get(f"{node.url}/metrics", timeout=10).text
        connected = re.search(r"^polyport_mqtt_connections\S* (\d+)", metrics, re.M)
        assert connected is not None and int(connected[1]) >= len(FLEET), metrics
        first = events(node, "sensors/greenhouse/temperature")[0]
        assert first["type"] == "sensors.temperature"
        assert set(first["data"]) == {"sensor", "celsius"}
        assert first["data"]["sensor"] == "greenhouse"
        # Bounded rate: two events per sensor per interval, however long it ran.
        time.sleep(0.5)
        before = len(events(node, "sensors/#"))
        time.sleep(1.0)
        grown = len(events(node, "sensors/#")) - before
        assert grown <= len(FLEET) * 2 * (1.0 / 0.1 + 2), grown


def test_the_fleet_is_off_unless_asked(node: RunningNode) -> None:
    """demo.sensors defaults to off outside `polyport demo`: no readings appear by themselves."""
    time.sleep(0.5)
    assert events(node, "sensors/#") == []


async def test_a_device_reconnects_to_a_node_that_came_back_elsewhere(tmp_path: Path) -> None:
    """The node stops and another starts on another port: the device finds it and goes on."""
    where: dict[str, int] = {}

    async def discover() -> tuple[str, int]:
        if "port" not in where:
            raise LookupError("no node")
        return "127.0.0.1", where["port"]

    sensor = SimulatedSensor("lab", celsius=20, swing=1, period=60, percent=50)
    fleet = SensorFleet(discover, interval=0.05, sensors=[sensor])
    task = asyncio.create_task(fleet.run())
    try:
        for round_ in range(2):
            db = tmp_path / f"node{round_}"
            db.mkdir()
            with serve_in_thread(shop, settings(db), edges=EDGES) as node:
                assert node.mqtt_port is not None
                where["port"] = node.mqtt_port
                found = await asyncio.to_thread(
                    wait_for, lambda n=node: events(n, "sensors/lab/temperature"), 20.0
                )
                assert found[0]["data"]["sensor"] == "lab"
            where.pop("port")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def publish_readings(node: RunningNode, sensor: str, readings: list[float]) -> None:
    for celsius in readings:
        node.call(TemperatureEvent.publish(Temperature(sensor=sensor, celsius=celsius)))


def test_crossing_the_line_raises_one_alert_not_a_flood(node: RunningNode) -> None:
    """Readings over, under and over 30 °C again raise one alert, cleared once below 28 °C."""
    publish_readings(node, "greenhouse", [25, 30.5, 29.0, 31.0, 29.5, 30.2, 28.5, 27.9])
    cleared = wait_for(lambda: events(node, "alerts/+/cleared"))
    raised = events(node, "alerts/+")
    assert [e["type"] for e in raised] == ["alerts.raised"]
    assert raised[0]["channel"] == "alerts/greenhouse"
    assert raised[0]["data"]["celsius"] == 30.5 and raised[0]["data"]["threshold"] == 30.0
    assert [e["data"]["celsius"] for e in cleared] == [27.9]


def test_a_webhook_endpoint_receives_the_alert(node: RunningNode) -> None:
    """An endpoint subscribed to alerts.* gets alerts.raised, signed, as docs/mqtt.md shows."""
    receiver = Receiver().start()
    try:
        response = httpx.post(
            f"{node.url}/v1/webhooks",
            json={"url": receiver.url, "event_types": ["alerts.*"]},
            timeout=10,
        )
        assert response.status_code == 201, response.text
        publish_readings(node, "server-room", [24.0, 33.3, 32.0])
        received = receiver.wait_count(1)
        time.sleep(0.3)  # a second alert would have come by now
        assert len(receiver.requests) == 1
        body = received[0].json()
        assert body["type"] == "alerts.raised" and body["channel"] == "alerts/server-room"
        assert body["data"]["sensor"] == "server-room"
        assert body["data"]["celsius"] == 33.3
        assert received[0].headers["webhook-signature"].startswith("v1,")
    finally:
        receiver.stop()


@contextlib.contextmanager
def default_mqtt_port_taken() -> Iterator[None]:
    """1883 held for the block: by Mosquitto (as on our machines), or else by this test."""
    holder = socket.socket()
    try:
        holder.bind(("127.0.0.1", 1883))
        holder.listen()
    except OSError:
        pass  # someone holds it already: all the better
    try:
        yield
    finally:
        holder.close()


def test_polyport_demo_runs_the_fleet_where_1883_is_taken(tmp_path: Path) -> None:
    """`make run`'s command starts the fleet; with 1883 taken it publishes to the port served."""
    command = [sys.executable, "-m", "polyport", "demo", "--port", "0"]
    command += ["--database", str(tmp_path / "demo.sqlite3")]
    env = {
        **os.environ,
        "COLUMNS": "200",
        "POLYPORT_GRPC__PORT": "0",
        "POLYPORT_DEMO__SENSOR_INTERVAL": "0.2",
    }
    env.pop("POLYPORT_MQTT__PORT", None)
    with default_mqtt_port_taken():
        process = subprocess.Popen(
            command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env
        )
        assert process.stderr is not None
        banner = []
        try:
            for line in process.stderr:
                banner.append(line)
                if "press Ctrl-C to stop" in line:
                    break
            text = "".join(banner)
            mqtt = re.search(r"MQTT +mqtt://127\.0\.0\.1:(\d+)", text)
            http = re.search(r"serving shop v1 on (http://127\.0\.0\.1:\d+)", text)
            assert mqtt is not None and http is not None, text
            assert mqtt[1] != "1883"
            assert "MQTT's default port 1883 is in use" in text
            assert "http://127.0.0.1:" in text and "/demo/monitor" in text
            wanted = {f"sensors/{s.name}/temperature" for s in FLEET}
            wait_for(lambda: wanted <= {e["channel"] for e in events(http[1], "sensors/#")}, 20.0)
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(15)
            rest = process.stderr.read()
            process.stderr.close()
    assert process.returncode == 0, rest
    assert "Traceback" not in rest and "never retrieved" not in rest, rest
