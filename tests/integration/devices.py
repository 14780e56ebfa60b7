"""Test devices for the integration tests: paho clients speaking PROTOCOL.md v1.

`TestDevice` connects with its own client id (its uuid by default), can set a
Last Will, publishes announce / telemetry / status / response in JSON or
MessagePack, and records every command the gateway sends it. `Watcher`
records what the gateway publishes (availability, gateway status).
Every wait has a deadline; nothing sleeps to let things settle.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Any

import msgpack
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from tests.support.broker import wait_until

PREFIX = "autocore"
WAIT_S = 10.0


def encode(obj: Any, encoding: str = "json") -> bytes:
    if encoding == "msgpack":
        return msgpack.packb(obj, use_bin_type=True)
    return json.dumps(obj).encode()


def decode(payload: bytes) -> Any:
    """JSON or MessagePack, told apart by the first byte as the gateway does."""
    if payload[:1] in (b"{", b" ", b"\t", b"\r", b"\n"):
        return json.loads(payload)
    return msgpack.unpackb(payload, raw=False)


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    at: float

    @property
    def body(self) -> Any:
        return decode(self.payload)


class _Client:
    """A paho v5 client run by its own loop thread, connected and subscribed."""

    def __init__(self, port: int, client_id: str) -> None:
        self.port = port
        self.client_id = client_id
        self.client: mqtt.Client | None = None
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._connected = threading.Event()
        self.subscriptions: list[tuple[str, int]] = []

    def _make(self) -> mqtt.Client:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5)
        client.on_connect = self._on_connect
        client.on_subscribe = lambda *a: self._subscribed.set()
        client.on_message = self._on_message
        return client

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            return
        self._connected.set()
        if self.subscriptions:
            client.subscribe([(t, mqtt.SubscribeOptions(qos=q)) for t, q in self.subscriptions])
        else:
            self._subscribed.set()

    def _on_message(self, client, userdata, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.received.append(Received(message.topic, bytes(message.payload), message.qos, bool(message.retain),
                                           time.time()))

    def _start(self, client: mqtt.Client) -> None:
        self.client = client
        self._connected.clear()
        self._subscribed.clear()
        client.connect("127.0.0.1", self.port, keepalive=30)
        client.loop_start()
        wait_until(self._subscribed.is_set, WAIT_S, what=f"{self.client_id} to connect and subscribe")

    def messages(self, topic: str | None = None) -> list[Received]:
        with self._lock:
            return [m for m in self.received if topic is None or m.topic == topic]

    def disconnect(self) -> None:
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()
            self.client = None


class TestDevice(_Client):
    """One v1 device. `commands` are the Command payloads it received."""

    __test__ = False  # not a pytest test class

    def __init__(self, port: int, uuid: str, *, prefix: str = PREFIX, encoding: str = "json",
                 client_id: str | None = None) -> None:
        super().__init__(port, client_id or uuid)
        self.uuid = uuid
        self.prefix = prefix
        self.encoding = encoding
        self.subscriptions = [(self.topic("command"), 2), (self.topic("relay/command"), 2)]

    def topic(self, kind: str) -> str:
        if kind == "discovery":
            return f"{self.prefix}/discovery/{self.uuid}"
        return f"{self.prefix}/devices/{self.uuid}/{kind}"

    # -- connection --------------------------------------------------------

    def connect(self, will_boot_id: int | None = None) -> TestDevice:
        """Connect; with `will_boot_id`, the Last Will is the offline status for that boot."""
        client = self._make()
        if will_boot_id is not None:
            client.will_set(self.topic("status"), encode({"status": "offline", "boot_id": will_boot_id}, self.encoding),
                            qos=1, retain=True)
        self._start(client)
        return self

    def drop(self) -> None:
        """Go away so that the broker publishes the Last Will (MQTT v5 reason
        0x04, "disconnect with will message": what a lost connection does,
        without waiting for the keep-alive)."""
        assert self.client is not None
        self.client.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, identifier=0x04))
        self.client.loop_stop()
        self.client = None

    # -- publishing --------------------------------------------------------

    def publish(self, kind: str, payload: Any, *, qos: int = 1, retain: bool = False, encoding: str | None = None,
                topic: str | None = None, wait: bool = True) -> mqtt.MQTTMessageInfo:
        """Publish a dict (encoded) or raw bytes on `kind` (or a full `topic`)."""
        assert self.client is not None, "connect() first"
        data = payload if isinstance(payload, (bytes, bytearray)) else encode(payload, encoding or self.encoding)
        info = self.client.publish(topic or self.topic(kind), data, qos=qos, retain=retain)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS, mqtt.error_string(info.rc)
        if wait and qos > 0:
            info.wait_for_publish(WAIT_S)
            assert info.is_published(), f"{self.uuid}: publish on {kind} not acknowledged by the broker"
        return info

    def announce(self, boot_id: int | None = 1, status_interval: float = 5.0, **extra: Any) -> None:
        payload = {"device_type": "relay_board", "firmware_version": "1.2.0", "capabilities": ["relay"],
                   "status_interval": status_interval, **extra}
        if boot_id is not None:
            payload["boot_id"] = boot_id
        self.publish("announce", payload)

    def telemetry(self, seq: int | None = None, boot_id: int | None = None, qos: int = 1, wait: bool = True,
                  **sections: Any) -> None:
        payload: dict[str, Any] = dict(sections) or {"analog_sensors": {"fuel_level": 67.8}}
        if seq is not None:
            payload["seq"] = seq
        if boot_id is not None:
            payload["boot_id"] = boot_id
        self.publish("telemetry", payload, qos=qos, wait=wait)

    def availability(self, online: bool, boot_id: int | None = None) -> None:
        payload: dict[str, Any] = {"status": "online" if online else "offline"}
        if boot_id is not None:
            payload["boot_id"] = boot_id
        self.publish("status", payload, retain=True)

    def respond(self, command_id: str, success: bool = True, result: Any = None, error_message: str | None = None) -> None:
        self.publish("response", {"command_id": command_id, "success": success, "result": result,
                                  "error_message": error_message, "execution_time": 0.1})

    def accept(self, command_id: str) -> None:
        self.publish("response", {"command_id": command_id, "status": "accepted"})

    # -- commands received -------------------------------------------------

    @property
    def commands(self) -> list[dict]:
        return [m.body for m in self.messages() if m.topic in (self.topic("command"), self.topic("relay/command"))]

    def command_messages(self) -> list[Received]:
        return [m for m in self.messages() if m.topic in (self.topic("command"), self.topic("relay/command"))]

    def wait_commands(self, count: int, timeout: float = WAIT_S) -> list[dict]:
        wait_until(lambda: len(self.commands) >= count, timeout, what=f"{self.uuid} to receive {count} command(s)")
        return self.commands


class Watcher(_Client):
    """Records what arrives on `filters` (retained messages included)."""

    def __init__(self, port: int, *filters: str, client_id: str = "test-watcher") -> None:
        super().__init__(port, client_id)
        self.subscriptions = [(f, 1) for f in filters]

    def connect(self) -> Watcher:
        self._start(self._make())
        return self

    def last(self, topic: str) -> Received | None:
        found = self.messages(topic)
        return found[-1] if found else None

    def wait_last(self, topic: str, payload: bytes, timeout: float = WAIT_S) -> Received:
        def ok():
            m = self.last(topic)
            return m if m is not None and m.payload == payload else None

        return wait_until(ok, timeout, what=f"{payload!r} as the latest message on {topic}")


def retained(port: int, topic: str) -> bytes | None:
    """What the broker holds retained on `topic` now, read with a fresh
    subscription. The broker queues a retained message while it handles the
    SUBSCRIBE, before it handles our later PUBLISH of a marker on a second
    topic, and delivers both in order on one connection: once the marker is
    back, the retained message (if any) is too."""
    marker_topic = f"test/marker/{time.monotonic_ns()}"
    w = Watcher(port, topic, marker_topic, client_id=f"retained-{time.monotonic_ns()}").connect()
    try:
        assert w.client is not None
        w.client.publish(marker_topic, b"marker", qos=1)
        wait_until(lambda: w.messages(marker_topic), WAIT_S, what="the marker message")
        found = [m for m in w.messages(topic) if m.retain]
        return found[-1].payload if found else None
    finally:
        w.disconnect()
