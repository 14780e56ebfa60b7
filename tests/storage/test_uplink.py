"""storage/uplink.py and migration 6 on both engines."""

from __future__ import annotations

import uuid

import pytest

from storage import commands as command_repo
from storage import events as event_repo
from storage import migrations
from storage import telemetry
from storage import uplink
from storage.db import database, write_transaction
from storage.models import Telemetry


def row(seq, device="d1", boot=1, idx=0, metric="m", value=1.0, raw=None):
    return (device, boot, seq, idx, 100.0 + seq, 100.0 + seq, "sensor", metric, value, None, None, raw)


def insert(db, first, n):
    with write_transaction():
        telemetry.insert_rows(db, [row(s) for s in range(first, first + n)])


def test_the_database_keeps_one_id_for_life(db):
    first = uplink.database_id()
    assert uuid.UUID(first)
    assert migrations.migrate() == []
    migrations.uplink_tables()  # run again by hand: idempotent, the id kept
    assert uplink.database_id() == first


def test_ids_are_never_reused_after_the_newest_rows_are_deleted(db):
    insert(db, 1, 5)
    top = uplink.newest_ids()["telemetry"]
    with write_transaction():
        Telemetry.delete().execute()
    insert(db, 100, 1)
    assert uplink.newest_ids()["telemetry"] == top + 1
    event_repo.append_events([("d1", 1.0, "online", None)])
    eid = uplink.newest_ids()["events"]
    with write_transaction():
        database.execute_sql("DELETE FROM device_events")
    event_repo.append_events([("d1", 2.0, "offline", None)])
    assert uplink.newest_ids()["events"] == eid + 1


def test_lanes_are_read_in_pages_as_maps(db):
    insert(db, 1, 25)
    with write_transaction():
        telemetry.insert_rows(db, [row(99, raw=b"\x00\x01")])
    event_repo.append_events([("d1", 1.0, "online", {"boot_id": 3})])
    top = uplink.newest_ids()
    page = uplink.read_lane("telemetry", 1, top["telemetry"], 10)
    assert [r["id"] for r in page] == list(range(1, 11))
    assert set(page[0]) == set(uplink.TELEMETRY_COLUMNS) and page[0]["seq"] == 1 and page[0]["value"] == 1.0
    last = uplink.read_lane("telemetry", 20, top["telemetry"], 100)
    assert [r["id"] for r in last] == [20, 21, 22, 23, 24, 25, 26] and last[-1]["raw"] == b"\x00\x01"
    (event,) = uplink.read_lane("events", 1, top["events"], 10)
    assert event["event"] == "online" and event["detail"] == {"boot_id": 3}
    with pytest.raises(ValueError, match="lane must be one of"):
        uplink.read_lane("devices", 1, 2, 10)


def test_every_state_change_of_a_command_is_in_the_commands_lane(db):
    cid = command_repo.insert_command("dev-1", "relay_control", {"relay": 1}, now=10.0, ttl_s=60)
    command_repo.claim([cid], 11.0)
    command_repo.transition(cid, "sent", 12.0, attempts=1)
    command_repo.transition(cid, "succeeded", 13.0, result={"ok": True})
    rows = uplink.read_lane("commands", 1, uplink.newest_ids()["commands"], 100)
    assert [(r["command_id"], r["status"]) for r in rows] == [(cid, "pending"), (cid, "queued"), (cid, "sent"),
                                                              (cid, "succeeded")]
    assert rows[-1]["result"] == {"ok": True} and rows[-1]["device_uuid"] == "dev-1"
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)


def test_a_fleet_command_is_inserted_once_per_origin_id(db):
    args = dict(topic="command", now=10.0, ttl_s=60, timeout=None, max_attempts=3)
    cid = uplink.insert_fleet_command("fleet-1", "dev-1", "relay_control", {"relay": 1}, **args)
    assert cid is not None
    assert uplink.insert_fleet_command("fleet-1", "dev-1", "relay_control", {"relay": 1}, **args) is None
    assert [c.id for c in command_repo.pending_commands()] == [cid]
    (change,) = uplink.read_lane("commands", 1, 10, 10)
    assert change["origin_id"] == "fleet-1" and change["status"] == "pending"
    # a local command has no origin id, and many of them coexist
    command_repo.insert_command("dev-1", "x", None, now=10.0, ttl_s=60)
    command_repo.insert_command("dev-1", "x", None, now=10.0, ttl_s=60)
    assert len(command_repo.pending_commands()) == 3


def test_the_cursor_round_trips(db):
    assert uplink.load_cursor() == {}
    uplink.save_cursor({"telemetry": [(1, 10), (20, 30)], "events": []}, 5.0)
    uplink.save_cursor({"telemetry": [(1, 30)]}, 6.0)
    assert uplink.load_cursor() == {"telemetry": [(1, 30)], "events": []}


def test_acknowledged_rows_are_what_retention_may_take_first(db):
    insert(db, 1, 30)
    assert uplink.prunable_telemetry([(5, 7), (20, 40)], 6) == [5, 6, 7, 20, 21, 22]
    assert uplink.prunable_telemetry([], 6) == []


@pytest.mark.sqlite_only
def test_sqlite_tables_are_rebuilt_with_autoincrement_keeping_rows_and_indexes(tmp_path):
    import sqlite3

    from storage.db import close_database, open_database

    path = str(tmp_path / "a.db")
    open_database(path)
    # A database of the gateway before migration 6: steps 1 to 5 only.
    with write_transaction():
        for _version, _name, step in migrations.STEPS[:5]:
            step()
    database.execute_sql("INSERT INTO telemetry (device_uuid, boot_id, seq, idx, ts, received_at, source, metric) "
                         "VALUES ('d', 1, 1, 0, 1, 1, 's', 'm'), ('d', 1, 2, 0, 1, 1, 's', 'm')")
    before = {r[0] for r in database.execute_sql("SELECT name FROM sqlite_master WHERE tbl_name = 'telemetry' "
                                                 "AND type = 'index'")}
    close_database()
    open_database(path)
    migrations.migrate()
    close_database()
    conn = sqlite3.connect(path)
    (sql,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'telemetry'").fetchone()
    assert "AUTOINCREMENT" in sql
    after = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE tbl_name = 'telemetry' AND type = 'index'")}
    assert before <= after and "telemetry_identity" in after
    assert conn.execute("SELECT id, seq FROM telemetry ORDER BY id").fetchall() == [(1, 1), (2, 2)]
    conn.execute("DELETE FROM telemetry")
    conn.execute("INSERT INTO telemetry (device_uuid, ts, received_at, source, metric) VALUES ('d', 1, 1, 's', 'm')")
    assert conn.execute("SELECT id FROM telemetry").fetchall() == [(3,)]
    conn.close()
