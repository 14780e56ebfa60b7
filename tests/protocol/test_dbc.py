"""DBC files through cantools: a multiplexed message, both byte orders,
signedness, truncated frames, and how DBC and Config App definitions meet."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from protocol.can import FrameError, build_catalog
from protocol.dbc import BadDbc, load_dbc_text
from tests.support.config_app import fueltech_rows

DBC = (Path(__file__).parent / "data" / "engine_mux.dbc").read_text()


@pytest.fixture
def dbc():
    return load_dbc_text(DBC, "engine_mux.dbc")


def values(frame, data: bytes) -> dict:
    results, _ = frame.decode(data)
    return {r.name: r.value for r in results}


def test_a_multiplexed_message_decodes_only_the_selected_signals(dbc):
    mux = dbc.frames[0x510]
    assert values(mux, bytes([1, 0x10, 0xFF, 0, 0, 0, 0, 0])) == {"MuxId": 1, "OilTemp": -24.0}
    got = values(mux, bytes([2, 0x10, 0x01, 3, 0, 0, 0, 0]))
    assert set(got) == {"MuxId", "OilPress", "GearPos"}
    assert math.isclose(got["OilPress"], 2.72)
    assert got["GearPos"] == 3  # a Motorola (big-endian) signal


def test_motorola_intel_and_signed_signals(dbc):
    engine = dbc.frames[0x100]
    # RPM big endian 0x09C4, coolant 130 raw, torque -200 raw (little endian, signed) * 0.5
    got = values(engine, bytes([0x09, 0xC4, 130]) + (-200).to_bytes(2, "little", signed=True) + bytes(3))
    assert got == {"RPM": 2500, "CoolantTemp": 90, "Torque": -100.0}


def test_a_truncated_frame_names_what_it_is_too_short_for(dbc):
    mux = dbc.frames[0x510]
    results, short = mux.decode(bytes([2, 0x10, 0x01]))
    assert {r.name for r in results} == {"MuxId", "OilPress"}
    assert short == ["GearPos"]  # OilTemp is not selected by MuxId 2: not missing
    results, short = dbc.frames[0x100].decode(bytes([0x09]))
    assert results == [] and sorted(short) == ["CoolantTemp", "RPM", "Torque"]


def test_an_unknown_multiplexer_value_is_a_frame_error(dbc):
    with pytest.raises(FrameError, match="SensorMux"):
        dbc.frames[0x510].decode(bytes([7, 0, 0, 0, 0, 0, 0, 0]))


def test_out_of_range_uses_the_dbc_limits(dbc):
    results, _ = dbc.frames[0x100].decode(bytes([0x27, 0x10, 0, 0, 0, 0, 0, 0]))  # RPM 10000 > 8000
    rpm = next(r for r in results if r.name == "RPM")
    assert rpm.value == 10000 and rpm.in_range is False and rpm.unit == "rpm"


def test_an_extended_frame_id_is_the_29_bit_id(dbc):
    assert 0x18FEF100 in dbc.frames
    assert values(dbc.frames[0x18FEF100], bytes([50])) == {"Boost": 100}


def test_the_dbc_wins_a_clash_with_one_line(dbc):
    catalog = build_catalog(fueltech_rows(), [dbc])
    assert [line for line in catalog.problems if "'RPM'" in line] == [
        "CAN signal 'RPM' is defined in the Config App's can_signals and in engine_mux.dbc: the DBC's definition is used"]
    assert len(catalog.problems) == 1
    results, _, _ = catalog.decode(0x100, bytes([0x09, 0xC4, 90, 0, 0, 0, 0, 0]))
    got = {r.name: r.value for r in results}
    assert got["RPM"] == 2500  # DBC: big endian; the Config App's (little endian) would say 0xC409
    assert math.isclose(got["TPS"], 35.28)  # the Config App's other signal of the id stays
    origins = {d.name: d.origin for d in catalog.definitions}
    assert origins["RPM"] == "engine_mux.dbc" and origins["TPS"] == "config_app"
    assert sum(1 for d in catalog.definitions if d.name == "RPM") == 1


def test_a_dbc_for_one_device_type(dbc):
    typed = load_dbc_text(DBC, "engine_mux.dbc", device_type="can_gateway")
    catalog = build_catalog(fueltech_rows(), [typed])
    frame = bytes([0x09, 0xC4, 90, 0, 0, 0, 0, 0])
    for_gateway = {r.name: r.value for r in catalog.decode(0x100, frame, "can_gateway")[0]}
    for_others = {r.name: r.value for r in catalog.decode(0x100, frame, "relay_board")[0]}
    unknown = {r.name: r.value for r in catalog.decode(0x100, frame, None)[0]}
    assert for_gateway["RPM"] == 2500 and "Torque" in for_gateway
    assert for_others["RPM"] == 0xC409 and "Torque" not in for_others
    assert unknown == for_others
    assert any("for can_gateway devices" in line for line in catalog.problems)


def test_a_broken_dbc_names_the_file():
    with pytest.raises(BadDbc, match="broken.dbc"):
        load_dbc_text("BO_ this is not a dbc\n SG_ ::: \n", "broken.dbc")
