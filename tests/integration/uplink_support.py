"""The fleet side of the uplink tests: a collector on the fleet broker that
keeps every row it receives by (vehicle, db, lane, id), counting repeats,
and the time each first arrived; a fleet command sender; a device
publishing fresh telemetry. The bench's uplink scenarios use them too."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from protocol.uplink import commands_topic, decode_batch, encode_command, FleetCommand
from tests.support.broker import wait_until


class FleetCollector:
    """Subscribes (QoS 1, persistent session) to `{prefix}/+/data`."""

    def __init__(self, port: int, prefix: str = "fleet", client_id: str = "fleet-collector",
                 host: str = "127.0.0.1") -> None:
        self.port = port
        self.host = host
        self.prefix = prefix
        self.lock = threading.Lock()
        self.rows: dict[tuple[str, str, str, int], dict] = {}
        self.first_seen: dict[tuple[str, str, str, int], float] = {}
        self.copies: Counter = Counter()
        self.batches = 0
        self.subscribed = threading.Event()  # cleared while the broker is away
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.client.reconnect_delay_set(0.2, 0.5)  # type: ignore[arg-type]  # back soon after a broker restart
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_disconnect = lambda *a: self.subscribed.clear()

    def _on_connect(self, c: Any, u: Any, flags: Any, reason: Any, props: Any) -> None:
        c.subscribe(f"{self.prefix}/+/data", qos=1)

    def _on_message(self, c: Any, u: Any, msg: Any) -> None:
        now = time.time()
        b = decode_batch(msg.payload)
        with self.lock:
            self.batches += 1
            for row in b.rows:
                key = (b.vehicle_id, b.database_id, b.lane, row["id"])
                self.copies[key] += 1
                if key not in self.rows:
                    self.rows[key] = row
                    self.first_seen[key] = now

    def start(self) -> "FleetCollector":
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        props.ReceiveMaximum = 65535
        self.client.connect(self.host, self.port, clean_start=False, properties=props)
        self.client.loop_start()
        if not self.subscribed.wait(10):
            raise AssertionError(f"the fleet collector did not subscribe at {self.host}:{self.port}")
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def ids(self, lane: str) -> set[int]:
        with self.lock:
            return {k[3] for k in self.rows if k[2] == lane}

    def lane_rows(self, lane: str) -> list[dict]:
        with self.lock:
            return [r for k, r in sorted(self.rows.items()) if k[2] == lane]

    def count(self, lane: str) -> int:
        with self.lock:
            return sum(1 for k in self.rows if k[2] == lane)

    def arrivals(self, lane: str) -> list[tuple[float, dict]]:
        """(when it first arrived, the row) of each row of the lane."""
        with self.lock:
            return [(self.first_seen[k], r) for k, r in self.rows.items() if k[2] == lane]

    def repeats(self, lane: str) -> int:
        """Deliveries of a row already there (what the fleet side's key drops)."""
        with self.lock:
            return sum(n - 1 for k, n in self.copies.items() if k[2] == lane)


def send_fleet_command(port: int, vehicle: str, command: FleetCommand, prefix: str = "fleet") -> None:
    """Publish one fleet command at QoS 1 and wait for the broker's PUBACK."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"fleet-sender-{command.origin_id}",
                         protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        info = client.publish(commands_topic(prefix, vehicle), encode_command(command), qos=1)
        info.wait_for_publish(10)
        assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()


class FreshPublisher:
    """A device publishing telemetry stamped with the time it is sent
    (`rate` messages/s, QoS 1) until stopped: the fresh data during a
    replay. A message counts as sent once the broker acknowledged it."""

    def __init__(self, port: int, uuid: str, rate: float = 20.0) -> None:
        self.uuid, self.interval = uuid, 1.0 / rate
        self.published = 0
        self.sent = 0  # acknowledged by the broker
        self.stop_flag = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{uuid}-pub", protocol=mqtt.MQTTv5)
        self.client.on_publish = self._on_publish
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _on_publish(self, c: Any, u: Any, mid: int, reason: Any, props: Any) -> None:
        if not reason.is_failure:
            self.sent += 1  # paho's network thread only

    def start(self) -> "FreshPublisher":
        self.thread.start()
        return self

    def _run(self) -> None:
        import json

        seq = 0
        while not self.stop_flag.wait(self.interval):
            seq += 1
            payload = json.dumps({"seq": seq, "boot_id": 1, "timestamp": time.time(), "analog_sensors": {"speed": seq}})
            info = self.client.publish(f"autocore/devices/{self.uuid}/telemetry", payload, qos=1)
            assert info.rc == mqtt.MQTT_ERR_SUCCESS, info.rc
            self.published = seq

    def stop(self) -> int:
        """Stop, wait for the last PUBACK, disconnect: the messages sent."""
        self.stop_flag.set()
        self.thread.join(5)
        wait_until(lambda: self.sent >= self.published, 10, what="the fresh messages' PUBACKs",
                   progress=lambda: f"{self.sent} of {self.published}")
        self.client.disconnect()
        self.client.loop_stop()
        return self.sent
