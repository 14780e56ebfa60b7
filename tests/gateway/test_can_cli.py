"""`gateway can signals|decode` and the CAN part of `gateway inspect stats`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.commands.inspect import render_stats
from tests.support import config_app as app

DBC = Path(__file__).parents[1] / "protocol" / "data" / "engine_mux.dbc"


@pytest.fixture
def seeded(cli):
    cli.db_path.parent.mkdir(parents=True, exist_ok=True)
    app.create_all(str(cli.db_path))
    conn = app.connect(str(cli.db_path))
    app.seed_can_signals(conn)
    conn.execute("INSERT INTO can_signals (signal_name, can_id, start_bit, length_bits, byte_order, is_active)"
                 " VALUES ('Odd', '0x100', 0, 8, 'sideways', 1)")
    conn.commit()
    conn.close()
    return cli


def test_signals_lists_what_is_in_force_and_where_it_comes_from(seeded):
    result = seeded("can", "signals", "--can-dbc", f"can_gateway={DBC}")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["SIGNAL", "CAN", "ID", "START", "LENGTH", "ORDER", "TYPE", "SCALE", "OFFSET", "UNIT",
                                "MIN", "MAX", "FROM", "DEVICES", "NOTE"]
    rpm = [line.split() for line in lines if line.startswith("RPM ")]
    assert rpm[0][:8] == ["RPM", "0x100", "0", "16", "little_endian", "unsigned", "1", "0"]
    assert rpm[0][11:13] == ["config_app", "all"]
    assert " ".join(rpm[0][13:]) == "not for can_gateway devices (a DBC file defines it)"
    assert rpm[1][:5] == ["RPM", "0x100", "7", "16", "big_endian"] and str(DBC) in rpm[1] and "can_gateway" in rpm[1]
    assert any(line.startswith("OilTemp ") and "when MuxId is 1" in line for line in lines)
    assert "note: skipped CAN signal 'Odd' (can_signals id 15): unknown byte_order 'sideways'" in result.stdout
    assert "the DBC's definition is used for can_gateway devices" in result.stdout
    doc = json.loads(seeded("can", "signals", "--json").stdout)
    assert len(doc["signals"]) == 14 and doc["config_app_table"] is True
    assert doc["signals"][1] == {"name": "TPS", "can_id": "0x100", "start_bit": 16, "length_bits": 8,
                                 "byte_order": "little_endian", "data_type": "unsigned", "scale_factor": 0.392,
                                 "offset": 0.0, "unit": "%", "min_value": 0.0, "max_value": 100.0,
                                 "origin": "config_app", "device_type": None, "note": ""}


def test_decode_one_frame_by_hand(seeded):
    result = seeded("can", "decode", "0x100", "C4 09 5A")
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.stdout.splitlines()]
    assert rows == [["SIGNAL", "VALUE", "UNIT", "RANGE"], ["RPM", "2500", "RPM", "ok"], ["TPS", "35.28", "%", "ok"]]
    short = seeded("can", "decode", "100", "2823")
    assert short.stdout.splitlines()[1].split() == ["RPM", "9000", "RPM", "OUT", "OF", "RANGE"]
    assert "TPS: the frame (2 bytes) is too short for it" in short.stdout
    typed = json.loads(seeded("can", "decode", "0x100", "09C45A", "--device-type", "can_gateway", "--json",
                              "--can-dbc", f"can_gateway={DBC}").stdout)
    assert {s["name"]: s["value"] for s in typed["signals"]}["RPM"] == 2500


def test_decode_errors_are_clear(seeded):
    none = seeded("can", "decode", "0x7FF", "00")
    assert none.exit_code == 1
    assert none.stderr == "error: no CAN definition for 0x7FF (gateway can signals lists them)\n"
    bad = seeded("can", "decode", "engine", "00")
    assert bad.exit_code == 2 and "not a CAN id: 'engine'" in bad.stderr
    bad = seeded("can", "decode", "0x100", "0g")
    assert bad.exit_code == 2 and "'0g' is not hex text of whole bytes" in bad.stderr


def test_without_a_database_only_the_dbc_files_count(cli):
    result = cli("can", "signals")
    assert result.exit_code == 0
    assert result.stdout.startswith("no CAN definitions (no can_signals table, no DBC files)")
    result = cli("can", "decode", "0x510", "0110FF", "--can-dbc", str(DBC))
    assert [line.split()[:2] for line in result.stdout.splitlines()[1:]] == [["MuxId", "1"], ["OilTemp", "-24"]]
    bad = cli("can", "signals", "--can-dbc", "=x.dbc")
    assert bad.exit_code == 2
    assert bad.stderr == ("error: AUTOCORE_CAN_DBC (flag): each entry must be FILE or DEVICE_TYPE=FILE, and "
                          "'=x.dbc' has no type before '=', got '=x.dbc'\n")


def test_stats_show_frames_decoded_out_of_range_and_undefined():
    text = render_stats({"can": {
        "definitions": 16, "keep_raw": True, "frames_seen": 10, "frames_decoded": 7, "signals_decoded": 15,
        "frames_no_definition": 3, "frames_failed": 0, "signals_out_of_range": 2, "out_of_range": {"RPM": 2},
        "signals_too_short": 1, "too_short": {"TPS": 1},
        "feed": {"definitions": 16, "by_origin": {"config_app": 13, "ecu.dbc": 3}, "problems": 1}}})
    for expected in ("definitions   16 in force (13 from config_app, 3 from ecu.dbc); 1 skipped or overridden",
                     "frames        10 seen, 7 decoded into 15 signals, 3 with no definition, 0 undecodable",
                     "out of range  2 signals (RPM 2)",
                     "too short     1 signals (TPS 1)"):
        assert expected in text, text
