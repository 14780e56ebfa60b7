"""The Config App's tables beside the gateway's (issue 10), on real SQLite
files: migrations that never reshape them, and what storage/ keeps current
there (devices, telemetry_data, event_logs), read back with the Config
App's own queries."""

from __future__ import annotations

import sqlite3
import time
from datetime import datetime

import pytest

from protocol.values import DeviceFacts
from storage import config_app, devices, events, migrations, prune, telemetry
from storage.db import close_database, database, open_database, write_transaction
from storage.models import SchemaVersion
from tests.support import config_app as app

# The Config App is a SQLite program: its tables exist only in a SQLite file.
pytestmark = pytest.mark.sqlite_only

NOW = 1_790_000_000.25  # 2026-09-21


def row(uuid, seq=None, idx=0, metric="fuel_level", value=1.0, boot_id=None, ts=NOW, tag=None, raw=None):
    return (uuid, boot_id, seq, idx, ts, ts, "analog", metric, value, "%", tag, raw)


@pytest.fixture
def app_db(db_path):
    """A Config App database holding an owner's configuration; returns
    (path, the relay board's id, the configuration as it was)."""
    import os

    os.makedirs(os.path.dirname(db_path), exist_ok=True)
    app.create_all(db_path)
    conn = app.connect(db_path)
    relay_id = app.user_configuration(conn, "esp32-relay-cfg")
    before = app.dump(conn, skip_device_liveness=False)
    conn.close()
    return db_path, relay_id, before


def read(path, fn, *args, **kwargs):
    conn = app.connect(path)
    try:
        return fn(conn, *args, **kwargs)
    finally:
        conn.close()


# -- formats ---------------------------------------------------------------------


def test_local_datetime_is_what_sqlalchemy_writes_and_sorts_as_text():
    stamps = [NOW + i * 0.37 for i in range(2000)] + [NOW + 0.9999996, NOW + 1e-7]
    texts = [config_app.local_datetime(t) for t in stamps]
    for t, text in zip(stamps, texts):
        parsed = datetime.fromisoformat(text)
        assert abs(parsed.timestamp() - t) < 1e-5 and len(text) == 26
    assert sorted(texts) == [config_app.local_datetime(t) for t in sorted(stamps)]
    conn = sqlite3.connect(":memory:")
    sql = config_app._local_datetime_sql("?1")
    assert [conn.execute(f"SELECT {sql}", (t,)).fetchone()[0] for t in stamps] == texts


# -- migrations: never the Config App's tables -------------------------------------


def test_a_fresh_gateway_database_leaves_every_config_app_name_free(db, db_path):
    assert set(app.create_all(db_path)) == set(app.TABLES)
    assert "gateway_devices" in db.get_tables()


def test_on_a_config_app_database_nothing_of_it_changes(app_db):
    path, relay_id, before = app_db
    open_database(path)
    migrations.migrate()
    try:
        assert SchemaVersion.select().count() == len(migrations.STEPS)
    finally:
        close_database()
    assert read(path, app.dump, app.CONFIGURATION_TABLES, skip_device_liveness=False) == before


OLD_GATEWAY = """
CREATE TABLE devices (uuid TEXT NOT NULL PRIMARY KEY, device_type TEXT, name TEXT, firmware_version TEXT,
  hardware_revision TEXT, serial_number TEXT, capabilities TEXT, ip_address TEXT, mac_address TEXT, boot_id INTEGER,
  status_interval REAL, status TEXT DEFAULT 'offline', first_seen REAL, last_seen REAL,
  protocol TEXT NOT NULL DEFAULT 'v1', relay_count INTEGER, encoding TEXT NOT NULL DEFAULT 'json');
CREATE TABLE device_events (id INTEGER NOT NULL PRIMARY KEY, device_uuid TEXT NOT NULL, ts REAL NOT NULL,
  event TEXT NOT NULL, detail TEXT);
CREATE TABLE telemetry (id INTEGER NOT NULL PRIMARY KEY, device_uuid TEXT NOT NULL, boot_id INTEGER, seq INTEGER,
  idx INTEGER, ts REAL NOT NULL, received_at REAL NOT NULL, source TEXT NOT NULL, metric TEXT NOT NULL, value REAL,
  unit TEXT, tag TEXT, raw BLOB);
CREATE UNIQUE INDEX telemetry_identity ON telemetry (device_uuid, boot_id, seq, idx) WHERE seq IS NOT NULL;
CREATE TABLE commands (id INTEGER NOT NULL PRIMARY KEY, device_uuid TEXT NOT NULL, command_type TEXT NOT NULL,
  parameters TEXT, topic TEXT NOT NULL DEFAULT 'command', status TEXT NOT NULL DEFAULT 'pending',
  created_at REAL NOT NULL, expires_at REAL, timeout REAL, max_attempts INTEGER NOT NULL DEFAULT 3,
  attempts INTEGER NOT NULL DEFAULT 0, sent_at REAL, completed_at REAL, result TEXT, error_message TEXT);
CREATE TABLE schema_version (version INTEGER NOT NULL PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL);
INSERT INTO schema_version VALUES (1, 'contract tables and indexes', 1.0), (2, 'gateway columns', 1.0),
  (3, 'message identity', 1.0);
INSERT INTO devices (uuid, device_type, name, status, first_seen, last_seen, protocol, boot_id)
  VALUES ('old-relay', 'relay_board', 'Old relay', 'online', 100.0, 200.0, 'v1', 4),
         ('old-display', 'esp32_display', NULL, 'offline', 100.0, 150.0, 'fw22', NULL);
INSERT INTO telemetry (device_uuid, boot_id, seq, idx, ts, received_at, source, metric, value)
  VALUES ('old-relay', 4, 1, 0, 200.0, 200.0, 'analog', 'fuel_level', 50.0);
"""


