"""CAN frames become signals, end to end (issue 15): a real Mosquitto, the
gateway as a subprocess, the Config App's database with the FuelTech
signals as it seeds them, and a DBC file."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.integration.helpers import inspect
from tests.support import config_app as app
from tests.support.broker import wait_until

DBC = Path(__file__).parents[1] / "protocol" / "data" / "engine_mux.dbc"


def seeded_db(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    app.create_all(str(path))
    conn = app.connect(str(path))
    try:
        app.seed_can_signals(conn)
    finally:
        conn.close()


def frames_message(seq: int, *frames: tuple[str, str]) -> dict:
    return {"seq": seq, "boot_id": 1, "analog_sensors": {"fuel_level": 50.0},
            "can_frames": [{"id": fid, "data": data} for fid, data in frames]}


def signals(db, uuid: str, seq: int) -> dict:
    return {r["metric"]: (r["value"], r["unit"], r["tag"], r["idx"])
            for r in db.rows("SELECT * FROM telemetry WHERE device_uuid = ? AND seq = ? AND source = 'can'", uuid, seq)}


def test_frames_become_signals_and_a_changed_definition_changes_the_next_decode(gateways, db, devices, tmp_path):
    seeded_db(tmp_path / "gw" / "autocore.db")
    gw = gateways(can_poll_ms=100)
    dev = devices("can-gw-01")
    # RPM 2500, TPS 35.28 %; MAP 101 kPa, IAT 25 °C; an id nobody defined
    dev.publish("telemetry", frames_message(1, ("0x100", "C4095A0000000000"), ("0x200", "6500410000000000"),
                                            ("0x7FF", "00")))
    wait_until(lambda: len(signals(db, dev.uuid, 1)) == 4, 10, what="the decoded signals")
    got = signals(db, dev.uuid, 1)
    assert got["RPM"] == (2500.0, "RPM", "0x100", 4)  # idx after the message's 4 rows (0..3)
    assert abs(got["TPS"][0] - 35.28) < 1e-9 and got["TPS"][2:] == ("0x100", 5)
    assert got["MAP"][0] == 101.0 and got["IAT"] == (25.0, "°C", "0x200", 7)
    raw = [r["metric"] for r in db.rows("SELECT metric FROM telemetry WHERE device_uuid = ? AND source = 'can_raw'"
                                        " ORDER BY idx", dev.uuid)]
    assert raw == ["0x100", "0x200", "0x7FF"]  # AUTOCORE_CAN_KEEP_RAW defaults on
    # The Config App sees the signal too, in its own table.
    assert tuple(db.rows("SELECT data_value, unit FROM telemetry_data WHERE data_type = 'can' AND data_key = 'RPM'")[0]) \
        == ("2500", "RPM")

    # The Config App edits RPM while the gateway runs: big endian, scale 2.
    mark = len(gw.lines)
    conn = app.connect(str(db.path))
    conn.execute("UPDATE can_signals SET byte_order = 'big_endian', scale_factor = 2 WHERE signal_name = 'RPM'")
    conn.commit()
    conn.close()
    gw.wait_for_line("CAN definitions changed", 5, after=mark)
    dev.publish("telemetry", frames_message(2, ("0x100", "09C45A0000000000")))
    wait_until(lambda: "RPM" in signals(db, dev.uuid, 2), 10, what="the next decode")
    assert signals(db, dev.uuid, 2)["RPM"][0] == 5000.0

    # A redelivery of seq 1 decodes to the same identities: stored once.
    before = db.one("SELECT count(*) FROM telemetry WHERE device_uuid = ?", dev.uuid)
    dev.publish("telemetry", frames_message(1, ("0x100", "C4095A0000000000"), ("0x200", "6500410000000000"),
                                            ("0x7FF", "00")))
    dev.publish("telemetry", frames_message(3, ("0x100", "2823")))  # RPM out of range (9000 * 2), TPS too short
    wait_until(lambda: "RPM" in signals(db, dev.uuid, 3), 10, what="seq 3")
    assert db.one("SELECT count(*) FROM telemetry WHERE device_uuid = ?", dev.uuid) == before + 3
    assert signals(db, dev.uuid, 1)["RPM"][0] == 2500.0

    def can_stats():
        stats = inspect(gw.socket_path, "stats")["stats"]["can"]
        return stats if stats["frames_seen"] >= 8 else None

    stats = wait_until(can_stats, 5, what="the CAN counters")
    assert stats["frames_decoded"] == 6 and stats["frames_no_definition"] == 2
    # out of range: seq 3, and the redelivered seq 1 under the new definition
    # (decoded again before the insert ignored it)
    assert stats["out_of_range"] == {"RPM": 2} and stats["too_short"] == {"TPS": 1}
    assert stats["feed"]["definitions"] == 14 and stats["feed"]["by_origin"] == {"config_app": 14}


def test_dbc_files_keep_raw_off_and_a_bad_row_logged_once(gateways, db, devices, tmp_path):
    seeded_db(tmp_path / "gw" / "autocore.db")
    conn = app.connect(str(tmp_path / "gw" / "autocore.db"))
    conn.execute("INSERT INTO can_signals (signal_name, can_id, start_bit, length_bits, is_active)"
                  " VALUES ('Broken', '0x100', 0, 0, 1)")
    conn.commit()
    dbc = tmp_path / "engine_mux.dbc"
    shutil.copy(DBC, dbc)
    gw = gateways(can_poll_ms=100, can_keep_raw=0, can_dbc=str(dbc))
    dev = devices("can-gw-02")
    # RPM from the DBC (big endian) wins over the Config App's; the multiplexed
    # message; an undefined multiplexer value; an id nobody defined.
    dev.publish("telemetry", frames_message(1, ("0x100", "09C45A0000000000"), ("0x510", "0110FF0000000000"),
                                            ("0x510", "0700000000000000"), ("0x123", "00")))
    wait_until(lambda: len(signals(db, dev.uuid, 1)) >= 5, 10, what="the decoded signals")
    got = signals(db, dev.uuid, 1)
    assert got["RPM"][:3] == (2500.0, "rpm", "0x100")
    assert got["OilTemp"][:3] == (-24.0, "degC", "0x510") and got["MuxId"][0] == 1.0
    assert abs(got["TPS"][0] - 35.28) < 1e-9 and "OilPress" not in got
    raw = [(r["metric"], bytes(r["raw"]).hex()) for r in
           db.rows("SELECT metric, raw FROM telemetry WHERE device_uuid = ? AND source = 'can_raw' ORDER BY idx", dev.uuid)]
    assert raw == [("0x510", "0700000000000000"), ("0x123", "00")]  # what nothing decoded stays
    # Changes of other tables make the feed read can_signals again: the
    # bad row and the clash are still logged only once.
    conn.execute("UPDATE can_signals SET unit = 'rpm' WHERE signal_name = 'TPS'")
    conn.commit()
    conn.close()
    gw.wait_for_line("CAN definitions changed", 5)
    assert sum("skipped CAN signal 'Broken'" in line and "length_bits 0" in line for line in gw.lines) == 1
    assert sum("CAN signal 'RPM' is defined in the Config App's can_signals and in" in line for line in gw.lines) == 1
