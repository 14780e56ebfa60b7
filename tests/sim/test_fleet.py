"""What to simulate: the fleet specification, the devices it makes, bounds."""

from __future__ import annotations

import pytest

from simulator import KINDS, FleetConfig, build_devices, is_loopback, parse_fleet
from protocol.topics import is_valid_uuid
from protocol.values import Encoding

from tests.sim.helpers import T0


def test_parse_fleet():
    assert parse_fleet("can_gateway=2, fw22_relay=1,can_gateway=1") == {"can_gateway": 3, "fw22_relay": 1}
    for bad, words in [("toaster=1", "unknown device kind"), ("mobile", "KIND=COUNT"), ("mobile=x", "whole number"),
                       ("mobile=-1", "0 or more"), ("mobile=0", "no devices"), ("", "no devices")]:
        with pytest.raises(ValueError, match=words):
            parse_fleet(bad)


def test_devices_are_numbered_valid_and_the_same_every_time():
    config = FleetConfig(devices={kind: 3 for kind in KINDS}, msgpack_fraction=0.5)
    devices = build_devices(config, T0)
    again = build_devices(config, T0 + 100)
    assert [d.uuid for d in devices] == [d.uuid for d in again]
    assert len({d.uuid for d in devices}) == len(devices) == 3 * len(KINDS)
    assert all(is_valid_uuid(d.uuid) for d in devices)
    assert devices[0].uuid == "sim-can-gateway-01"
    assert [d.kind for d in devices].count("fw22_relay_switching") == 3
    encodings = {d.encoding for d in devices if d.dialect == "v1"}
    assert encodings == {Encoding.JSON, Encoding.MSGPACK}
    assert all(d.uuid.startswith("esp32-") for d in devices if d.dialect == "fw22")


def test_another_prefix_gives_other_uuids_for_both_dialects():
    a = build_devices(FleetConfig(devices={"mobile": 1, "fw22_display": 1}), T0)
    b = build_devices(FleetConfig(devices={"mobile": 1, "fw22_display": 1}, uuid_prefix="other"), T0)
    assert not {d.uuid for d in a} & {d.uuid for d in b}


def test_a_broker_elsewhere_needs_allow_remote():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("192.0.2.10")
    with pytest.raises(ValueError, match="allow-remote"):
        FleetConfig(host="192.0.2.10")
    assert FleetConfig(host="192.0.2.10", allow_remote=True).host == "192.0.2.10"


@pytest.mark.parametrize("field, value, words", [
    ("duration", 0, "duration"), ("connections", "some", "connections"), ("msgpack_fraction", 2.0, "MessagePack"),
    ("flap_every", -1.0, "flap-every"), ("uuid_prefix", "bad prefix", "uuid prefix"),
])
def test_bad_settings_are_refused(field, value, words):
    with pytest.raises(ValueError, match=words):
        FleetConfig(**{field: value})


def test_connection_mode():
    assert FleetConfig(devices={"mobile": 200}).per_device
    assert not FleetConfig(devices={"mobile": 201}).per_device
    assert FleetConfig(devices={"mobile": 5000}, connections="per-device").per_device
    assert not FleetConfig(devices={"mobile": 2}, connections="shared").per_device
