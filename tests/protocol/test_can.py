"""Golden tests of the CAN decoder with the FuelTech signals as the Config
App seeds them (tests/support/config_app.py), in both byte orders."""

from __future__ import annotations

import math
import struct

import pytest

from protocol.can import (
    BadDefinition,
    SignalDef,
    build_catalog,
    can_id_text,
    config_app_signal,
    parse_can_id,
)
from tests.support.config_app import fueltech_rows


def decode(catalog, can_id: int, hex_data: str) -> tuple[dict, list[str]]:
    results, short, errors = catalog.decode(can_id, bytes.fromhex(hex_data))
    assert errors == []
    return {r.name: (r.value, r.unit, r.in_range) for r in results}, short


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=0, abs_tol=1e-9)


# Values of a warm engine: RPM 2500, TPS 90 raw (35.28 %), MAP 101 kPa,
# IAT raw 65 (25 °C), ECT raw 130 (90 °C), lambda raw 1000 (1.000).
LITTLE = {
    0x100: "C4095A0000000000",
    0x200: "6500410000000000",
    0x300: "82E8030000000000",
    0x500: "7D1AD00700000000",
}
BIG = {
    0x100: "09C45A0000000000",
    0x200: "0065410000000000",
    0x300: "8203E80000000000",
    0x500: "7D1A07D000000000",
}
EXPECTED = {
    0x100: {"RPM": (2500, "RPM"), "TPS": (35.28, "%")},
    0x200: {"MAP": (101, "kPa"), "IAT": (25, "°C")},
    0x300: {"ECT": (90, "°C"), "Lambda": (1.0, "λ")},
    0x500: {"Battery": (12.5, "V"), "OilPressure": (1.014, "bar"), "BoostPressure": (1.0, "bar")},
}


@pytest.mark.parametrize("byte_order, frames", [(None, LITTLE), ("little_endian", LITTLE), ("", LITTLE),
                                               ("big_endian", BIG), ("BIG_ENDIAN ", BIG)])
def test_fueltech_signals_in_both_byte_orders(byte_order, frames):
    catalog = build_catalog(fueltech_rows(byte_order))
    assert catalog.problems == ()
    assert len(catalog) == 14
    for can_id, hex_data in frames.items():
        got, short = decode(catalog, can_id, hex_data)
        assert short == []
        assert set(got) == set(EXPECTED[can_id]), can_id
        for name, (value, unit) in EXPECTED[can_id].items():
            assert close(got[name][0], value), (name, got[name], value)
            assert got[name][1] == unit
            assert got[name][2] is True


def test_the_two_orders_differ_on_the_same_bytes():
    little = build_catalog(fueltech_rows(None))
    big = build_catalog(fueltech_rows("big_endian"))
    assert decode(little, 0x100, "C4095A")[0]["RPM"][0] == 0x09C4
    assert decode(big, 0x100, "C4095A")[0]["RPM"][0] == 0xC409


def test_a_value_outside_min_max_is_kept_and_flagged():
    catalog = build_catalog(fueltech_rows())
    got, _ = decode(catalog, 0x100, "2823FF")  # RPM 9000 (max 8000), TPS 255 raw = 99.96 %
    assert got["RPM"] == (9000, "RPM", False)
    assert got["TPS"][2] is True
    got, _ = decode(catalog, 0x600, "640007")  # Speed 100, Gear 7 (max 6)
    assert got["Gear"] == (7, None, False)  # an empty unit is no unit
    assert got["Speed"][2] is True


def test_a_frame_too_short_for_a_signal_yields_the_others_and_names_it():
    catalog = build_catalog(fueltech_rows())
    got, short = decode(catalog, 0x100, "C409")
    assert set(got) == {"RPM"} and got["RPM"][0] == 2500
    assert short == ["TPS"]
    got, short = decode(catalog, 0x500, "")
    assert got == {} and sorted(short) == ["Battery", "BoostPressure", "OilPressure"]


def signal(**kw) -> SignalDef:
    row = {"id": 1, "signal_name": "X", "can_id": "0x7E8", "start_bit": 0, "length_bits": 16, "byte_order": None,
           "data_type": None, "scale_factor": None, "offset": None, "unit": None, "min_value": None,
           "max_value": None, "is_active": 1}
    row.update(kw)
    return config_app_signal(row)


