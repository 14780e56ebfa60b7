"""The telemetry section rules beyond the PROTOCOL.md example."""

from __future__ import annotations

import msgpack
import pytest

from protocol import processors
from protocol.codec import decode as codec_decode
from protocol.processors import register, relay_readings, status_readings, telemetry_readings
from protocol.values import SCHEMA, Reading, RelayState, Rejected
from tests.protocol.helpers import TELEMETRY


def rows(obj):
    return telemetry_readings(obj)


def rejected(obj, call=rows):
    with pytest.raises(Rejected) as caught:
        call(obj)
    assert caught.value.reason == SCHEMA
    return caught.value.detail


def test_booleans_are_1_and_0_and_text_goes_to_tag():
    assert rows({"analog_sensors": {"door": True, "hood": False, "mode": "eco", "level": "12.5"}}) == [
        Reading("analog", "door", 1.0),
        Reading("analog", "hood", 0.0),
        Reading("analog", "mode", None, tag="eco"),
        Reading("analog", "level", 12.5),
    ]


def test_null_is_no_reading():
    assert rows({"analog_sensors": {"a": None, "b": 1}, "gps": {"latitude": None}}) == [Reading("analog", "b", 1.0)]


def test_nested_maps_flatten_and_value_objects_keep_unit():
    obj = {"analog_sensors": {"tank": {"front": 10, "rear": {"value": 20, "unit": "l"}}, "oil": {"value": 3}}}
    assert rows(obj) == [
        Reading("analog", "tank.front", 10.0),
        Reading("analog", "tank.rear", 20.0, "l"),
        Reading("analog", "oil", 3.0),
    ]


def test_arrays_where_a_value_belongs_are_refused():
    assert rejected({"system_status": {"errors": [1]}}) == \
        "telemetry.system_status.errors: expected number, boolean or text, got array"
    assert rejected({"analog_sensors": [1, 2]}) == "telemetry.analog_sensors: expected object, got array"


def test_can_signal_forms():
    obj = {"can_data": {"signals": {"RPM": 2500, "Gear": {"value": "D", "can_id": 512}, "Speed": {"value": 80,
                                                                                             "can_id": 512}}}}
    assert rows(obj) == [
        Reading("can", "RPM", 2500.0),
        Reading("can", "Gear", None, tag="D"),  # a text value takes the tag
        Reading("can", "Speed", 80.0, tag="0x200"),  # an integer can_id in hex
    ]
    assert rejected({"can_data": {"signals": {"RPM": {"unit": "rpm"}}}}) == "telemetry.can_data.signals.RPM.value: required"


def test_gps_fields_are_numbers():
    assert rejected({"gps": {"latitude": "abc"}}) == 'telemetry.gps.latitude: expected number, got text "abc"'
    assert rejected({"gps": {"longitude": 181}}) == \
        "telemetry.gps.longitude: expected number between -180 and 180, got number 181"
    assert rows({"gps": {"fix": "3d", "latitude": 1}}) == [Reading("gps", "fix", None, tag="3d"),
                                                            Reading("gps", "latitude", 1.0)]


def test_readings_section():
    obj = {"readings": [
        {"metric": "coolant_temp", "value": 88.5},
        {"source": "obd", "metric": "mil", "value": None, "tag": "off", "timestamp": "2025-01-08T10:30:00Z"},
    ]}
    assert rows(obj) == [
        Reading("sensor", "coolant_temp", 88.5),
        Reading("obd", "mil", None, tag="off", ts=1736332200.0),
    ]
    assert rejected({"readings": [{"value": 1}]}) == "telemetry.readings[0].metric: required"
    assert rejected({"readings": [{"metric": "x"}]}) == "telemetry.readings[0].value: required"
    assert rejected({"readings": ["x"]}) == 'telemetry.readings[0]: expected object, got text "x"'


def test_can_frames_forms():
    payload = msgpack.packb({"can_frames": [
        {"id": 0x123, "data": b"\x01\x02"},
        {"id": "0x7DF", "data": "0x0201"},
        {"id": "0x1", "data": [255, 0]},
        {"id": "0x2", "data": ""},
    ]}, use_bin_type=True)
    obj, _ = codec_decode(payload, 65536)
    assert rows(obj) == [
        Reading("can_raw", "0x123", None, raw=b"\x01\x02"),
        Reading("can_raw", "0x7DF", None, raw=b"\x02\x01"),
        Reading("can_raw", "0x1", None, raw=b"\xff\x00"),
        Reading("can_raw", "0x2", None, raw=b""),
    ]
    assert rejected({"can_frames": [{"id": "0x1", "data": "xyz"}]}) == \
        'telemetry.can_frames[0].data: expected hex text of whole bytes, got text "xyz"'
    assert "more than a CAN frame holds" in rejected({"can_frames": [{"id": "0x1", "data": "00" * 65}]})
    assert rejected({"can_frames": [{"data": "00"}]}) == "telemetry.can_frames[0].id: required"


def test_top_level_numbers_are_system_and_identity_is_not():
    obj = {"seq": 1, "boot_id": 2, "timestamp": 3, "uuid": "x", "protocol_version": "1",
           "uptime": 10, "battery_voltage": 12.6, "ignition": True, "note": "text is ignored", "other": {"x": 1}}
    assert rows(obj) == [
        Reading("system", "uptime", 10.0),
        Reading("system", "battery_voltage", 12.6),
        Reading("system", "ignition", 1.0),
    ]


def test_order_is_fixed_whatever_the_payload_order():
    reordered = dict(reversed(list(TELEMETRY.items())))
    assert rows(reordered) == rows(TELEMETRY)


def test_a_new_section_is_one_function():
    @register("tire_pressure")
    def tire_pressure(section, path):
        for wheel, kpa in section.items():
            yield Reading("tpms", wheel, float(kpa), "kPa")

    try:
        assert rows({"tire_pressure": {"fl": 220}}) == [Reading("tpms", "fl", 220.0, "kPa")]
    finally:
        del processors.SECTIONS["tire_pressure"]


def test_status_report_numbers_only():
    obj = {"timestamp": 1, "uptime": 5, "ok": True, "reason": "normal", "errors": [], "mem": {"free": 7, "tag": "x"}}
    assert status_readings(obj) == [
        Reading("status", "uptime", 5.0),
        Reading("status", "ok", 1.0),
        Reading("status", "mem.free", 7.0),
    ]


def test_relay_status_rows_and_states():
    obj = {"relays": [{"relay_id": 2, "state": 0, "name": "lamp", "fuse_ok": True},
                      {"relay_id": 3, "current": 1}], "power_consumption": 2, "total_switches": 9}
    assert relay_readings(obj) == (
        [
            Reading("relay", "relay.2.state", 0.0),
            Reading("relay", "relay.2.fuse_ok", 1.0),
            Reading("relay", "relay.3.current", 1.0),
            Reading("relay", "relay.power_consumption", 2.0),
            Reading("relay", "relay.total_switches", 9.0),
        ],
        [RelayState(2, False)],
    )
    dup = {"relays": [{"relay_id": 1}, {"relay_id": 1}]}
    assert rejected(dup, relay_readings) == "relay_status.relays[1].relay_id: relay 1 is listed twice"
    assert rejected({"relays": [{"relay_id": 1, "current": "high"}]}, relay_readings) == \
        'relay_status.relays[0].current: expected number, got text "high"'
    assert rejected({"relays": [{"state": True}]}, relay_readings) == "relay_status.relays[0].relay_id: required"
