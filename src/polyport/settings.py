"""Everything a node can be configured with: the core's settings and each edge's section.

The core declares the node-wide settings and its own sections
(:class:`~polyport.core.config.CoreSettings`: host, port, database, history,
limits, server, auth, rate limit, jobs, metrics, log). Each edge declares its
section beside its code — ``edges/grpc/config.py``, ``edges/graphql/config.py``,
… — and the sections two edges share live beside what they share: ``[xml]``
with the hardened XML parser, ``[websocket]`` with the WebSocket interface.
This module puts them together, so that:

* files, ``POLYPORT_*`` variables, flags and Python all read into one class,
  with one set of keys, defaults and messages (``POLYPORT_GRPC__PORT=0``);
* ``Settings().grpc.port`` is typed, for mypy and for an editor;
* the core names no edge. Code given the settings as ``CoreSettings`` (the
  :class:`~polyport.core.runtime.Runtime` does) reads a section by its type,
  ``runtime.settings.section(GrpcConfig)``.

Every section imports without its edge's optional dependencies (grpcio,
graphql-core, lxml, websockets): a node without an extra still accepts, and
checks, that extra's settings.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from polyport.core.config import CoreSettings, read_settings
from polyport.demo.config import DemoConfig
from polyport.edges.graphql.config import GraphQLConfig
from polyport.edges.grpc.config import GrpcConfig
from polyport.edges.hooks.config import HooksConfig
from polyport.edges.jsonrpc.config import JsonRpcConfig
from polyport.edges.mqtt.config import MqttConfig
from polyport.edges.sse.config import SseConfig
from polyport.edges.webhooks.config import WebhooksConfig
from polyport.edges.webrtc.config import WebRtcConfig
from polyport.http.websocket_config import WebSocketConfig
from polyport.xmlsafe import XmlConfig


class Settings(CoreSettings):
    """Everything a node can be configured with (see ``docs/configuration.md``)."""

    websocket: WebSocketConfig = WebSocketConfig()
    sse: SseConfig = SseConfig()
    jsonrpc: JsonRpcConfig = JsonRpcConfig()
    xml: XmlConfig = XmlConfig()
    grpc: GrpcConfig = GrpcConfig()
    mqtt: MqttConfig = MqttConfig()
    graphql: GraphQLConfig = GraphQLConfig()
    webhooks: WebhooksConfig = WebhooksConfig()
    hooks: HooksConfig = HooksConfig()
    webrtc: WebRtcConfig = WebRtcConfig()
    demo: DemoConfig = DemoConfig()


def load_settings(
    file: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    base: Mapping[str, Any] | None = None,
) -> Settings:
    """Settings from ``base`` < ``file`` (TOML) < environment < ``overrides``.

    Raises :class:`~polyport.core.errors.ConfigError` with one line naming the
    bad value and its source.
    """
    return read_settings(Settings, file, environ=environ, overrides=overrides, base=base)
