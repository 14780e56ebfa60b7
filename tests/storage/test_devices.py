"""The device registry."""

from __future__ import annotations

import pytest

from protocol.values import DeviceFacts, Dialect, Discovery, Encoding
from storage import devices
from storage.db import database


def test_ensure_device_creates_once(db):
    assert devices.ensure_device("d1", 10.0, Dialect.V1) is True
    assert devices.ensure_device("d1", 20.0, Dialect.FW22) is False
    d = devices.get_device("d1")
    assert (d.status, d.device_type, d.first_seen, d.last_seen, d.protocol) == ("online", "unknown", 10.0, 10.0, "v1")
    assert (d.capabilities, d.encoding) == ((), "json")
    assert devices.get_device("nobody") is None


def test_upsert_facts_announce(db):
    facts = DeviceFacts(device_type="relay_board", firmware_version="1.2.0", capabilities=("relay", "can_bus"),
                        ip_address="192.168.1.100", mac_address="AA:BB", relay_count=16, hardware_revision="v2.1",
                        serial_number="ESP32-001", name="Relays front", boot_id=17, status_interval=5.0)
    assert devices.upsert_facts("d1", facts, 100.0, Dialect.V1, Encoding.MSGPACK) is True
    d = devices.get_device("d1")
    assert d.capabilities == ("relay", "can_bus")
    assert (d.relay_count, d.boot_id, d.status_interval, d.encoding, d.status) == (16, 17, 5.0, "msgpack", "online")
    # A later announce changes what it says, keeps the rest.
    assert devices.upsert_facts("d1", DeviceFacts(firmware_version="1.3.0", boot_id=18), 200.0, "v1", "json") is False
    d = devices.get_device("d1")
    assert (d.firmware_version, d.boot_id, d.name, d.relay_count) == ("1.3.0", 18, "Relays front", 16)
    assert d.capabilities == ("relay", "can_bus")  # () means "not given"
    assert (d.first_seen, d.last_seen, d.encoding) == (100.0, 200.0, "json")


def test_upsert_facts_keeps_status_and_never_moves_last_seen_back(db):
    devices.ensure_device("d1", 100.0, "v1")
    devices.set_status("d1", "offline", 150.0)
    devices.upsert_facts("d1", DeviceFacts(name="x"), 90.0, "v1", "json")
    d = devices.get_device("d1")
    assert (d.status, d.last_seen) == ("offline", 100.0)


def test_fw22_capabilities_mapping_kept_as_given(db):
    caps = {"relays": 16, "features": ["heartbeat"]}
    devices.upsert_facts("esp32-x", DeviceFacts(device_type="esp32_relay", capabilities=caps), 1.0, Dialect.FW22, "json")
    d = devices.get_device("esp32-x")
    assert (d.capabilities, d.protocol) == (caps, "fw22")


def test_register_discovered(db):
    disc = Discovery(discovery_type="network_scan", ip_address="10.0.0.5", mac_address="AA", device_type="sensor_board")
    assert devices.register_discovered("d9", disc, 5.0) is True
    d = devices.get_device("d9")
    assert (d.status, d.device_type, d.ip_address, d.first_seen) == ("discovered", "sensor_board", "10.0.0.5", 5.0)
    assert devices.register_discovered("d9", disc, 6.0) is False
    devices.ensure_device("known", 1.0, "v1")
    assert devices.register_discovered("known", disc, 7.0) is False
    assert devices.get_device("known").status == "online"


def test_set_status(db):
    devices.ensure_device("d1", 10.0, "v1")
    devices.set_status("d1", "offline", 40.0)
    d = devices.get_device("d1")
    assert (d.status, d.last_seen) == ("offline", 10.0)  # last message time kept
    devices.set_status("d1", "online", 50.0, boot_id=4)
    d = devices.get_device("d1")
    assert (d.status, d.last_seen, d.boot_id) == ("online", 50.0, 4)
    with pytest.raises(ValueError):
        devices.set_status("d1", "sleepy", 60.0)


def test_set_status_recreates_a_row_deleted_by_hand(db):
    devices.ensure_device("d1", 10.0, "v1")
    database.execute_sql("DELETE FROM gateway_devices WHERE uuid = 'd1'")
    devices.set_status("d1", "offline", 20.0)
    assert devices.get_device("d1").status == "offline"


def test_set_protocol(db):
    devices.ensure_device("d1", 10.0, "v1")
    assert devices.set_protocol("d1", Dialect.FW22)
    assert devices.get_device("d1").protocol == "fw22"
    assert not devices.set_protocol("nobody", "v1")
    with pytest.raises(ValueError):
        devices.set_protocol("d1", "v3")


def test_set_encoding(db):
    devices.ensure_device("d1", 10.0, "v1")
    assert devices.set_encoding("d1", Encoding.MSGPACK)
    assert devices.get_device("d1").encoding == "msgpack"
    assert not devices.set_encoding("nobody", "json")
    with pytest.raises(ValueError):
        devices.set_encoding("d1", "xml")


def test_touch_last_seen_bulk(db):
    for i in range(700):  # more than one statement's worth
        devices.ensure_device(f"d{i}", 10.0, "v1")
    items = [(f"d{i}", 20.0 + i) for i in range(700)] + [("d0", 5.0), ("d1", 999.0), ("ghost", 30.0)]
    assert devices.touch_last_seen(items) == 700
    assert devices.get_device("d0").last_seen == 20.0  # the older time did not win
    assert devices.get_device("d1").last_seen == 999.0
    assert devices.get_device("d699").last_seen == 719.0
    assert devices.get_device("ghost") is None
    assert devices.touch_last_seen([("d2", 1.0)]) == 1
    assert devices.get_device("d2").last_seen == 22.0  # never backwards
    assert devices.touch_last_seen([]) == 0


def test_list_devices(db):
    devices.ensure_device("b", 1.0, "v1")
    devices.ensure_device("a", 1.0, "v1")
    devices.register_discovered("c", Discovery(), 1.0)
    devices.set_status("b", "offline", 2.0)
    assert [d.uuid for d in devices.list_devices()] == ["a", "b", "c"]
    assert [d.uuid for d in devices.list_devices("offline")] == ["b"]
    assert [d.uuid for d in devices.list_devices(status="discovered")] == ["c"]


def test_records_are_frozen(db):
    devices.ensure_device("d1", 1.0, "v1")
    d = devices.get_device("d1")
    with pytest.raises(AttributeError):
        d.status = "offline"