@pytest.mark.parametrize("order, data", [("little_endian", "18FC"), ("big_endian", "FC18")])
def test_a_signed_signal(order, data):
    s = signal(data_type="signed", byte_order=order, scale_factor=0.01, unit="g")
    catalog = build_catalog([{"id": 1, "signal_name": "X", "can_id": "0x7E8", "start_bit": 0, "length_bits": 16,
                              "byte_order": order, "data_type": "signed", "scale_factor": 0.01, "unit": "g",
                              "is_active": 1}])
    assert s.kind == "signed"
    got, _ = decode(catalog, 0x7E8, data)
    assert close(got["X"][0], -10.0)
    # the same bits unsigned
    unsigned = build_catalog([{"id": 1, "signal_name": "X", "can_id": "0x7E8", "start_bit": 0, "length_bits": 16,
                               "byte_order": order, "is_active": 1}])
    assert decode(unsigned, 0x7E8, data)[0]["X"][0] == 0xFC18


def test_sub_byte_and_float_signals():
    rows = [
        {"id": 1, "signal_name": "Low", "can_id": "0x10", "start_bit": 0, "length_bits": 4, "is_active": 1},
        {"id": 2, "signal_name": "High", "can_id": "0x10", "start_bit": 4, "length_bits": 4, "is_active": 1,
         "byte_order": "big_endian"},
        {"id": 3, "signal_name": "Flag", "can_id": "0x10", "start_bit": 15, "length_bits": 1, "is_active": 1},
        {"id": 4, "signal_name": "Temp", "can_id": "0x10", "start_bit": 16, "length_bits": 32, "is_active": 1,
         "data_type": "float"},
        {"id": 5, "signal_name": "Wide", "can_id": "0x11", "start_bit": 4, "length_bits": 12, "is_active": 1},
    ]
    catalog = build_catalog(rows)
    data = bytes([0xA5, 0x80]) + struct.pack("<f", 21.5)
    got = {r.name: r.value for r in catalog.decode(0x10, data)[0]}
    assert got == {"Low": 5, "High": 10, "Flag": 1, "Temp": 21.5}
    # 12 bits from bit 4, least significant byte first: 0xABC from bytes C0 AB
    assert catalog.decode(0x11, bytes([0xC0, 0xAB]))[0][0].value == 0xABC


@pytest.mark.parametrize("change, problem", [
    ({"length_bits": 0}, "length_bits 0: must be at least 1"),
    ({"start_bit": 600}, "start_bit 600 is past the end of any CAN frame"),
    ({"start_bit": 500, "length_bits": 16}, "run past the end of any CAN frame"),
    ({"byte_order": "middle_endian"}, "unknown byte_order 'middle_endian'"),
    ({"can_id": "engine"}, "not a CAN id: 'engine'"),
    ({"start_bit": None}, "start_bit None is not a whole number"),
    ({"scale_factor": "fast"}, "scale_factor 'fast' is not a number"),
    ({"data_type": "float", "length_bits": 16}, "a float signal must be 32 or 64 bits long"),
    ({"length_bits": 72}, "an integer signal is at most 64 bits"),
])
def test_a_bad_definition_is_skipped_with_one_line_naming_it(change, problem):
    with pytest.raises(BadDefinition) as err:
        signal(signal_name="Broken", **change)
    assert "CAN signal 'Broken' (can_signals id 1)" in str(err.value)
    assert problem in str(err.value)
    rows = fueltech_rows()
    broken = dict(rows[0], id=99, signal_name="Broken", **change)
    catalog = build_catalog(rows + [broken])
    assert len(catalog) == 14  # the others are all there
    assert len(catalog.problems) == 1
    assert catalog.problems[0].startswith("skipped CAN signal 'Broken' (can_signals id 99)")
    assert problem in catalog.problems[0]
    assert decode(catalog, 0x100, LITTLE[0x100])[0]["RPM"][0] == 2500


def test_inactive_rows_and_unknown_data_types():
    rows = fueltech_rows()
    rows[0]["is_active"] = 0
    rows[1]["data_type"] = "mystery"  # unknown -> unsigned
    catalog = build_catalog(rows)
    got, _ = decode(catalog, 0x100, LITTLE[0x100])
    assert set(got) == {"TPS"}
    assert close(got["TPS"][0], 35.28)


