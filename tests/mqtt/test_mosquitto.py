"""The MQTT edge with Mosquitto's command-line clients, and across patterns (WebSocket)."""

from __future__ import annotations

import json
import shutil
import subprocess

import orjson
import pytest
from tests.conftest import REQUIRE_SERVICES
from tests.mqtt.conftest import KEYS

from polyport.testing import RunningNode

if shutil.which("mosquitto_sub") is None:
    reason = "mosquitto-clients is not installed (apt-get install mosquitto-clients)"
    if REQUIRE_SERVICES:
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason, allow_module_level=True)


@pytest.mark.parametrize("version", ["mqttv5", "mqttv311"])
@pytest.mark.parametrize("qos", ["0", "1", "2"])
def test_mosquitto_pub_to_mosquitto_sub(secure: RunningNode, version: str, qos: str) -> None:
    """mosquitto_sub with a reader key receives what mosquitto_pub with a sensor key sends."""
    port = str(secure.mqtt_port)
    common = ["-h", "127.0.0.1", "-p", port, "-V", version, "-q", qos, "-u", "device"]
    with subprocess.Popen(
        [
            "mosquitto_sub",
            *common,
            "-P",
            KEYS["reader"][0],
            "-t",
            "sensors/+/temperature",
            "-C",
            "1",
            "-W",
            "10",
            "-v",
        ],
        stdout=subprocess.PIPE,
        text=True,
    ) as sub:
        # mosquitto_sub has no "subscribed" signal: publish until it has one message.
        for _ in range(50):
            subprocess.run(
                [
                    "mosquitto_pub",
                    *common,
                    "-P",
                    KEYS["sensor"][0],
                    "-t",
                    "sensors/s9/temperature",
                    "-m",
                    '{"celsius": 19.5}',
                ],
                check=True,
                timeout=10,
            )
            try:
                out, _ = sub.communicate(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                continue
        else:
            sub.kill()
            pytest.fail("mosquitto_sub received nothing")
    assert sub.returncode == 0
    topic, payload = out.strip().split(" ", 1)
    assert topic == "sensors/s9/temperature"
    assert json.loads(payload) == {"sensor": "s9", "celsius": 19.5}


def test_mosquitto_pub_refused(secure: RunningNode) -> None:
    """A wrong key is refused at CONNECT; an invalid payload fails the publish (exit code)."""
    port = str(secure.mqtt_port)
    base = ["mosquitto_pub", "-h", "127.0.0.1", "-p", port, "-q", "1", "-u", "device"]
    wrong = subprocess.run(
        [*base, "-P", "wrong", "-t", "sensors/s1/temperature", "-m", "{}"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert wrong.returncode != 0
    assert "not authorised" in wrong.stderr.lower() or "bad user" in wrong.stderr.lower()
    invalid = subprocess.run(
        [
            *base,
            "-V",
            "mqttv5",
            "-P",
            KEYS["sensor"][0],
            "-t",
            "sensors/s1/temperature",
            "-m",
            '{"celsius": "hot"}',
        ],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert invalid.returncode != 0 or "payload format invalid" in invalid.stderr.lower()


def test_an_event_published_over_mqtt_reaches_websocket_subscribers(dev: RunningNode) -> None:
    """One event model: what mosquitto_pub sends arrives on /ws, and the reverse direction
    (service → MQTT) is covered in test_paho."""
    from websockets.sync.client import connect

    url = dev.url.replace("http://", "ws://") + "/ws"
    with connect(url) as ws:
        assert orjson.loads(ws.recv(5))["type"] == "welcome"
        ws.send(orjson.dumps({"id": 1, "type": "subscribe", "channels": ["sensors/#"]}))
        assert orjson.loads(ws.recv(5))["type"] == "subscribed"
        subprocess.run(
            [
                "mosquitto_pub",
                "-h",
                "127.0.0.1",
                "-p",
                str(dev.mqtt_port),
                "-q",
                "1",
                "-t",
                "sensors/s3/temperature",
                "-m",
                '{"celsius": 7}',
            ],
            check=True,
            timeout=10,
        )
        frame = orjson.loads(ws.recv(5))
    assert frame["type"] == "event"
    event = frame["event"]
    assert event["channel"] == "sensors/s3/temperature"
    assert event["type"] == "sensors.temperature"
    assert event["data"] == {"sensor": "s3", "celsius": 7.0}
