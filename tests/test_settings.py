"""The node's settings: the core's sections and each edge's own, read as one class."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import get_args, get_origin

import pytest
from pydantic import BaseModel

from polyport import ConfigError, Settings, load_settings
from polyport.core.config import AuthConfig, CoreSettings
from polyport.edges.graphql.config import GraphQLConfig
from polyport.edges.grpc.config import GrpcConfig
from polyport.edges.hooks.config import HooksConfig
from polyport.edges.jsonrpc.config import JsonRpcConfig
from polyport.edges.sse.config import SseConfig
from polyport.edges.webhooks.config import WebhooksConfig
from polyport.http.websocket_config import WebSocketConfig
from polyport.xmlsafe import XmlConfig

DOCS = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"

#: Each section an edge (or two edges) owns, by its key in files and variables.
EDGE_SECTIONS: dict[str, type[BaseModel]] = {
    "websocket": WebSocketConfig,
    "sse": SseConfig,
    "jsonrpc": JsonRpcConfig,
    "xml": XmlConfig,
    "grpc": GrpcConfig,
    "graphql": GraphQLConfig,
    "webhooks": WebhooksConfig,
    "hooks": HooksConfig,
}


def test_every_edge_section_reads_from_a_file_variables_flags_and_python(
    tmp_path: Path,
) -> None:
    """Each edge's section keeps its key in TOML, POLYPORT_*__* and overrides, and its defaults."""
    config = tmp_path / "polyport.toml"
    config.write_text(
        textwrap.dedent(
            """
            [websocket]
            ping_interval = 3
            [sse]
            heartbeat = 2
            [jsonrpc]
            max_batch = 7
            [xml]
            max_depth = 10
            [grpc]
            port = 0
            [graphql]
            max_depth = 5
            [webhooks]
            jitter = 0.5
            [hooks]
            tolerance = 60
            """
        )
    )
    settings = load_settings(
        config,
        environ={
            "POLYPORT_GRPC__MAX_MESSAGE": "2048",
            "POLYPORT_WEBHOOKS__ALLOW_PRIVATE": '["127.0.0.1"]',
            "POLYPORT_HOOKS__SECRETS__PAYMENTS": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        },
        overrides={"graphql": {"timeout": 2.5}},
    )
    assert settings.websocket.ping_interval == 3 and settings.sse.heartbeat == 2
    assert settings.jsonrpc.max_batch == 7 and settings.xml.max_depth == 10
    assert settings.grpc.port == 0 and settings.grpc.max_message == 2048
    assert settings.graphql.max_depth == 5 and settings.graphql.timeout == 2.5
    assert settings.webhooks.jitter == 0.5 and settings.webhooks.allow_private == ["127.0.0.1"]
    assert settings.hooks.tolerance == 60 and "payments" in settings.hooks.secrets
    defaults = Settings()
    assert defaults.grpc.port == 50051 and defaults.websocket.ping_interval == 25.0
    assert defaults.webhooks.retry_schedule[:3] == [0.0, 5.0, 300.0]
    assert Settings(grpc={"port": 1}).grpc.port == 1
    for key, section in EDGE_SECTIONS.items():
        assert isinstance(getattr(defaults, key), section), key


def test_an_edge_sections_errors_name_the_setting_and_its_source() -> None:
    """The same one-line messages as every other section: the setting, its source, the fault."""
    with pytest.raises(
        ConfigError,
        match=r"^bad config value for grpc\.port \(from POLYPORT_GRPC__PORT\): "
        r"Input should be less than or equal to 65535$",
    ):
        load_settings(environ={"POLYPORT_GRPC__PORT": "70000"})
    with pytest.raises(ConfigError, match=r"webhooks\.secret_keys\.0: a key is 32 random bytes"):
        load_settings(environ={"POLYPORT_WEBHOOKS__SECRET_KEYS": '["short"]'})
    with pytest.raises(
        ConfigError, match=r"graphql\.nope \(from command line\): Extra inputs are not permitted"
    ):
        load_settings(environ={}, overrides={"graphql": {"nope": 1}})


def test_a_section_is_found_by_its_type() -> None:
    """Code holding CoreSettings (an edge, through the Runtime) reaches its section by type."""
    settings = Settings(grpc={"port": 0})
    assert settings.section(GrpcConfig) is settings.grpc
    assert settings.section(XmlConfig) is settings.xml
    assert settings.section(AuthConfig) is settings.auth
    with pytest.raises(ConfigError, match="CoreSettings has no section of type GrpcConfig"):
        CoreSettings().section(GrpcConfig)


def test_the_settings_import_without_any_optional_dependency() -> None:
    """Without grpcio, graphql-core and lxml, every setting is still read and checked.

    The node then switches those edges off, each naming the extra to install
    (the guard is in each edge's binding, which importing a section never loads).
    """
    script = textwrap.dedent(
        """
        import sys
        for name in ("grpc", "grpc_health", "grpc_reflection", "google.protobuf",
                     "graphql", "lxml"):
            sys.modules[name] = None  # import fails as if not installed
        from polyport.settings import load_settings
        settings = load_settings(environ={"POLYPORT_GRPC__PORT": "0",
                                          "POLYPORT_GRAPHQL__MAX_DEPTH": "3",
                                          "POLYPORT_XML__MAX_DEPTH": "9"})
        assert (settings.grpc.port, settings.graphql.max_depth, settings.xml.max_depth) == (0, 3, 9)
        assert not [m for m in sys.modules if m.endswith(".binding")], "a section loaded its edge"
        from polyport import Service
        from polyport.node import Node
        node = Node(Service("bare"), settings.model_copy(update={"database": ":memory:"}))
        for edge, extra in (("grpc", "grpc"), ("graphql", "graphql"), ("soap", "soap"),
                            ("xmlrpc", "rpc")):
            assert f"'{extra}' extra" in node.skipped[edge], node.skipped
        assert {"rest", "poll", "sse", "ws", "jsonrpc"} <= {e.name for e in node.edges}
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def _leaves(model: type[BaseModel], prefix: str = "") -> Iterator[str]:
    """Every setting's dotted path; lists of records (``auth.api_keys``) count as one."""
    for name, field in model.model_fields.items():
        annotation = field.annotation
        is_list = get_origin(annotation) is list
        candidates = () if is_list else (annotation, *get_args(annotation))  # X | None too
        section = next(
            (t for t in candidates if isinstance(t, type) and issubclass(t, BaseModel)), None
        )
        if section is None:
            yield prefix + name
        else:
            yield from _leaves(section, f"{prefix}{name}.")


def test_the_docs_name_every_setting() -> None:
    """docs/configuration.md has a row for each setting, wherever its section is declared.

    A row may name a setting in full (`grpc.port`), after its section's first
    setting (`graphql.max_aliases` / `.max_tokens`), or as a map
    (`hooks.secrets.<receiver>`).
    """
    text = DOCS.read_text(encoding="utf-8")
    missing = []
    for path in _leaves(Settings):
        section, _, key = path.rpartition(".")
        shorthand = (
            r"`" + re.escape(section) + r"\.[^`]*`[^|\n]*`\." + re.escape(key) + r"`"
            if section
            else None
        )
        if f"`{path}`" in text or f"`{path}." in text:
            continue
        if shorthand is not None and re.search(shorthand, text):
            continue
        missing.append(path)
    assert not missing, f"docs/configuration.md does not name {missing}"