def test_an_older_gateway_database_is_migrated_in_place(db_path):
    import os

    os.makedirs(os.path.dirname(db_path), exist_ok=True)
    conn = sqlite3.connect(db_path)
    conn.executescript(OLD_GATEWAY)
    conn.close()
    # The Config App started after that gateway: create_all skipped its
    # `devices` (taken) and made the rest, their foreign keys naming it.
    made = app.create_all(db_path)
    assert "devices" not in made and "relay_boards" in made
    conn = sqlite3.connect(db_path)
    theirs = dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE name IN ('relay_boards', 'telemetry_data')"))
    conn.close()

    open_database(db_path)
    migrations.migrate()
    try:
        assert [d.uuid for d in devices.list_devices()] == ["old-display", "old-relay"]
        old = devices.get_device("old-relay")
        assert (old.name, old.boot_id, old.last_seen, old.protocol) == ("Old relay", 4, 200.0, "v1")
        assert devices.get_device("old-display").protocol == "fw22"
        assert telemetry.count("old-relay") == 1
        assert not database.table_exists("devices")
        assert {v for (v,) in SchemaVersion.select(SchemaVersion.version).tuples()} == {v for v, _, _ in migrations.STEPS}
    finally:
        close_database()
    conn = sqlite3.connect(db_path)
    # The rename did not rewrite the Config App's foreign keys.
    assert dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE name IN ('relay_boards', 'telemetry_data')")) == theirs
    conn.close()
    # Its next start creates its own `devices`, and its tables work.
    assert app.create_all(db_path) == ["devices"]
    conn = app.connect(db_path)
    conn.execute("PRAGMA foreign_keys = ON")
    device_id = app.register_device(conn, "esp32-x", "X", "esp32_relay")
    conn.execute("INSERT INTO relay_boards (device_id, total_channels) VALUES (?, 16)", (device_id,))
    conn.commit()
    conn.close()


def test_columns_an_older_gateway_added_to_the_config_apps_devices_are_dropped(app_db):
    path, relay_id, before = app_db
    conn = sqlite3.connect(path)
    # What the gateway before this one did to it, before dying at start.
    conn.executescript("""
        ALTER TABLE devices ADD COLUMN protocol TEXT NOT NULL DEFAULT 'v1';
        ALTER TABLE devices ADD COLUMN relay_count INTEGER;
        ALTER TABLE devices ADD COLUMN encoding TEXT NOT NULL DEFAULT 'json';
        CREATE TABLE schema_version (version INTEGER NOT NULL PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL);
        INSERT INTO schema_version VALUES (1, 'contract tables', 1.0), (2, 'gateway columns', 1.0), (3, 'identity', 1.0);
        CREATE TABLE device_events (id INTEGER NOT NULL PRIMARY KEY, device_uuid TEXT NOT NULL, ts REAL NOT NULL,
          event TEXT NOT NULL, detail TEXT);
    """)
    conn.close()
    open_database(path)
    migrations.migrate()
    try:
        assert database.table_exists("gateway_devices")
    finally:
        close_database()
    assert read(path, app.dump, app.CONFIGURATION_TABLES, skip_device_liveness=False) == before


# -- what the gateway keeps current there -----------------------------------------


