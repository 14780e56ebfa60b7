"""The fleet side's database (issue 14): what `gateway fleet-ingest` writes
and `gateway fleet-command send` records, in PostgreSQL.

Tables of its own (`fleet_*`), made idempotently by `migrate_fleet`:
* `fleet_telemetry`, `fleet_events`, `fleet_command_changes`: the vehicles'
  rows, primary key (vehicle, db, id). A batch goes in with
  `INSERT ... ON CONFLICT DO NOTHING` in one transaction, so a redelivered
  batch, or the same batch taken by two ingesters at once, stores nothing
  twice (PostgreSQL's unique index decides, whoever commits first).
* `fleet_commands`: the commands the fleet sent, by `origin_id`; each state
  change that comes back in the commands lane updates `status` if it is
  newer (a higher change id) than the one stored.

psycopg 3, no ORM: the fleet side is a plain bulk writer. Imported only by
the fleet commands, so a vehicle never loads it.
"""

from __future__ import annotations

import json
import time
from typing import Any, Iterable

from protocol.uplink import COMMANDS_LANE, EVENTS_LANE, TELEMETRY_LANE, UplinkBatch

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS fleet_telemetry (
        vehicle TEXT NOT NULL, db TEXT NOT NULL, id BIGINT NOT NULL,
        device_uuid TEXT, boot_id BIGINT, seq BIGINT, idx BIGINT, ts DOUBLE PRECISION,
        received_at DOUBLE PRECISION, source TEXT, metric TEXT, value DOUBLE PRECISION, unit TEXT, tag TEXT,
        raw BYTEA, ingested_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (vehicle, db, id))""",
    """CREATE TABLE IF NOT EXISTS fleet_events (
        vehicle TEXT NOT NULL, db TEXT NOT NULL, id BIGINT NOT NULL,
        device_uuid TEXT, ts DOUBLE PRECISION, event TEXT, detail JSONB, ingested_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (vehicle, db, id))""",
    """CREATE TABLE IF NOT EXISTS fleet_command_changes (
        vehicle TEXT NOT NULL, db TEXT NOT NULL, id BIGINT NOT NULL,
        command_id BIGINT, status TEXT, at DOUBLE PRECISION, origin_id TEXT, device_uuid TEXT, command_type TEXT,
        attempts BIGINT, completed_at DOUBLE PRECISION, result JSONB, error_message TEXT,
        ingested_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (vehicle, db, id))""",
    """CREATE TABLE IF NOT EXISTS fleet_commands (
        origin_id TEXT PRIMARY KEY, vehicle TEXT NOT NULL, device_uuid TEXT NOT NULL, command_type TEXT NOT NULL,
        parameters JSONB, topic TEXT NOT NULL DEFAULT 'command', timeout DOUBLE PRECISION, max_attempts BIGINT,
        ttl_s DOUBLE PRECISION, created_at DOUBLE PRECISION NOT NULL,
        status TEXT NOT NULL DEFAULT 'sent_to_vehicle', command_id BIGINT, last_change BIGINT,
        result JSONB, error_message TEXT, updated_at DOUBLE PRECISION)""",
    "CREATE INDEX IF NOT EXISTS fleet_telemetry_device_ts ON fleet_telemetry (vehicle, device_uuid, ts)",
)

_TELEMETRY = ("device_uuid", "boot_id", "seq", "idx", "ts", "received_at", "source", "metric", "value", "unit", "tag",
              "raw")
_EVENTS = ("device_uuid", "ts", "event", "detail")
_CHANGES = ("command_id", "status", "at", "origin_id", "device_uuid", "command_type", "attempts", "completed_at",
            "result", "error_message")
_JSON = {"detail", "result"}
_TABLES = {TELEMETRY_LANE: ("fleet_telemetry", _TELEMETRY), EVENTS_LANE: ("fleet_events", _EVENTS),
           COMMANDS_LANE: ("fleet_command_changes", _CHANGES)}


def connect(url: str) -> Any:
    import psycopg

    if not url.startswith(("postgresql://", "postgres://")):
        raise ValueError(f"the fleet database must be a postgresql:// URL, got {url.split('@')[-1]!r}")
    return psycopg.connect(url, connect_timeout=5)


def migrate_fleet(conn: Any) -> None:
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(7414)")  # ingesters starting together take turns
        for statement in SCHEMA:
            conn.execute(statement)


def _value(column: str, v: Any) -> Any:
    if column in _JSON and v is not None:
        return json.dumps(v, separators=(",", ":"), ensure_ascii=False)
    return v


def store_batches(conn: Any, batches: Iterable[UplinkBatch], now: float | None = None) -> int:
    """Every row of `batches` in one transaction, each (vehicle, db, id)
    once per lane whatever was stored before. Returns rows new here."""
    at = time.time() if now is None else now
    by_table: dict[str, list[tuple]] = {}
    outcomes: list[tuple] = []
    for b in batches:
        table, columns = _TABLES[b.lane]
        rows = by_table.setdefault(b.lane, [])
        for r in b.rows:
            rows.append((b.vehicle_id, b.database_id, r["id"], *(_value(c, r.get(c)) for c in columns), at))
            if b.lane == COMMANDS_LANE and r.get("origin_id"):
                outcomes.append((r.get("status"), r.get("command_id"), r["id"], _value("result", r.get("result")),
                                 r.get("error_message"), at, r["origin_id"], b.vehicle_id))
    inserted = 0
    with conn.transaction():
        with conn.cursor() as cur:
            for lane, rows in by_table.items():
                table, columns = _TABLES[lane]
                names = ", ".join(("vehicle", "db", "id", *columns, "ingested_at"))
                marks = ", ".join(["%s"] * (len(columns) + 4))
                cur.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks}) ON CONFLICT DO NOTHING", rows)
                inserted += max(cur.rowcount, 0)
            if outcomes:
                # The newest change wins (changes of one command only grow).
                cur.executemany(
                    "UPDATE fleet_commands SET status = %s, command_id = %s, last_change = %s, result = %s, "
                    "error_message = %s, updated_at = %s WHERE origin_id = %s AND vehicle = %s "
                    "AND (last_change IS NULL OR last_change < %s)",
                    [(*o, o[2]) for o in outcomes])
    return inserted


def record_command(conn: Any, vehicle: str, origin_id: str, device_uuid: str, command_type: str, parameters: Any,
                   topic: str, timeout: float | None, max_attempts: int | None, ttl_s: float | None) -> bool:
    """The fleet's own record of a command it sends (False: that origin id exists)."""
    with conn.transaction():
        cur = conn.execute(
            "INSERT INTO fleet_commands (origin_id, vehicle, device_uuid, command_type, parameters, topic, timeout, "
            "max_attempts, ttl_s, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (origin_id) DO NOTHING",
            (origin_id, vehicle, device_uuid, command_type, _value("result", parameters), topic, timeout,
             max_attempts, ttl_s, time.time()))
        return cur.rowcount == 1
