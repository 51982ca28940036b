"""paho-mqtt clients driven synchronously, for tests."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

V5 = mqtt.MQTTv5
V311 = mqtt.MQTTv311


@dataclass
class Paho:
    """One connected paho client and what it received."""

    client: mqtt.Client
    messages: queue.Queue[mqtt.MQTTMessage] = field(default_factory=queue.Queue)
    acks: queue.Queue[Any] = field(default_factory=queue.Queue)
    closed: threading.Event = field(default_factory=threading.Event)
    disconnect_reason: Any = None
    #: CONNACK's Session Present flag, and its MQTT 5 properties.
    session_present: bool = False
    connack_properties: Any = None

    def subscribe(self, topic: str, qos: int = 0) -> list[int]:
        """Subscribe and wait for the SUBACK: its codes, as numbers."""
        self.client.subscribe(topic, qos)
        codes = self.acks.get(timeout=5)
        return [int(c.value) if isinstance(c, ReasonCode) else int(c) for c in codes]

    def publish(self, topic: str, payload: bytes | str, qos: int = 0) -> mqtt.MQTTMessageInfo:
        info = self.client.publish(topic, payload, qos)
        if qos:
            info.wait_for_publish(5)
        return info

    def message(self, timeout: float = 5.0) -> mqtt.MQTTMessage:
        return self.messages.get(timeout=timeout)

    def close(self) -> None:
        """DISCONNECT, and wait until paho has closed its socket."""
        self.client.disconnect()
        self.closed.wait(5)
        self.stop()

    def stop(self) -> None:
        """Stop the network thread and close the socket, connected or not."""
        self.client.loop_stop()
        sock = self.client.socket()
        if sock is not None:
            sock.close()
        # paho's wake-up socket pair is a TCP pair on loopback, left open by loop_stop.
        for name in ("_sockpairR", "_sockpairW"):
            pair = getattr(self.client, name, None)
            if pair is not None:
                pair.close()


def paho(
    port: int,
    version: int = V5,
    *,
    password: str | None = None,
    client_id: str = "",
    expect: int = 0,
    clean: bool = True,
    expiry: int | None = None,
    transport: str = "tcp",
    setup: Callable[[mqtt.Client], None] | None = None,
) -> tuple[Paho, int]:
    """A paho client connected to ``port``: the client and the CONNACK code it got.

    ``clean`` is Clean Start (MQTT 5) or clean session (3.1.1); ``expiry`` the MQTT 5
    Session Expiry Interval; ``setup`` is called with the client before it connects
    (``will_set``, say). ``expect`` other than 0 is a refusal the caller checks;
    the client is stopped then.
    """
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=version,
        reconnect_on_failure=False,
        clean_session=None if version == V5 else clean,
        transport=transport,
    )
    if transport == "websockets":
        client.ws_set_options(path="/mqtt")
    if password is not None:
        client.username_pw_set("device", password)
    box = Paho(client)
    connacks: queue.Queue[int] = queue.Queue()

    def on_connect(c: Any, u: Any, flags: Any, code: ReasonCode, p: Any) -> None:
        # paho reports a 3.1.1 return code as its MQTT 5 reason code (5 → 0x87).
        box.session_present = bool(flags.session_present)
        box.connack_properties = p
        connacks.put(int(code.value))

    def on_disconnect(c: Any, u: Any, flags: Any, code: ReasonCode, p: Any) -> None:
        box.disconnect_reason = code
        box.closed.set()

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    client.on_message = lambda c, u, m: box.messages.put(m)
    client.on_subscribe = lambda c, u, mid, codes, p: box.acks.put(codes)
    client.on_publish = lambda c, u, mid, code, p: None
    if setup is not None:
        setup(client)
    if version == V5:
        props = None
        if expiry is not None:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = expiry
        client.connect("127.0.0.1", port, keepalive=30, clean_start=clean, properties=props)
    else:
        client.connect("127.0.0.1", port, keepalive=30)
    client.loop_start()
    code = connacks.get(timeout=5)
    if code != 0:
        box.stop()
    return box, code


def user_properties(message: mqtt.MQTTMessage) -> dict[str, str]:
    props: Properties | None = message.properties
    pairs = getattr(props, "UserProperty", []) if props is not None else []
    return dict(pairs)
