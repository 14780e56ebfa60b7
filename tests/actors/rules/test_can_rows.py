"""Frame rows -> signal rows in the store, without threads."""

from __future__ import annotations

import math
from pathlib import Path

from actors.rules.can_rows import CanRows
from protocol.can import build_catalog
from protocol.dbc import load_dbc_text
from tests.support.config_app import fueltech_rows

DBC = (Path(__file__).parents[2] / "protocol" / "data" / "engine_mux.dbc").read_text()


def row(uuid="can-gw-01", seq=5, idx=0, source="can_raw", metric="0x100", raw=None, value=None, boot=3, ts=100.0):
    return (uuid, boot, seq, idx, ts, ts + 0.5, source, metric, value, None, None, raw)


def message(seq=5, uuid="can-gw-01", frames=(("0x100", "C4095A0000000000"),), extra=1):
    """A message's rows as core makes them: extra readings, then its frames."""
    rows = [row(uuid, seq, i, "analog", f"a{i}", value=1.0) for i in range(extra)]
    for i, (fid, data) in enumerate(frames):
        rows.append(row(uuid, seq, extra + i, "can_raw", fid, bytes.fromhex(data), ts=100.0 + i))
    return rows


def decoded(rows):
    return [r for r in rows if r[6] == "can"]


def test_signal_rows_follow_the_message_with_their_own_idx():
    can = CanRows(build_catalog(fueltech_rows()))
    rows = message(frames=(("0x100", "C4095A0000000000"), ("0x200", "6500410000000000")))
    out = can.apply(rows)
    assert [r for r in out if r[6] != "can"] == rows  # raw rows kept (default)
    sig = decoded(out)
    assert [(r[7], r[3]) for r in sig] == [("RPM", 3), ("TPS", 4), ("MAP", 5), ("IAT", 6)]
    rpm = sig[0]
    assert rpm[:3] == ("can-gw-01", 3, 5) and rpm[4:6] == (100.0, 100.5)  # the frame's identity and times
    assert rpm[8] == 2500 and rpm[9] == "RPM" and rpm[10] == "0x100" and rpm[11] is None
    assert sig[2][4] == 101.0  # the second frame's own time
    assert math.isclose(sig[3][8], 25.0) and sig[3][10] == "0x200"
    idxs = [r[3] for r in out]
    assert len(idxs) == len(set(idxs))
    assert can.frames_decoded == 2 and can.signals_decoded == 4


def test_the_same_message_twice_gives_the_same_rows():
    can = CanRows(build_catalog(fueltech_rows()))
    first = can.apply(message())
    again = can.apply(message())
    assert first == again


def test_each_message_of_a_batch_counts_its_own_idx():
    can = CanRows(build_catalog(fueltech_rows()))
    rows = message(seq=1, extra=2) + message(seq=2, extra=0) + message(seq=2, uuid="other", extra=1)
    out = can.apply(rows)
    keys = [(r[0], r[2], r[3]) for r in out]
    assert len(keys) == len(set(keys))
    by_message = {}
    for r in decoded(out):
        by_message.setdefault((r[0], r[2]), []).append(r[3])
    assert by_message == {("can-gw-01", 1): [3, 4], ("can-gw-01", 2): [1, 2], ("other", 2): [2, 3]}


def test_messages_without_seq_are_told_apart_by_idx_restarting():
    can = CanRows(build_catalog(fueltech_rows()))
    a = [row(seq=None, idx=0, raw=bytes.fromhex("C4095A"))]
    b = [row(seq=None, idx=0, raw=bytes.fromhex("C4095A"))]
    out = can.apply(a + b)
    assert [r[3] for r in out] == [0, 1, 2, 0, 1, 2]


def test_keep_raw_off_leaves_out_decoded_frames_only():
    can = CanRows(build_catalog(fueltech_rows()), keep_raw=False)
    rows = message(frames=(("0x100", "C4095A"), ("0x7FF", "00"), ("0x600", "")))
    out = can.apply(rows)
    raw = [r[7] for r in out if r[6] == "can_raw"]
    assert raw == ["0x7FF", "0x600"]  # no definition / too short for all: kept
    assert [r[7] for r in decoded(out)] == ["RPM", "TPS"]
    assert can.raw_dropped == 1 and can.frames_no_definition == 1
    assert can.too_short == {"Speed": 1, "Gear": 1}


def test_counts_no_definition_out_of_range_and_too_short():
    can = CanRows(build_catalog(fueltech_rows()))
    can.apply(message(frames=(("0x100", "2823"), ("0x123", "00"), ("0x100", "C4095A"), ("engine", "00"))))
    state = can.state()
    assert state["frames_seen"] == 4
    assert state["frames_decoded"] == 2
    assert state["frames_no_definition"] == 2 and state["frames_bad_id"] == 1
    assert state["out_of_range"] == {"RPM": 1} and state["signals_out_of_range"] == 1
    assert state["too_short"] == {"TPS": 1}


def test_rows_without_frames_are_passed_through_untouched():
    can = CanRows(build_catalog(fueltech_rows()))
    rows = message(frames=())
    assert can.apply(rows) is rows
    empty = CanRows()
    frames = message()
    assert empty.apply(frames) is frames and empty.frames_no_definition == 1


def test_a_frame_a_decoder_chokes_on_is_counted_and_kept_raw():
    catalog = build_catalog(None, [load_dbc_text(DBC, "engine_mux.dbc")])
    can = CanRows(catalog, keep_raw=False)
    out = can.apply(message(frames=(("0x510", "0700000000000000"), ("0x510", "0110FF0000000000"))))
    assert [r[7] for r in out if r[6] == "can_raw"] == ["0x510"]
    assert [(r[7], r[8]) for r in decoded(out)] == [("MuxId", 1.0), ("OilTemp", -24.0)]
    assert can.frames_failed == 1 and can.frames_decoded == 1


def test_a_new_catalog_applies_from_the_next_call():
    can = CanRows(build_catalog(fueltech_rows()))
    assert decoded(can.apply(message()))[0][8] == 2500
    can.set_catalog(build_catalog(fueltech_rows("big_endian")))
    assert decoded(can.apply(message()))[0][8] == 0xC409


def test_per_device_type_tables():
    catalog = build_catalog(fueltech_rows(), [load_dbc_text(DBC, "engine_mux.dbc", device_type="can_gateway")])
    can = CanRows(catalog)
    types = {"can-gw-01": "can_gateway"}
    out = can.apply(message(frames=(("0x100", "09C45A0000000000"),)) + message(uuid="other"), types.get)
    rpm = {r[0]: r[8] for r in decoded(out) if r[7] == "RPM"}
    assert rpm == {"can-gw-01": 2500, "other": 2500}  # DBC big endian for the gateway; LE C409.. for the other