def test_devices_readings_and_events_read_back_with_the_config_apps_queries(app_db):
    path, relay_id, before = app_db
    configuration = read(path, app.dump)
    open_database(path)
    migrations.migrate()
    try:
        with write_transaction():
            devices.ensure_device("esp32-relay-cfg", NOW, "fw22")
            devices.upsert_facts("esp32-relay-cfg", DeviceFacts(firmware_version="2.0.1", ip_address="0.0.0.0"),
                                 NOW, "fw22", "json")
            devices.upsert_facts("v1-a", DeviceFacts(device_type="relay_board", firmware_version="1.2.0",
                                                     name="Front", mac_address="AA:BB:CC:00:00:01"),
                                 NOW, "v1", "json")  # the relay board's MAC: a clash
            events.append_events([("esp32-relay-cfg", NOW, "online", None),
                                  ("esp32-relay-cfg", NOW + 1, "error", {"error_code": "ERR_002", "message": "no command"})])
            rows = [row("v1-a", seq=1, idx=0, value=67.8, boot_id=1),
                    row("v1-a", seq=1, idx=1, metric="oil", value=45.0, boot_id=1),
                    row("esp32-relay-cfg", metric="relay.1.state", value=1.0, ts=NOW + 2),
                    row("v1-a", metric="note", value=None, tag="ok", ts=NOW + 3),
                    row("v1-a", metric="0x123", value=None, raw=b"\x0a\x1b", ts=NOW + 4)]
            assert telemetry.insert_rows(database, rows) == 5
            assert telemetry.insert_rows(database, rows[:2]) == 0  # a redelivery: no second copy either
        assert devices.get_device("esp32-relay-cfg", owner_name=True).display_name == "Relays front"
        assert devices.get_device("esp32-relay-cfg").owner_name is None  # the writer's lookups skip it
    finally:
        close_database()
    conn = app.connect(path)
    try:
        relay = app.device_by_uuid(conn, "esp32-relay-cfg")
        assert (relay["id"], relay["status"], relay["firmware_version"], relay["ip_address"]) == (
            relay_id, "online", "2.0.1", "192.168.4.20")
        v1 = app.device_by_uuid(conn, "v1-a")
        assert (v1["name"], v1["type"], v1["status"], v1["is_active"], v1["mac_address"]) == (
            "Front", "esp32_relay", "online", 1, None)
        assert app.telemetry_latest_by_key(conn, v1["id"]) == {"fuel_level": "67.8", "oil": "45", "note": "ok",
                                                                "0x123": "0a1b"}
        assert [r[3] for r in app.telemetry_latest(conn, v1["id"])][:2] == ["0x123", "note"]
        assert app.telemetry_latest_by_key(conn, relay_id) == {"relay.1.state": "1"}
        logged = app.events_by_device(conn, relay_id)
        assert [(e[1], e[2], e[4], e[6], e[7]) for e in logged if e[2] == "gateway"] == [
            ("device", "gateway", "error", "error", "no command"), ("device", "gateway", "online", "success", None)]
    finally:
        conn.close()
    after = read(path, app.dump)
    after["devices"] = [r for r in after["devices"] if r[0] == relay_id]  # v1-a's row is new
    assert after == configuration


def test_registration_off_adds_no_row(app_db):
    path, relay_id, _ = app_db
    open_database(path, register_devices=False)
    migrations.migrate()
    try:
        with write_transaction():
            devices.ensure_device("v1-b", NOW, "v1")
            devices.set_status("esp32-relay-cfg", "online", NOW)
            telemetry.insert_rows(database, [row("v1-b", seq=1), row("esp32-relay-cfg", metric="x")])
    finally:
        close_database()
        config_app.configure(register=True)
    assert read(path, app.device_by_uuid, "v1-b") is None
    assert read(path, app.device_by_uuid, "esp32-relay-cfg")["status"] == "online"
    assert read(path, lambda c: c.execute("SELECT COUNT(*) FROM telemetry_data").fetchone()[0]) == 1


def test_tables_made_while_the_gateway_runs_are_noticed(db, db_path):
    with write_transaction():
        devices.ensure_device("v1-c", NOW, "v1")
        telemetry.insert_rows(database, [row("v1-c", seq=1)])
    app.create_all(db_path)
    with write_transaction():
        telemetry.insert_rows(database, [row("v1-c", seq=2)])
    conn = app.connect(db_path)
    try:
        found = app.device_by_uuid(conn, "v1-c")
        assert found is not None and found["status"] == "online"
        assert app.telemetry_latest_by_key(conn, found["id"]) == {"fuel_level": "1"}
    finally:
        conn.close()


def test_retention_prunes_the_copies_too(app_db):
    path, relay_id, _ = app_db
    open_database(path)
    migrations.migrate()
    try:
        old = [row("v1-d", seq=i, ts=NOW - 40 * 86400 + i) for i in range(30)]
        new = [row("v1-d", seq=100 + i, ts=NOW + i) for i in range(20)]
        with write_transaction():
            telemetry.insert_rows(database, old + new)
        assert prune.prune_older_than(NOW - 30 * 86400, batch=7) == 30
        copies = read(path, lambda c: [t for (t,) in c.execute("SELECT timestamp FROM telemetry_data ORDER BY timestamp")])
        assert len(copies) == 20 and copies[0] == config_app.local_datetime(NOW)
        assert prune.prune_to_size(0, batch=5, max_rows=10) == 10
        assert read(path, lambda c: c.execute("SELECT COUNT(*) FROM telemetry_data").fetchone()[0]) == 10
    finally:
        close_database()
