"""Telemetry, relay status and status reports → rows (PROTOCOL.md "Telemetry"),
stored once per (uuid, boot_id, seq, idx)."""

from __future__ import annotations

import time

import msgpack

from tests.integration.helpers import inspect
from tests.support.broker import wait_until

# The single-instance behaviour, on both backends (tests/integration/conftest.py).
ENGINES = ("sqlite", "postgresql")

FULL_TELEMETRY = {
    "timestamp": "2025-01-08T10:30:00Z", "seq": 981, "boot_id": 17,
    "can_data": {"signals": {"RPM": {"value": 2500, "unit": "rpm", "can_id": "0x200"}}},
    "analog_sensors": {"fuel_level": 67.8, "oil_pressure": 45.2},
    "system_status": {"cpu_temperature": 42.1, "memory_usage": 68, "wifi_signal": -58},
    "gps": {"latitude": -23.5505, "longitude": -46.6333, "altitude": 760, "speed": 65.4,
            "heading": 180.5, "satellites": 8, "accuracy": 3.2},
    "readings": [{"source": "sensor", "metric": "coolant_temp", "value": 88.5, "unit": "C"},
                 {"metric": "gear", "value": "D"}],
    "can_frames": [{"id": "0x123", "data": "0a1b2c3d", "timestamp": 1736332200.125}],
    "uptime": 86400, "door_open": True,
}
T0 = 1736332200.0  # 2025-01-08T10:30:00Z

# (idx, source, metric, value, unit, tag, raw, ts), in processor order.
FULL_ROWS = [
    (0, "can", "RPM", 2500.0, "rpm", "0x200", None, T0),
    (1, "analog", "fuel_level", 67.8, None, None, None, T0),
    (2, "analog", "oil_pressure", 45.2, None, None, None, T0),
    (3, "system", "cpu_temperature", 42.1, None, None, None, T0),
    (4, "system", "memory_usage", 68.0, None, None, None, T0),
    (5, "system", "wifi_signal", -58.0, None, None, None, T0),
    (6, "gps", "latitude", -23.5505, None, None, None, T0),
    (7, "gps", "longitude", -46.6333, None, None, None, T0),
    (8, "gps", "altitude", 760.0, None, None, None, T0),
    (9, "gps", "speed", 65.4, None, None, None, T0),
    (10, "gps", "heading", 180.5, None, None, None, T0),
    (11, "gps", "satellites", 8.0, None, None, None, T0),
    (12, "gps", "accuracy", 3.2, None, None, None, T0),
    (13, "sensor", "coolant_temp", 88.5, "C", None, None, T0),
    (14, "sensor", "gear", None, None, "D", None, T0),  # text that is no number goes to tag
    (15, "can_raw", "0x123", None, None, None, bytes.fromhex("0a1b2c3d"), 1736332200.125),
    (16, "system", "uptime", 86400.0, None, None, None, T0),
    (17, "system", "door_open", 1.0, None, None, None, T0),  # booleans are 1 and 0
]


def stored(db, uuid):
    return [(r["idx"], r["source"], r["metric"], r["value"], r["unit"], r["tag"],
             bytes(r["raw"]) if r["raw"] is not None else None, r["ts"]) for r in db.telemetry(uuid)]


def test_telemetry_is_stored_as_processed(gateway, db, devices):
    dev = devices()
    before = time.time()
    dev.publish("telemetry", FULL_TELEMETRY)
    wait_until(lambda: db.count(dev.uuid) == len(FULL_ROWS), 10, what="the telemetry rows")
    assert stored(db, dev.uuid) == FULL_ROWS
    for r in db.telemetry(dev.uuid):
        assert (r["device_uuid"], r["boot_id"], r["seq"]) == (dev.uuid, 17, 981)
        assert before - 1 <= r["received_at"] <= time.time() + 1
    # A telemetry message makes an unknown uuid a device (type unknown until it announces).
    wait_until(lambda: db.field(dev.uuid, "status") == "online", 5,
               what="the device row")


