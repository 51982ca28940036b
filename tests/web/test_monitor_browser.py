"""/demo/monitor in Chromium: readings published over MQTT are drawn as they arrive.

The path is the demo's whole: a device (paho) publishes to the node's MQTT
listener, the node logs the events, the page's EventSource receives them and
draws them in its SVG chart; a reading over 30 °C raises an alert the page lists.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import orjson
from tests.mqtt.clients import paho

from polyport.testing import RunningNode


def _open(watch: Any, site: RunningNode) -> Any:
    page = watch.page
    page.goto(site.url + "/demo/monitor")
    page.wait_for_selector("body[data-ready=true]")  # the stream is open
    return page


def _publish(site: RunningNode, readings: list[tuple[str, dict[str, float]]]) -> None:
    """Publish as a device would: over MQTT 5 at QoS 1, each acknowledged."""
    assert site.mqtt_port is not None
    device, code = paho(site.mqtt_port, client_id="attic-device")
    assert code == 0
    try:
        for topic, payload in readings:
            device.publish(topic, orjson.dumps(payload), qos=1)
    finally:
        device.close()


def _points(page: Any, selector: str) -> int:
    return int(page.locator(selector).get_attribute("data-points") or 0)


def test_the_monitor_draws_readings_as_they_arrive(page: Any, site: RunningNode) -> None:
    """Each reading adds a point to its sensor's line; an alert is listed and marked."""
    monitor = _open(page, site)
    assert _points(monitor, "#chart-temperature") == 0
    _publish(site, [("sensors/attic/temperature", {"celsius": 21.5})])
    monitor.wait_for_function(
        "document.querySelector('#chart-temperature').dataset.points === '1'", timeout=10_000
    )
    _publish(
        site,
        [
            ("sensors/attic/temperature", {"celsius": 22.0}),
            ("sensors/attic/humidity", {"percent": 41.0}),
            ("sensors/attic/temperature", {"celsius": 22.4}),
        ],
    )
    line = "#chart-temperature polyline[data-sensor=attic]"
    monitor.wait_for_function(
        f"document.querySelector('{line}')?.dataset.points === '3'", timeout=10_000
    )
    coordinates = monitor.locator(line).get_attribute("points").split()
    assert len(coordinates) == 3
    assert _points(monitor, "#chart-humidity") == 1
    assert "22.4 °C · 41 %" in monitor.locator("#legend li[data-sensor=attic]").inner_text()

    _publish(site, [("sensors/attic/temperature", {"celsius": 31.0})])
    alert = monitor.locator("#alert-log li[data-type='alerts.raised']")
    alert.wait_for(timeout=10_000)
    assert "attic is at 31.0 °C" in alert.inner_text()
    monitor.locator("#legend li.alerting[data-sensor=attic]").wait_for(timeout=5_000)
    assert monitor.locator("#chart-temperature .alert-line").count() == 1
    assert _points(monitor, "#chart-temperature") == 4


def test_the_monitor_names_the_mqtt_port_bound(page: Any, site: RunningNode) -> None:
    """The copy-paste commands carry the port the node bound (not 1883 here)."""
    monitor = _open(page, site)
    code = monitor.locator("#try-panel pre code").first
    monitor.wait_for_function(
        "!document.querySelector('#try-panel pre code').textContent.includes('PORT')",
        timeout=10_000,
    )
    assert f"-p {site.mqtt_port} " in code.inner_text()


def test_the_monitor_lists_alerts_raised_before_it_opened(page: Any, site: RunningNode) -> None:
    """An alert already raised is read from history when the page opens, not only live."""
    _publish(site, [("sensors/cellar/temperature", {"celsius": 35.0})])
    deadline = time.monotonic() + 10
    while not _log(site, "alerts/cellar"):
        assert time.monotonic() < deadline, "no alert in the log"
        time.sleep(0.05)
    monitor = _open(page, site)
    alert = monitor.locator("#alert-log li[data-type='alerts.raised']", has_text="cellar")
    assert alert.count() == 1
    assert monitor.locator("#alerts-empty").is_hidden()


def _log(site: RunningNode, channel: str) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{site.url}/v1/events", params={"channel": channel, "after": "earliest"}, timeout=10
    )
    response.raise_for_status()
    events: list[dict[str, Any]] = response.json()["events"]
    return events
