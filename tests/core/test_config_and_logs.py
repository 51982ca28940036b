"""Settings from files and environment; structured log lines."""

from __future__ import annotations

import logging
from pathlib import Path

import orjson
import pytest

from polyport import ConfigError, load_settings
from polyport.core.logs import JsonFormatter


def test_layers_override_in_order(tmp_path: Path) -> None:
    """Defaults < file < environment < flags; nested keys via '__'; JSON values parsed."""
    config = tmp_path / "polyport.toml"
    config.write_text('port = 9000\ndatabase = "file.db"\n[rate_limit]\nrate = 5.0\nburst = 9\n')
    settings = load_settings(
        config,
        environ={
            "POLYPORT_PORT": "9100",
            "POLYPORT_RATE_LIMIT__BURST": "50",
            "POLYPORT_CORS_ORIGINS": '["https://a.example"]',
            "POLYPORT_AUTH__API_KEYS": '[{"key": "k", "subject": "s", "scopes": ["*"]}]',
            "POLYPORT_REQUIRE_SERVICES": "1",
            "UNRELATED": "x",
        },
        overrides={"port": 9200, "host": None},
    )
    assert settings.port == 9200
    assert settings.database == "file.db"
    assert settings.rate_limit.rate == 5.0 and settings.rate_limit.burst == 50
    assert settings.cors_origins == ["https://a.example"]
    assert settings.auth.api_keys[0].subject == "s"
    assert settings.host == "127.0.0.1"


def test_errors_name_the_setting_and_its_source(tmp_path: Path) -> None:
    """One line: which setting, from where, what is wrong."""
    with pytest.raises(
        ConfigError, match=r"history\.max_events \(from POLYPORT_HISTORY__MAX_EVENTS\)"
    ):
        load_settings(environ={"POLYPORT_HISTORY__MAX_EVENTS": "0"})
    with pytest.raises(ConfigError, match="exactly one of 'key' and 'key_sha256'"):
        load_settings(environ={"POLYPORT_AUTH__API_KEYS": '[{"subject": "s"}]'})
    with pytest.raises(ConfigError, match="hs256_secret' or 'rs256_public_key"):
        load_settings(environ={"POLYPORT_AUTH__JWT__LEEWAY": "5"})


def test_trusted_proxies_are_addresses_or_networks() -> None:
    """server.trusted_proxies: a JSON list from the environment; an entry that is no network
    stops the start naming it; forwarded_header is one of two headers."""
    settings = load_settings(
        environ={"POLYPORT_SERVER__TRUSTED_PROXIES": '["127.0.0.1", "10.0.0.0/8", "fd00::/8"]'}
    )
    assert settings.server.trusted_proxies == ["127.0.0.1", "10.0.0.0/8", "fd00::/8"]
    assert settings.server.forwarded_header == "x-forwarded-for"
    with pytest.raises(
        ConfigError,
        match=r"server\.trusted_proxies \(from POLYPORT_SERVER__TRUSTED_PROXIES\): "
        r"Value error, 'proxy\.internal' is not an IP address or network",
    ):
        load_settings(environ={"POLYPORT_SERVER__TRUSTED_PROXIES": '["proxy.internal"]'})
    with pytest.raises(ConfigError, match=r"server\.forwarded_header"):
        load_settings(environ={"POLYPORT_SERVER__FORWARDED_HEADER": "x-real-ip"})


def test_json_log_lines_carry_extra_fields() -> None:
    """Each record is one JSON object with time, level, logger, message and extras."""
    record = logging.LogRecord(
        "polyport.test", logging.ERROR, __file__, 1, "failed %s", ("x",), None
    )
    record.request_id = "abc123"
    line = JsonFormatter().format(record)
    entry = orjson.loads(line)
    assert entry["level"] == "error" and entry["logger"] == "polyport.test"
    assert entry["message"] == "failed x" and entry["request_id"] == "abc123"
    assert entry["time"].endswith("Z") and "\n" not in line