def test_no_table_no_definitions():
    catalog = build_catalog(None)
    assert len(catalog) == 0 and catalog.common == {}
    assert catalog.decode(0x100, b"\x00" * 8) == ([], [], [])


@pytest.mark.parametrize("text, number", [("0x100", 0x100), ("0X7e8", 0x7E8), ("100", 0x100), (" 0x18FEF100 ", 0x18FEF100),
                                          (256, 256)])
def test_can_ids(text, number):
    assert parse_can_id(text) == number
    assert can_id_text(number) == f"0x{number:X}"


@pytest.mark.parametrize("bad", ["", "0x", "-1", "0x1_00", "zz", True, None, 1.5, 0x20000000])
def test_bad_can_ids(bad):
    with pytest.raises(ValueError):
        parse_can_id(bad)


def test_the_compiled_decoder_agrees_with_the_plain_loop():
    """SignalSet decodes a full frame with generated code, a short one with
    a loop: both must give the same values for any definition."""
    import random

    from protocol.can import SignalSet

    rnd = random.Random(15)
    for case in range(400):
        defs = []
        if case % 2:  # whole standard-width fields of one byte order, as most ECUs send
            big, at = rnd.random() < 0.5, 0
            for i in range(rnd.randint(1, 4)):
                kind = rnd.choice(["unsigned", "signed", "float"])
                length = rnd.choice([32, 64] if kind == "float" else [8, 16, 32])
                at += 8 * rnd.randint(0, 1)
                defs.append(SignalDef(f"s{i}", 0x10, at, length, big, kind, rnd.choice([1.0, 0.1]),
                                      rnd.choice([0.0, -40.0]), None, rnd.choice([None, 0.0]), None))
                at += length
        for i in range(0 if case % 2 else rnd.randint(1, 5)):
            kind = rnd.choice(["unsigned", "signed", "float"])
            if kind == "float":
                length, start = rnd.choice([32, 64]), 8 * rnd.randint(0, 3)
            else:
                length, start = rnd.randint(1, 32), rnd.randint(0, 31)
            defs.append(SignalDef(f"s{i}", 0x10, start, length, rnd.random() < 0.5, kind, rnd.choice([1.0, 0.1, 2.5]),
                                  rnd.choice([0.0, -40.0]), "u", rnd.choice([None, -100.0]), rnd.choice([None, 1000.0])))
        sset = SignalSet(0x10, defs)
        data = bytes(rnd.getrandbits(8) for _ in range(sset._need))
        fast, short = sset.decode(data)
        slow, short_slow = sset.decode.__func__(_Unfit(sset), data)
        assert short == () and short_slow == []
        assert len(fast) == len(slow) == len(defs)
        for (n1, v1, u1, ok1), (n2, v2, u2, ok2) in zip(fast, slow):
            assert (n1, u1, ok1) == (n2, u2, ok2)
            assert v1 == v2 or (v1 is None and v2 is None) or math.isclose(v1, v2, rel_tol=1e-12)


class _Unfit:
    """A SignalSet seen as too long for every frame: the plain loop runs."""

    def __init__(self, sset) -> None:
        self._plan = sset._plan
        self._need = 10**9


def test_the_emitter_makes_the_callers_rows():
    from protocol.can import SignalSet

    sset = build_catalog(fueltech_rows()).common[0x100][0]
    assert isinstance(sset, SignalSet)
    emit = sset.emitter(("dev", "idx", ("can",), "name", "value", "unit", "tag"))
    out: list = []
    assert emit(bytes.fromhex("2823FF"), out.append, 7, "gw-1", "0x100") == ("RPM",)
    assert out[0] == ("gw-1", 7, "can", "RPM", 9000.0, "RPM", "0x100")
    assert out[1][:4] == ("gw-1", 8, "can", "TPS") and close(out[1][4], 99.96)
    assert emit(bytes.fromhex("2823"), out.append, 9, "gw-1", "0x100") is None and len(out) == 2
    with pytest.raises(ValueError, match="not a name the emitter can take"):
        sset.emitter(("import os", "value"))
