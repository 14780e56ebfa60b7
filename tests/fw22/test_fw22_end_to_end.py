"""Firmware 2.2 boards end to end (issue 7): simulated boards as the firmware
behaves today, a real Mosquitto, the gateway as a subprocess, the SQLite file
read back. Liveness from the relay's period, commands that end in timeout,
succeeded and failed, and heartbeat holds timed on the wire."""

from __future__ import annotations

import threading
import time

import paho.mqtt.client as mqtt
import pytest

from simulator import Fleet, FleetConfig, Fw22Options
from storage.commands import get_command, insert_command, request_cancel
from tests.fw22.helpers import query, running_gateway
from tests.support.broker import wait_until

RELAY_PERIOD_S = 1.0  # the relay's status period, shortened through AUTOCORE_FW22_PERIODS


@pytest.fixture
def gateway(broker, tmp_path):
    with running_gateway(broker, tmp_path, fw22_periods=f"esp32_relay={RELAY_PERIOD_S}", device_timeout_s=1,
                         command_timeout_s=1.5, command_poll_ms=50) as gw:
        yield gw


def fleet_of(broker, kinds, **fw22):
    config = FleetConfig(devices=kinds, port=broker.port, duration=60, seed=11,
                         fw22=Fw22Options(state_interval=fw22.pop("state_interval", 0.3), **fw22))
    fleet = Fleet(config)
    return fleet, {d.kind: d.uuid for d in fleet.devices}


def status_of(gw, uuid):
    rows = query(gw, "SELECT status, protocol FROM gateway_devices WHERE uuid = ?", (uuid,))
    return rows[0] if rows else None


def finished(command_id):
    row = get_command(command_id)
    return row if row is not None and row.is_final else None


class WireWatch:
    """A client that records when messages pass on some topics."""

    def __init__(self, port, topics):
        self.seen: list[tuple[float, str, bytes]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"watch-{time.monotonic_ns()}")
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe([(t, 0) for t in topics])
        self.client.loop_start()

    def _on_message(self, client, userdata, msg):
        with self.lock:
            self.seen.append((time.monotonic(), msg.topic, msg.payload))

    def times(self, suffix):
        with self.lock:
            return [t for t, topic, _ in self.seen if topic.endswith(suffix)]

    def payloads(self, suffix):
        with self.lock:
            return [p for _, topic, p in self.seen if topic.endswith(suffix)]

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()


def test_registration_liveness_from_the_relay_period_will_and_return(broker, gateway):
    fleet, uuids = fleet_of(broker, {"fw22_relay": 1})
    relay = uuids["fw22_relay"]
    fleet.start()
    try:
        # Registered from its first combined status, as a 2.2 device.
        wait_until(lambda: status_of(gateway, relay) == ("online", "fw22"), 10, what="relay registered online")
        device_type = query(gateway, "SELECT device_type FROM gateway_devices WHERE uuid = ?", (relay,))[0][0]
        assert device_type == "esp32_relay"
        wait_until(lambda: query(gateway, "SELECT COUNT(*) FROM telemetry WHERE device_uuid = ? AND metric LIKE 'relay.%.state'",
                                 (relay,))[0][0] >= 16, 10, what="relays/state rows")
        # Silent without a Will: offline after max(3 x its period, the minimum).
        silent_from = time.time()
        fleet.flap(relay, down=6.0, silent=True).result(5)
        wait_until(lambda: status_of(gateway, relay)[0] == "offline", 10, what="offline by timeout")
        waited = time.time() - silent_from
        assert 3 * RELAY_PERIOD_S - 0.5 <= waited <= 3 * RELAY_PERIOD_S + 2.0
        detail = query(gateway, "SELECT detail FROM device_events WHERE device_uuid = ? AND event = 'offline' "
                                "ORDER BY id DESC LIMIT 1", (relay,))[0][0]
        assert '"reason":"timeout"' in detail
        # Back online with its next live message (its reconnection's status).
        wait_until(lambda: status_of(gateway, relay)[0] == "online", 15, what="back online")
        # The Last Will (no boot_id) takes it offline with the Will's reason.
        fleet.flap(relay, down=30.0, silent=False).result(5)
        wait_until(lambda: status_of(gateway, relay)[0] == "offline", 10, what="offline by its Will")
        events = query(gateway, "SELECT event FROM device_events WHERE device_uuid = ? ORDER BY id", (relay,))
        assert [e for (e,) in events].count("offline") == 2
    finally:
        fleet.stop()
        fleet.join(10)


