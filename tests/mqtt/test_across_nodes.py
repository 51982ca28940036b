"""Two nodes on one shared engine (Redis): sessions and retained messages move between them."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cluster.engines import shared_engine
from tests.mqtt.clients import V5, Paho, paho
from tests.mqtt.conftest import node_settings
from tests.mqtt.service import TemperatureEvent, monitoring

from polyport.testing import RunningNode, serve_in_thread


def publish(node: RunningNode, *celsius: float) -> None:
    for value in celsius:
        node.call(TemperatureEvent.publish(TemperatureEvent.model(sensor="s1", celsius=value)))


def received(client: Paho, count: int) -> list[tuple[float, bool]]:
    got = [client.message(timeout=10) for _ in range(count)]
    return [(json.loads(m.payload)["celsius"], bool(m.retain)) for m in got]


def test_a_session_and_a_retained_message_move_across_nodes(tmp_path: Path) -> None:
    """A session left on node A resumes on node B (from the records store), with what it
    missed; back on A, A's stale memory copy is not used; B sees A's retained message."""
    with shared_engine("redis") as url:
        settings = [node_settings(tmp_path / name, dev=True, engine=url) for name in ("a", "b")]
        for path in ("a", "b"):
            (tmp_path / path).mkdir()
        with (
            serve_in_thread(monitoring, settings[0]) as a,
            serve_in_thread(monitoring, settings[1]) as b,
        ):
            assert a.node.shared is not None and b.node.shared is not None
            first, _ = paho(a.mqtt_port or 0, V5, client_id="dash", clean=False, expiry=60)
            assert first.subscribe("sensors/+/temperature", 1) == [1]
            first.close()
            publish(a, 1.0, 2.0)
            there, _ = paho(b.mqtt_port or 0, V5, client_id="dash", clean=False, expiry=60)
            assert there.session_present
            assert received(there, 2) == [(1.0, False), (2.0, False)]
            there.close()
            publish(b, 3.0)
            back, _ = paho(a.mqtt_port or 0, V5, client_id="dash", clean=False, expiry=60)
            try:
                assert back.session_present
                assert received(back, 1) == [(3.0, False)]  # not 1.0 and 2.0 again
            finally:
                back.close()
            late, _ = paho(b.mqtt_port or 0, V5)
            try:
                late.subscribe("sensors/+/temperature", 1)
                assert received(late, 1) == [(3.0, True)]
            finally:
                late.close()
