"""The bridge's settings: URLs, patterns, and the rule that keeps a bridge free of loops."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from polyport import Settings


def bridge(**values: object) -> Settings:
    return Settings.model_validate({"mqtt": {"bridge": values}})


def test_a_bridge_is_off_until_a_url_is_set() -> None:
    """No URL, no bridge; the defaults are QoS 1, no retain, group polyport."""
    config = Settings().mqtt.bridge
    assert config.url is None
    assert (config.qos, config.retain, config.group) == (1, False, "polyport")


def test_the_bridge_settings_read_from_the_environment() -> None:
    """``POLYPORT_MQTT__BRIDGE__…`` variables set the ``[mqtt.bridge]`` section."""
    from polyport.settings import load_settings

    env = {
        "POLYPORT_MQTT__BRIDGE__URL": "mqtts://user:p%40ss@broker.example:8883",
        "POLYPORT_MQTT__BRIDGE__OUTGOING": '["alerts/#"]',
        "POLYPORT_MQTT__BRIDGE__QOS": "2",
    }
    config = load_settings(environ=env).mqtt.bridge
    assert config.url == "mqtts://user:p%40ss@broker.example:8883"
    assert (config.outgoing, config.qos) == (["alerts/#"], 2)


@pytest.mark.parametrize(
    "values",
    [
        {"url": "http://broker:1883"},
        {"url": "mqtt://"},
        {"url": "mqtt://broker:99999"},
        {"outgoing": ["a/#/b"]},
        {"incoming": ["a b"]},
        {"qos": 3},
        {"group": "has/slash"},
        {"prefix": "plant/+/"},
    ],
)
def test_bad_bridge_settings_are_refused(values: dict[str, object]) -> None:
    """A URL that is not mqtt(s)://, a bad pattern, QoS or group, a wildcard in the prefix."""
    with pytest.raises(ValidationError):
        bridge(**values)


def test_a_channel_is_bridged_one_way_only() -> None:
    """Outgoing and incoming patterns that share a channel are refused: they would loop."""
    with pytest.raises(ValidationError, match="one way only"):
        bridge(outgoing=["sensors/#"], incoming=["sensors/+/reading"])
    bridge(outgoing=["alerts/#"], incoming=["sensors/#"])