def test_relay_command_outcomes_against_both_firmwares(broker, gateway):
    fleet, uuids = fleet_of(broker, {"fw22_relay": 1, "fw22_relay_switching": 1})
    today, switching = uuids["fw22_relay"], uuids["fw22_relay_switching"]
    fleet.start()
    try:
        for uuid in (today, switching):
            wait_until(lambda u=uuid: status_of(gateway, u) == ("online", "fw22"), 10, what=f"{uuid} online")
        now = time.time()
        # Today's firmware parses relays/set and switches nothing: no confirmation.
        unconfirmed = insert_command(today, "relay_control", {"channel": 3, "state": True}, now=now, ttl_s=60,
                                     timeout=1.0, max_attempts=2)
        # The switching variant reports relays/state at once: confirmed.
        confirmed = insert_command(switching, "relay_control", {"channel": 3, "command": "on"}, now=now, ttl_s=60)
        # A channel the board does not have: rejected, echoed with our id.
        rejected = insert_command(switching, "relay_control", {"channel": 17, "state": True}, now=now, ttl_s=60)
        row = wait_until(lambda: finished(confirmed), 10, what="confirmed command")
        assert row.status == "succeeded" and row.attempts == 1
        row = wait_until(lambda: finished(rejected), 10, what="rejected command")
        assert row.status == "failed"
        assert "ERR_" in row.error_message
        row = wait_until(lambda: finished(unconfirmed), 15, what="unconfirmed command")
        assert row.status == "timeout"
        assert row.attempts == 2  # an "on" follows the usual retry rule
        assert "no confirmation" in row.error_message
        # A toggle is never sent twice.
        toggle = insert_command(today, "relay_control", {"channel": 4, "command": "toggle"}, now=time.time(),
                                ttl_s=60, timeout=1.0, max_attempts=3)
        row = wait_until(lambda: finished(toggle), 15, what="toggle")
        assert (row.status, row.attempts) == ("timeout", 1)
    finally:
        fleet.stop()
        fleet.join(10)


def test_a_two_second_hold_keeps_the_relay_on_for_two_seconds(broker, gateway):
    fleet, uuids = fleet_of(broker, {"fw22_relay": 1})
    relay = uuids["fw22_relay"]
    watch = WireWatch(broker.port, [f"autocore/devices/{relay}/relays/heartbeat", "autocore/telemetry/relays/data"])
    fleet.start()
    try:
        wait_until(lambda: status_of(gateway, relay) == ("online", "fw22"), 10, what="relay online")
        hold = insert_command(relay, "relay_control", {"channel": 5, "state": True, "duration": 2000},
                              now=time.time(), ttl_s=60)
        row = wait_until(lambda: finished(hold), 10, what="hold finished")
        assert row.status == "succeeded"
        wait_until(lambda: any(b'"safety_shutoff"' in p for p in watch.payloads("relays/data")), 5,
                   what="the relay letting go")
        beats = watch.times("relays/heartbeat")
        off = [t for t, topic, p in watch.seen if topic.endswith("relays/data") and b"safety_shutoff" in p][0]
        on_for = off - beats[0]
        assert 1.7 <= on_for <= 2.3, f"relay on for {on_for:.2f} s"
        gaps = [b - a for a, b in zip(beats, beats[1:])]
        assert max(gaps) < 0.6  # never near the relay's 1 s release
        # The shutoff after the release is recorded, and changes no outcome.
        wait_until(lambda: query(gateway, "SELECT COUNT(*) FROM device_events WHERE device_uuid = ? "
                                          "AND event = 'safety_shutoff'", (relay,))[0][0] >= 1, 5,
                   what="the shutoff recorded as an event")
        assert finished(hold).status == "succeeded"
    finally:
        watch.close()
        fleet.stop()
        fleet.join(10)


def test_a_cancelled_hold_stops_its_heartbeats_at_once(broker, gateway):
    fleet, uuids = fleet_of(broker, {"fw22_relay": 1})
    relay = uuids["fw22_relay"]
    watch = WireWatch(broker.port, [f"autocore/devices/{relay}/relays/heartbeat"])
    fleet.start()
    try:
        wait_until(lambda: status_of(gateway, relay) == ("online", "fw22"), 10, what="relay online")
        hold = insert_command(relay, "relay_control", {"channel": 6, "state": True, "duration": 10000},
                              now=time.time(), ttl_s=60)
        wait_until(lambda: len(watch.times("relays/heartbeat")) >= 3, 5, what="the hold under way")
        assert request_cancel(hold, time.time())
        cancelled_at = time.monotonic()
        row = wait_until(lambda: finished(hold), 5, what="hold cancelled")
        assert row.status == "cancelled"
        last = watch.times("relays/heartbeat")[-1]
        # Picked up within a poll (50 ms) and stopped: no heartbeat long after.
        assert last - cancelled_at < 0.5
        count = len(watch.times("relays/heartbeat"))
        # Nothing more follows (the relay falls by itself 1 s after the last one).
        with pytest.raises(AssertionError, match="timed out"):
            wait_until(lambda: len(watch.times("relays/heartbeat")) > count, 1.5, what="another heartbeat")
    finally:
        watch.close()
        fleet.stop()
        fleet.join(10)
