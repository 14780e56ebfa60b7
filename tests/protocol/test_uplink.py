import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.uplink import (
    FleetCommand,
    UplinkBatch,
    UplinkError,
    commands_topic,
    decode_batch,
    decode_command,
    encode_batch,
    encode_command,
    ingest_subscriptions,
    lane_topic,
    parse_topic,
)

COLUMNS = ("id", "device_uuid", "ts", "metric", "value")


def batch(rows=((7, "dev-1", 1.5, "rpm", 2500.0), (9, "dev-1", 1.6, "rpm", None)), **kw):
    args = dict(vehicle_id="car-1", database_id="5b0f…", table="telemetry", first_id=rows[0][0],
                last_id=rows[-1][0], columns=COLUMNS, rows=rows, sent_at=1700000000.25)
    args.update(kw)
    return UplinkBatch(**args)


def test_a_batch_round_trips():
    b = batch()
    assert decode_batch(encode_batch(b)) == b


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 5), st.text(max_size=8), st.floats(allow_nan=False),
                          st.one_of(st.none(), st.binary(max_size=8))), min_size=1, max_size=20))
def test_any_rows_round_trip(raw):
    rid, rows = 0, []
    for step, text, value, blob in raw:
        rid += step
        rows.append((rid, text, value, blob))
    b = UplinkBatch("car-1", "db", "device_events", rows[0][0], rows[-1][0], ("id", "a", "b", "c"), tuple(rows), 1.0)
    assert decode_batch(encode_batch(b)) == b


@pytest.mark.parametrize("change, message", [
    (dict(table="devices"), "table must be one of"),
    (dict(first_id=0), "first_id must be an integer row id"),
    (dict(vehicle_id="car/1"), "vehicle_id must be a non-empty topic level"),
    (dict(columns=("device_uuid", "id", "ts", "metric", "value")), "columns must start with 'id'"),
    (dict(rows=((9, "d", 1.0, "m", 1.0), (7, "d", 1.0, "m", 1.0)), first_id=7, last_id=9), "must increase"),
    (dict(rows=((7, "d", 1.0, "m"),)), "4 values for 5 columns"),
    (dict(first_id=6), "first_id and last_id must be the ids of the first and last rows"),
    (dict(sent_at=float("nan")), "sent_at must be a finite number"),
])
def test_a_bad_batch_says_what_is_wrong(change, message):
    with pytest.raises(UplinkError, match=message):
        batch(**change)


@pytest.mark.parametrize("payload, message", [
    (b"\xc1", "not MessagePack"),
    (msgpack.packb([1, 2]), "expected a map"),
    (msgpack.packb({"v": 2}), "version 2 is not 1"),
    (msgpack.packb({"v": 1, "vehicle": "car-1"}), "missing db, table, first, last, columns, rows, sent_at"),
])
def test_a_bad_payload_says_what_is_wrong(payload, message):
    with pytest.raises(UplinkError, match=message):
        decode_batch(payload)


def test_topics():
    assert lane_topic("fleet", "car-1", "fresh") == "fleet/car-1/fresh"
    assert commands_topic("fleet/eu", "car-1") == "fleet/eu/car-1/commands"
    assert parse_topic("fleet/eu", "fleet/eu/car-1/backlog") == ("car-1", "backlog")
    assert ingest_subscriptions("fleet") == ["$share/fleet/fleet/+/events", "$share/fleet/fleet/+/fresh",
                                             "$share/fleet/fleet/+/backlog"]
    for bad in ("other/car-1/fresh", "fleet/car-1/x", "fleet/car-1/fresh/more"):
        with pytest.raises(UplinkError):
            parse_topic("fleet", bad)
    with pytest.raises(UplinkError, match="lane must be one of"):
        lane_topic("fleet", "car-1", "bulk")
    with pytest.raises(UplinkError, match="vehicle id"):
        lane_topic("fleet", "+", "fresh")


def test_a_fleet_command_round_trips_and_is_checked():
    c = FleetCommand("fleet-42", "esp32-relay-01", "relay_control", {"relay": 1, "state": True}, ttl_s=60)
    assert decode_command(encode_command(c)) == c
    with pytest.raises(UplinkError, match="origin_id must be a non-empty string"):
        FleetCommand("", "dev", "relay_control")
    with pytest.raises(UplinkError, match="ttl_s must be a positive number"):
        FleetCommand("o", "dev", "relay_control", ttl_s=0)
    with pytest.raises(UplinkError, match="missing device_uuid, command_type"):
        decode_command(msgpack.packb({"v": 1, "origin_id": "x"}))
