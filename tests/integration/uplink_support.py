"""The fleet side of the uplink tests: a second Mosquitto (the fleet
broker) and a collector that keeps every row it receives by (vehicle, db,
lane, id), counting repeats, and the time each first arrived."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from protocol.uplink import commands_topic, decode_batch, encode_command, FleetCommand


class FleetCollector:
    """Subscribes (QoS 1, persistent session) to `{prefix}/+/data`."""

    def __init__(self, port: int, prefix: str = "fleet", client_id: str = "fleet-collector") -> None:
        self.port = port
        self.prefix = prefix
        self.lock = threading.Lock()
        self.rows: dict[tuple[str, str, str, int], dict] = {}
        self.first_seen: dict[tuple[str, str, str, int], float] = {}
        self.copies: Counter = Counter()
        self.batches = 0
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.client.reconnect_delay_set(0.2, 0.5)  # type: ignore[arg-type]  # back soon after a broker restart
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message

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
        self.client.connect("127.0.0.1", self.port, clean_start=False, properties=props)
        self.client.loop_start()
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
    (`rate` messages/s, QoS 1) until stopped: the fresh data during a replay."""

    def __init__(self, port: int, uuid: str, rate: float = 20.0) -> None:
        self.uuid, self.interval = uuid, 1.0 / rate
        self.sent = 0
        self.stop_flag = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{uuid}-pub", protocol=mqtt.MQTTv5)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "FreshPublisher":
        self.thread.start()
        return self

    def _run(self) -> None:
        import json

        seq = 0
        while not self.stop_flag.wait(self.interval):
            seq += 1
            payload = json.dumps({"seq": seq, "boot_id": 1, "timestamp": time.time(), "analog_sensors": {"speed": seq}})
            self.client.publish(f"autocore/devices/{self.uuid}/telemetry", payload, qos=1)
            self.sent = seq

    def stop(self) -> int:
        self.stop_flag.set()
        self.thread.join(5)
        self.client.disconnect()
        self.client.loop_stop()
        return self.sent
