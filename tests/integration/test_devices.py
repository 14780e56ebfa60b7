"""Announce, discovery, reboot and liveness (PROTOCOL.md "Payloads", "Liveness")
against a real broker and the gateway as a subprocess."""

from __future__ import annotations

import json

import pytest

from tests.integration.devices import retained
from tests.integration.helpers import inspect
from tests.support.broker import wait_until

# The single-instance behaviour, on both backends (tests/integration/conftest.py).
ENGINES = ("sqlite", "postgresql")


def availability_topic(uuid: str) -> str:
    return f"autocore/devices/{uuid}/availability"


def test_announce_registers_the_device_with_its_facts(gateway, db, devices, watcher, broker):
    dev = devices()
    dev.announce(boot_id=17, status_interval=5, device_type="relay_board", firmware_version="1.2.0",
                 capabilities=["relay", "can_bus"], ip_address="192.168.1.100", mac_address="AA:BB:CC:DD:EE:FF",
                 relay_count=16, hardware_revision="v2.1", serial_number="ESP32-001", name="Relays front")

    row = wait_until(lambda: db.device(dev.uuid), 10, what="the devices row")
    wait_until(lambda: {"announce", "online"} <= set(db.event_names(dev.uuid)), 10, what="announce and online events")
    row = db.device(dev.uuid)
    assert row["device_type"] == "relay_board"
    assert row["firmware_version"] == "1.2.0"
    assert json.loads(row["capabilities"]) == ["relay", "can_bus"]
    assert row["ip_address"] == "192.168.1.100"
    assert row["mac_address"] == "AA:BB:CC:DD:EE:FF"
    assert row["hardware_revision"] == "v2.1"
    assert row["serial_number"] == "ESP32-001"
    assert row["name"] == "Relays front"
    assert row["boot_id"] == 17
    assert row["status_interval"] == 5
    assert row["status"] == "online"
    assert row["first_seen"] is not None and row["last_seen"] is not None

    events = dict(db.events(dev.uuid))
    assert events["announce"]["boot_id"] == 17
    assert events["announce"]["firmware_version"] == "1.2.0"
    assert sorted(db.event_names(dev.uuid)) == ["announce", "online"]  # once each

    watcher.wait_last(availability_topic(dev.uuid), b"online")
    assert retained(broker.port, availability_topic(dev.uuid)) == b"online"


def test_discovery_of_an_unknown_uuid_registers_it_as_discovered(gateway, db, devices):
    dev = devices()
    dev.publish("discovery", {"discovery_type": "network_scan", "timestamp": "2025-01-08T10:30:00Z",
                              "device_info": {"ip_address": "192.168.1.50", "mac_address": "11:22:33:44:55:66",
                                              "device_type": "sensor_board", "signal_strength": -72}})
    wait_until(lambda: db.event_names(dev.uuid) == ["discovered"], 10, what="the discovered event")
    row = db.device(dev.uuid)
    assert row is not None and row["status"] == "discovered"
    assert row["ip_address"] == "192.168.1.50"
    assert row["mac_address"] == "11:22:33:44:55:66"
    detail = dict(db.events(dev.uuid))["discovered"]
    assert detail["ip_address"] == "192.168.1.50"

    # It stays discovered until it announces; then it is an online device.
    dev.announce(boot_id=1)
    wait_until(lambda: db.field(dev.uuid, "status") == "online", 10, what="online after the announce")
    assert db.device(dev.uuid)["device_type"] == "relay_board"

    # Discovery of a known device: an event, nothing else changes.
    dev.publish("discovery", {"discovery_type": "network_scan", "device_info": {"ip_address": "192.168.1.51"}})
    wait_until(lambda: db.event_names(dev.uuid).count("discovered") == 2, 10, what="the second discovered event")
    assert db.device(dev.uuid)["status"] == "online"


def test_a_new_boot_id_is_a_reboot(gateway, db, devices):
    dev = devices()
    dev.announce(boot_id=17)
    wait_until(lambda: "online" in db.event_names(dev.uuid), 10, what="online")
    dev.announce(boot_id=18)
    wait_until(lambda: "reboot" in db.event_names(dev.uuid), 10, what="the reboot event")
    detail = dict(db.events(dev.uuid))["reboot"]
    assert detail == {"previous_boot_id": 17, "boot_id": 18}
    wait_until(lambda: db.field(dev.uuid, "boot_id") == 18, 10, what="boot_id 18 in devices")
    assert db.event_names(dev.uuid).count("announce") == 2
    assert db.event_names(dev.uuid).count("reboot") == 1
    assert db.device(dev.uuid)["status"] == "online"


def test_offline_after_the_timeout_and_online_again_on_the_next_message(gateway, db, devices, watcher, broker):
    dev = devices()
    # status_interval 0.2 s: timeout max(3 x 0.2, AUTOCORE_DEVICE_TIMEOUT_S = 1) = 1 s
    dev.announce(boot_id=3, status_interval=0.2)
    watcher.wait_last(availability_topic(dev.uuid), b"online")

    wait_until(lambda: db.field(dev.uuid, "status") == "offline", 5, what="offline after the timeout")
    offline = [d for e, d in db.events(dev.uuid) if e == "offline"]
    assert len(offline) == 1 and offline[0]["reason"] == "timeout"
    assert offline[0]["silent_s"] >= 1.0
    watcher.wait_last(availability_topic(dev.uuid), b"offline")
    assert retained(broker.port, availability_topic(dev.uuid)) == b"offline"

    dev.telemetry(seq=1, boot_id=3)
    wait_until(lambda: db.field(dev.uuid, "status") == "online", 5, what="online again")
    watcher.wait_last(availability_topic(dev.uuid), b"online")
    names = db.event_names(dev.uuid)
    assert sorted(names[:2]) == ["announce", "online"] and names[2:] == ["offline", "online"], names
    assert retained(broker.port, availability_topic(dev.uuid)) == b"online"


