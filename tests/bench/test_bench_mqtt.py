"""``polyport bench mqtt``: a tiny paired round measures every phase on both brokers and
loses nothing; the private Mosquitto is configured as the lab says; bad options and a
missing broker are one line. (Figures are for the lab, never asserted here.)"""

from __future__ import annotations

import io
from pathlib import Path

import orjson
import pytest
from rich.console import Console
from tests.conftest import REQUIRE_SERVICES

from polyport.bench.mqtt import run_mqtt_bench
from polyport.bench.mqtt_clients import receive_maximum_of
from polyport.bench.mqtt_targets import mosquitto_binary, mosquitto_config
from polyport.core.errors import ConfigError


def _require_mosquitto() -> None:
    try:
        mosquitto_binary()
    except ConfigError as exc:
        if REQUIRE_SERVICES:
            pytest.fail(f"{exc} (POLYPORT_REQUIRE_SERVICES=1)")
        pytest.skip(str(exc))


@pytest.mark.timeout(60)
def test_a_tiny_paired_round_measures_both_brokers(tmp_path: Path) -> None:
    """One round on a node and a private Mosquitto: every phase measured, nothing lost,
    the goals judged (the idle one not, with fewer than 10,000), the JSON written."""
    _require_mosquitto()
    record = run_mqtt_bench(
        console=Console(file=io.StringIO()),
        messages=200,
        rate=100,
        duration=0.3,
        idle_connections=20,
        repeats=1,
        output=tmp_path,
    )
    for name in ("polyport", "mosquitto"):
        [one] = [r[name] for r in record["rounds"]]
        for phase in ("qos0", "qos1"):
            assert one[phase]["received"] == 200 and one[phase]["lost"] == 0
            assert one[phase]["delivered_per_second"] > 0
        for phase in ("latency0", "latency1"):
            assert one[phase]["samples"] == 30 and one[phase]["p50_ms"] > 0
        assert one["idle"]["opened"] == 20 and one["idle"]["rss_mib"] > 0
    assert set(record["ratios"]) == {"qos0", "qos1"}
    verdicts = list(record["goal"].values())
    assert [v["met"] is None for v in verdicts] == [False, False, True]
    assert orjson.loads((tmp_path / "mqtt.json").read_bytes())["bench"] == "mqtt"


def test_the_private_mosquitto_listens_on_loopback_with_deep_queues() -> None:
    """The generated configuration: 127.0.0.1 only, anonymous, nothing persisted, queues
    as deep as asked, polyport's in-flight window."""
    lines = mosquitto_config(41883, 100_000).splitlines()
    assert "listener 41883 127.0.0.1" in lines
    assert {"allow_anonymous true", "persistence false", "max_queued_messages 100000"} <= set(lines)
    assert "max_inflight_messages 64" in lines


def test_the_receive_maximum_is_read_among_other_connack_properties() -> None:
    """A CONNACK's Receive Maximum is found past properties before it; 65,535 when unsaid."""
    from polyport.edges.mqtt.codec import encode_connack

    said = encode_connack(5, 0, props=[(0x1F, "hi\x21\x00"), (0x22, 10), (0x21, 20)])
    assert receive_maximum_of(said[2:]) == 20
    assert receive_maximum_of(encode_connack(5, 0)[2:]) == 65535


@pytest.mark.parametrize(
    "options", [{"messages": 10}, {"publishers": 0}, {"rate": 0}, {"topics": "loose"}]
)
def test_bad_options_are_one_line(options: dict[str, object], tmp_path: Path) -> None:
    """A number out of range or an unknown topics mode is a ConfigError, nothing started."""
    with pytest.raises(ConfigError):
        run_mqtt_bench(console=Console(file=io.StringIO()), output=tmp_path, **options)  # type: ignore[arg-type]


def test_a_missing_mosquitto_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the broker installed, the error says how to install it."""
    from polyport.bench import mqtt_targets

    monkeypatch.setattr("shutil.which", lambda name: None)
    monkeypatch.setattr(mqtt_targets, "MOSQUITTO_PATHS", ())
    with pytest.raises(ConfigError, match="apt-get install mosquitto"):
        mosquitto_binary()
