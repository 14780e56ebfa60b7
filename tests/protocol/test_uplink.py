import json

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.uplink import (
    FleetCommand,
    UplinkBatch,
    UplinkError,
    commands_topic,
    data_topic,
    decode_batch,
    decode_command,
    encode_batch,
    encode_command,
    encode_rows,
    ingest_subscriptions,
    parse_topic,
)

ROWS = ({"id": 7, "device_uuid": "dev-1", "ts": 1.5, "metric": "rpm", "value": 2500.0},
        {"id": 9, "device_uuid": "dev-1", "ts": 1.6, "metric": "rpm", "value": None})


def batch(rows=ROWS, **kw):
    args = dict(vehicle_id="car-1", database_id="5b0f…", lane="telemetry", first_id=7, last_id=9, rows=rows,
                sent_at=1700000000.25)
    args.update(kw)
    return UplinkBatch(**args)


def test_a_batch_round_trips_in_the_protocol_shape():
    b = batch()
    payload = encode_batch(b)
    assert decode_batch(payload) == b
    body = msgpack.unpackb(payload, raw=False)
    # PROTOCOL.md, "Fleet uplink": the keys outside tools read.
    assert {"vehicle", "db", "lane", "first", "last", "sent_at", "rows"} <= set(body)
    assert body["rows"][0] == ROWS[0]
    assert encode_rows("car-1", "5b0f…", "telemetry", list(ROWS), 1700000000.25) == payload


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 5), st.text(max_size=8), st.floats(allow_nan=False),
                          st.one_of(st.none(), st.binary(max_size=8))), min_size=1, max_size=20))
def test_any_rows_round_trip(raw):
    rid, rows = 0, []
    for step, text, value, blob in raw:
        rid += step
        rows.append({"id": rid, "a": text, "b": value, "c": blob})
    b = UplinkBatch("car-1", "db", "events", rows[0]["id"], rows[-1]["id"], tuple(rows), 1.0)
    assert decode_batch(encode_batch(b)) == b


@pytest.mark.parametrize("change, message", [
    (dict(lane="devices"), "lane must be one of"),
    (dict(first_id=0), "first_id must be an integer row id"),
    (dict(vehicle_id="car/1"), "vehicle id must be a non-empty topic level"),
    (dict(rows=({"id": 9}, {"id": 7}), first_id=7, last_id=9), "must increase"),
    (dict(rows=({"ts": 1.0},), first_id=7, last_id=7), "id None must increase"),
    (dict(rows=([7, 1.0],), first_id=7, last_id=7), "row 0 must be a map"),
    (dict(first_id=8), "must increase and lie in 8..9"),
    (dict(sent_at=float("nan")), "sent_at must be a finite number"),
])
def test_a_bad_batch_says_what_is_wrong(change, message):
    with pytest.raises(UplinkError, match=message):
        batch(**change)


@pytest.mark.parametrize("payload, message", [
    (b"\xc1", "not MessagePack"),
    (msgpack.packb([1, 2]), "expected a map"),
    (msgpack.packb({"v": 2}), "version 2 is not 1"),
    (msgpack.packb({"vehicle": "car-1"}), "missing db, lane, first, last, rows, sent_at"),
])
def test_a_bad_payload_says_what_is_wrong(payload, message):
    with pytest.raises(UplinkError, match=message):
        decode_batch(payload)


def test_topics():
    assert data_topic("fleet", "car-1") == "fleet/car-1/data"
    assert commands_topic("fleet/eu", "car-1") == "fleet/eu/car-1/commands"
    assert parse_topic("fleet/eu", "fleet/eu/car-1/data") == ("car-1", "data")
    assert ingest_subscriptions("fleet") == ["$share/fleet/fleet/+/data"]
    for bad in ("other/car-1/data", "fleet/car-1/x", "fleet/car-1/data/more"):
        with pytest.raises(UplinkError):
            parse_topic("fleet", bad)
    with pytest.raises(UplinkError, match="vehicle id"):
        data_topic("fleet", "+")
    with pytest.raises(UplinkError, match="uplink prefix"):
        data_topic("fleet/", "car-1")


def test_a_fleet_command_round_trips_in_both_encodings_and_is_checked():
    c = FleetCommand("fleet-42", "esp32-relay-01", "relay_control", {"relay": 1, "state": True}, ttl_s=60,
                     timeout=5, max_attempts=2)
    assert decode_command(encode_command(c)) == c
    as_json = json.dumps({"origin_id": "fleet-42", "device_uuid": "esp32-relay-01", "command_type": "relay_control",
                          "parameters": {"relay": 1, "state": True}, "ttl_s": 60, "timeout": 5,
                          "max_attempts": 2}).encode()
    assert decode_command(as_json) == c
    with pytest.raises(UplinkError, match="origin_id must be a non-empty string"):
        FleetCommand("", "dev", "relay_control")
    with pytest.raises(UplinkError, match="ttl_s must be a positive number"):
        FleetCommand("o", "dev", "relay_control", ttl_s=0)
    with pytest.raises(UplinkError, match="topic must be one of"):
        FleetCommand("o", "dev", "relay_control", topic="x")
    with pytest.raises(UplinkError, match="max_attempts must be an integer"):
        FleetCommand("o", "dev", "relay_control", max_attempts=0)
    with pytest.raises(UplinkError, match="missing device_uuid, command_type"):
        decode_command(msgpack.packb({"v": 1, "origin_id": "x"}))
    with pytest.raises(UplinkError, match="not JSON or MessagePack"):
        decode_command(b"{nope")
