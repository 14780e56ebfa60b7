"""Migrations: versioned, idempotent, and at ease with tables the Config
App created first with only the contract's columns."""

from __future__ import annotations

import os
import sqlite3

import pytest

from protocol.values import DeviceFacts
from storage import commands, devices, migrations, telemetry
from storage.db import close_database, database, open_database
from storage.models import CONTRACT_MODELS, SchemaVersion

# The contract's tables as an older gateway (or a hand-made script) created them,
# registry still named `devices`: only the
# contract's columns, loose types, its own name for the dedup index.
CONTRACT_ONLY = """
CREATE TABLE devices (uuid TEXT PRIMARY KEY, device_type TEXT, name TEXT, firmware_version TEXT,
  hardware_revision TEXT, serial_number TEXT, capabilities JSON, ip_address TEXT, mac_address TEXT,
  boot_id INTEGER, status_interval REAL, status TEXT, first_seen REAL, last_seen REAL);
CREATE TABLE device_events (id INTEGER PRIMARY KEY, device_uuid TEXT, ts REAL, event TEXT, detail JSON);
CREATE TABLE telemetry (id INTEGER PRIMARY KEY, device_uuid TEXT, boot_id INTEGER, seq INTEGER, idx INTEGER,
  ts REAL, received_at REAL, source TEXT, metric TEXT, value REAL, unit TEXT, tag TEXT, raw BLOB);
CREATE UNIQUE INDEX ux_telemetry_message ON telemetry (device_uuid, boot_id, seq, idx);
CREATE TABLE commands (id INTEGER PRIMARY KEY, device_uuid TEXT, command_type TEXT, parameters JSON,
  topic TEXT DEFAULT 'command', status TEXT, created_at REAL, expires_at REAL, timeout REAL,
  max_attempts INTEGER, attempts INTEGER, sent_at REAL, completed_at REAL, result JSON, error_message TEXT);
INSERT INTO devices (uuid, device_type, status, capabilities) VALUES ('esp32-relay-01', 'esp32_relay', 'offline', '{"relays": 16}');
INSERT INTO commands (device_uuid, command_type, parameters, status, created_at)
  VALUES ('esp32-relay-01', 'relay_control', '{"channel": 1, "state": true}', 'pending', 1000.0);
"""


def schema(db) -> dict[str, list[str]]:
    return {t: [c.name for c in db.get_columns(t)] for t in db.get_tables()}


def indexes(db, table) -> list[tuple[tuple[str, ...], bool]]:
    return sorted((tuple(i.columns), bool(i.unique)) for i in db.get_indexes(table))


def test_fresh_database_gets_every_step(db):
    assert [v for (v,) in SchemaVersion.select(SchemaVersion.version).tuples()] == [v for v, _, _ in migrations.STEPS]
    assert migrations.current_version() == migrations.STEPS[-1][0]
    for model in CONTRACT_MODELS:
        assert db.table_exists(model._meta.table_name)
    assert (("device_uuid", "boot_id", "seq", "idx"), True) in indexes(db, "telemetry")
    assert (("device_uuid", "ts"), False) in indexes(db, "telemetry")
    assert (("status", "id"), False) in indexes(db, "commands")


def test_running_twice_is_harmless(db, db_url):
    devices.ensure_device("d1", 1.0, "v1")
    before_schema, before_versions = schema(db), list(SchemaVersion.select().tuples())
    assert migrations.migrate() == []
    # Each step on its own, again: still harmless.
    with database.atomic():
        for _, _, step in migrations.STEPS:
            step()
    close_database()
    db = open_database(db_url)
    migrations.migrate()
    assert schema(db) == before_schema
    assert list(SchemaVersion.select().tuples()) == before_versions
    assert devices.get_device("d1") is not None


@pytest.mark.sqlite_only  # a file an older gateway or the Config App made
def test_over_a_contract_only_schema(db_path, tmp_path):
    os.makedirs(os.path.dirname(db_path), exist_ok=True)
    conn = sqlite3.connect(db_path)
    conn.executescript(CONTRACT_ONLY)
    conn.close()

    db = open_database(db_path)
    migrations.migrate()
    try:
        cols = [c.name for c in db.get_columns("gateway_devices")]
        assert {"protocol", "relay_count", "encoding"} <= set(cols)
        # The Config App's row got the defaults of the new columns.
        dev = devices.get_device("esp32-relay-01")
        assert (dev.protocol, dev.encoding, dev.relay_count) == ("v1", "json", None)
        assert dev.capabilities == {"relays": 16}
        # Its unique index is reused, not duplicated; ours are added.
        tele = indexes(db, "telemetry")
        assert tele.count((("device_uuid", "boot_id", "seq", "idx"), True)) == 1
        assert (("device_uuid", "ts"), False) in tele
        assert (("status", "id"), False) in indexes(db, "commands")
        # Same columns as a database we create ourselves.
        migrated = schema(db)
    finally:
        close_database()
    fresh_db = open_database(str(tmp_path / "fresh.db"))
    migrations.migrate()
    try:
        fresh = schema(fresh_db)
    finally:
        close_database()
    assert migrated == fresh

    # The repositories work on the migrated tables.
    open_database(db_path)
    migrations.migrate()
    try:
        row = ("esp32-relay-01", None, None, 0, 5.0, 5.0, "relay", "relay.1.state", 1.0, None, None, None)
        dedup = ("v1dev", 3, 7, 0, 5.0, 5.0, "sensor", "x", 1.0, None, None, None)
        assert telemetry.insert_rows(database, [row, row, dedup, dedup]) == 3
        (pending,) = commands.pending_commands()
        # A row the Config App wrote without attempts/max_attempts/expires_at.
        (claimed,) = commands.claim([pending.id], 2000.0, default_ttl_s=300.0)
        assert (claimed.status, claimed.created_at, claimed.expires_at) == ("queued", 1000.0, 1300.0)
        spec = commands.to_spec(claimed, default_timeout=5.0)
        assert (spec.max_attempts, spec.timeout, spec.parameters) == (3, 5.0, {"channel": 1, "state": True})
        assert commands.transition(claimed.id, "sent", 2001.0, attempts=1)
        devices.upsert_facts("esp32-relay-01", DeviceFacts(firmware_version="2.0.0"), 9.0, "fw22", "json")
        assert devices.get_device("esp32-relay-01").protocol == "fw22"
    finally:
        close_database()


@pytest.mark.sqlite_only  # a file an older gateway or the Config App made
def test_a_partly_migrated_devices_table_gets_only_what_it_lacks(db_path):
    os.makedirs(os.path.dirname(db_path), exist_ok=True)
    conn = sqlite3.connect(db_path)
    conn.executescript(CONTRACT_ONLY)
    conn.execute("ALTER TABLE devices ADD COLUMN protocol TEXT NOT NULL DEFAULT 'fw22'")
    conn.close()
    db = open_database(db_path)
    migrations.migrate()
    try:
        names = [c.name for c in db.get_columns("gateway_devices")]
        assert names.count("protocol") == 1 and "encoding" in names and "relay_count" in names
        assert devices.get_device("esp32-relay-01").protocol == "fw22"  # theirs, kept
    finally:
        close_database()