def test_the_same_message_twice_is_stored_once(gateway, db, devices):
    dev = devices()
    message = {"seq": 5, "boot_id": 2, "analog_sensors": {"fuel_level": 50.0, "oil_pressure": 3.1}}
    dev.publish("telemetry", message)
    dev.publish("telemetry", message)
    # Messages are handled in order: once seq 6 is stored, the repeat has been handled.
    dev.publish("telemetry", {**message, "seq": 6})
    wait_until(lambda: db.rows("SELECT 1 FROM telemetry WHERE device_uuid = ? AND seq = 6", dev.uuid), 10,
               what="seq 6")
    assert [(r["seq"], r["idx"], r["metric"]) for r in db.telemetry(dev.uuid)] == [
        (5, 0, "fuel_level"), (5, 1, "oil_pressure"), (6, 0, "fuel_level"), (6, 1, "oil_pressure")]
    # The device actor counts the repeat (its counters trail the rows a little).
    wait_until(lambda: inspect(gateway.socket_path, "device", uuid=dev.uuid)["device"]["counters"].get("seq_repeats") == 1,
               5, what="one repeat counted")


def test_msgpack_telemetry(gateway, db, devices):
    dev = devices(encoding="msgpack")
    dev.publish("telemetry", {"seq": 1, "boot_id": 4, "timestamp": T0,
                              "analog_sensors": {"fuel_level": 12.5},
                              "can_frames": [{"id": "0x7DF", "data": b"\x02\x01\x0c", "timestamp": T0 + 0.5}]})
    wait_until(lambda: db.count(dev.uuid) == 2, 10, what="the msgpack rows")
    assert stored(db, dev.uuid) == [
        (0, "analog", "fuel_level", 12.5, None, None, None, T0),
        (1, "can_raw", "0x7DF", None, None, None, b"\x02\x01\x0c", T0 + 0.5),
    ]
    wait_until(lambda: db.field(dev.uuid, "encoding") == "msgpack", 5, what="the device's encoding")
    # The same message again, as msgpack bytes built by hand: stored once.
    dev.publish("telemetry", msgpack.packb({"seq": 1, "boot_id": 4, "analog_sensors": {"fuel_level": 12.5}}))
    dev.publish("telemetry", {"seq": 2, "boot_id": 4, "analog_sensors": {"fuel_level": 12.0}})
    wait_until(lambda: db.count(dev.uuid) == 3, 10, what="seq 2")
    assert db.one("SELECT COUNT(*) FROM telemetry WHERE device_uuid = ? AND seq = 1", dev.uuid) == 2


def test_relay_status_and_status_reports_are_rows(gateway, db, devices):
    dev = devices()
    dev.publish("relay/status", {"relays": [{"relay_id": 1, "state": True, "current": 0.8},
                                            {"relay_id": 2, "state": False}],
                                 "power_consumption": 15.6, "errors": []})
    dev.publish("status", {"uptime": 86400, "free_memory": 45312, "cpu_temperature": 45.5, "errors": [],
                           "last_restart_reason": "normal"}, qos=0)
    # QoS 0 has no acknowledgement to wait on: a QoS 1 message after it on
    # the same connection arrives after it.
    dev.telemetry(seq=1, boot_id=1)
    wait_until(lambda: db.rows("SELECT 1 FROM telemetry WHERE device_uuid = ? AND source = 'analog'", dev.uuid), 10,
               what="the telemetry after the reports")
    rows = {(r["source"], r["metric"]): r["value"] for r in db.telemetry(dev.uuid)}
    assert rows[("relay", "relay.1.state")] == 1.0
    assert rows[("relay", "relay.1.current")] == 0.8
    assert rows[("relay", "relay.2.state")] == 0.0
    assert ("status", "uptime") in rows and rows[("status", "uptime")] == 86400.0
    assert rows[("status", "free_memory")] == 45312.0
    assert rows[("status", "cpu_temperature")] == 45.5
    device = inspect(gateway.socket_path, "device", uuid=dev.uuid)["device"]
    assert device["relays"] == {"1": True, "2": False}