def test_last_will_marks_the_device_offline(gateway, db, devices, watcher):
    dev = devices(connect=False).connect(will_boot_id=5)
    dev.announce(boot_id=5)
    watcher.wait_last(availability_topic(dev.uuid), b"online")
    dev.drop()  # the broker publishes the Will: {"status": "offline", "boot_id": 5}
    wait_until(lambda: db.field(dev.uuid, "status") == "offline", 5, what="offline by the Last Will")
    offline = [d for e, d in db.events(dev.uuid) if e == "offline"]
    assert offline == [{"reason": "will", "boot_id": 5}]
    watcher.wait_last(availability_topic(dev.uuid), b"offline")


def test_a_stale_will_from_an_older_boot_is_ignored(gateway, db, devices, watcher, broker):
    # Boot 5 connects with its Will, then the device reboots (boot 6) on a
    # new connection before the broker noticed the old one was gone.
    old = devices("stale-will-dev", connect=False, client_id="stale-will-dev-boot5").connect(will_boot_id=5)
    old.announce(boot_id=5)
    watcher.wait_last(availability_topic(old.uuid), b"online")
    new = devices("stale-will-dev", connect=False, client_id="stale-will-dev-boot6").connect(will_boot_id=6)
    new.announce(boot_id=6)
    wait_until(lambda: "reboot" in db.event_names(new.uuid), 5, what="the reboot to boot 6")

    old.drop()  # the stale Will: offline for boot 5
    wait_until(lambda: retained(broker.port, new.topic("status")) == json.dumps({"status": "offline", "boot_id": 5}).encode(),
               5, what="the stale Will on the broker")
    # One device actor handles its device's state messages in order: once an
    # announce sent after the Will is recorded, the Will has been handled.
    new.announce(boot_id=6)
    wait_until(lambda: db.event_names(new.uuid).count("announce") == 3, 5, what="the announce after the Will")
    assert db.device(new.uuid)["status"] == "online"
    assert "offline" not in db.event_names(new.uuid)
    assert retained(broker.port, availability_topic(new.uuid)) == b"online"
    assert [m.payload for m in watcher.messages(availability_topic(new.uuid))] == [b"online"]
    assert inspect(gateway.socket_path, "device", uuid=new.uuid)["device"]["stale_wills"] == 1



GATEWAY_STATUS = "autocore/gateway/status"


def test_gateway_status_online_heartbeat_offline_at_stop_and_as_will(gateways, db, devices, watcher, broker):
    gw = gateways(heartbeat_s=0.3)

    def online() -> list[dict]:
        return [m.body for m in watcher.messages(GATEWAY_STATUS) if m.body["status"] == "online"]

    wait_until(lambda: len(online()) >= 3, 10, what="the online status and two heartbeats")
    status = online()[-1]
    assert status["gateway_id"] == "autocore-gateway" and "uptime" in status and "memory_usage" in status
    assert json.loads(retained(broker.port, GATEWAY_STATUS))["status"] == "online"

    dev = devices()
    dev.announce(boot_id=1)
    wait_until(lambda: online()[-1]["devices_online"] == 1, 10, what="devices_online 1 in the heartbeat")

    assert gw.stop() == 0
    assert json.loads(retained(broker.port, GATEWAY_STATUS))["status"] == "offline"

    gw = gateways()
    wait_until(lambda: json.loads(retained(broker.port, GATEWAY_STATUS))["status"] == "online", 10,
               what="online again")
    gw.kill()  # no clean stop: the broker publishes the gateway's Last Will
    gateways.allow_tracebacks = True
    wait_until(lambda: json.loads(retained(broker.port, GATEWAY_STATUS))["status"] == "offline", 10,
               what="the gateway's Last Will")


def test_a_will_followed_by_telemetry_leaves_the_device_online(gateways, db, devices):
    """A connection blip without a reboot: the broker publishes the Will, the
    device is back at once and sends a reading. In order, that is offline
    then online. The gateway is stopped meanwhile, so the broker replays both
    to it together, in one batch (deterministically)."""
    gw = gateways()
    dev = devices(connect=False).connect(will_boot_id=1)
    dev.announce(boot_id=1)
    wait_until(lambda: db.field(dev.uuid, "status") == "online", 10, what="online")
    assert gw.stop() == 0

    dev.drop()  # the Will, queued for the gateway's session
    dev.connect(will_boot_id=1)  # back, same boot: no announce
    dev.telemetry(seq=1, boot_id=1)
    gateways()
    wait_until(lambda: db.count(dev.uuid) == 1, 10, what="the reading after the Will")
    wait_until(lambda: "offline" in db.event_names(dev.uuid), 10, what="the Will handled")
    assert db.field(dev.uuid, "status") == "online", db.event_names(dev.uuid)
