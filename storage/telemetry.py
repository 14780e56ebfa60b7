"""Telemetry rows: the batch insert, queries and retention.

The insert is the gateway's hot path and the one write that bypasses
peewee's query builder: FIELD-NOTES measured `insert_many` at ~25k rows/s
(building the SQL is the cost) against ~160k rows/s for sqlite3's
`executemany` with one prepared statement. It still runs inside
`db.atomic()`, so it joins the DbWriter's batch transaction. Where the
Config App's `telemetry_data` exists, the rows the insert added are copied
there in the same transaction (storage/config_app.py); retention prunes both.
On PostgreSQL the insert is COPY into a staging table and one INSERT ...
SELECT ... ON CONFLICT DO NOTHING (storage/postgres.py); the SQLite loop
below is left exactly as it was, one attribute check per batch away.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from peewee import fn as peewee_fn

from protocol.values import TelemetryRow
from storage import config_app
from storage.db import POSTGRESQL, bound, database, sqlite_errors, write_transaction
from storage.models import Telemetry

# The columns `insert_rows` writes: a TelemetryRow's fields, in order.
TELEMETRY_COLUMNS: tuple[str, ...] = TelemetryRow._fields

_INSERT_SQL = "INSERT OR IGNORE INTO {table} ({cols}) VALUES ({marks})".format(
    table=Telemetry._meta.table_name,
    cols=", ".join(TELEMETRY_COLUMNS),
    marks=", ".join("?" * len(TELEMETRY_COLUMNS)),
)


_TABLE = Telemetry._meta.table_name
_MAX_ID_SQL = f"SELECT MAX(id) FROM {_TABLE}"


@dataclass(frozen=True, slots=True)
class TelemetryRecord:
    id: int
    device_uuid: str
    boot_id: int | None
    seq: int | None
    idx: int | None
    ts: float
    received_at: float
    source: str
    metric: str
    value: float | None
    unit: str | None
    tag: str | None
    raw: bytes | str | None


def insert_rows(db, rows: Sequence[TelemetryRow | tuple]) -> int:
    """Store `rows` (TelemetryRows, or plain tuples in their order: the CAN
    signal rows of actors/rules/can_rows.py); return how many
    were new. A row whose (device_uuid, boot_id, seq, idx) is stored
    already is skipped, so a redelivered message is stored once; rows with
    seq or boot_id NULL are always stored (NULLs never collide in SQLite).

    Callers that know a device's boot but got seq without boot_id should
    fill boot_id in (e.g. 0), or the redelivery will not be recognised.
    Raises DatabaseBusy (nothing stored) if the lock stayed held.
    """
    if not rows:
        return 0
    if db.engine == POSTGRESQL:
        from storage import postgres

        with write_transaction(db):
            return postgres.insert_telemetry(db, _TABLE, TELEMETRY_COLUMNS, rows)
    with write_transaction(db):
        conn = db.connection()
        copy = config_app.before_telemetry(conn, (row[0] for row in rows), max(row[5] for row in rows))
        with sqlite_errors():
            after_id = (conn.execute(_MAX_ID_SQL).fetchone()[0] or 0) if copy else 0
            # Plain tuples: sqlite3 binds an exact tuple's items directly, a
            # NamedTuple's through the sequence protocol (measured: a third
            # slower per row than copying each one into a tuple first).
            cursor = conn.executemany(_INSERT_SQL, [tuple(row) for row in rows])
        if copy and cursor.rowcount:
            config_app.copy_telemetry(conn, after_id)
        # Rows really inserted: an ignored repeat changes nothing.
        return cursor.rowcount


def query(
    device_uuid: str,
    metric: str | None = None,
    source: str | None = None,
    since: float | None = None,
    limit: int = 100,
    *,
    until: float | None = None,
    db=None,
) -> list[TelemetryRecord]:
    """A device's rows, newest `ts` first, optionally filtered; `since` and
    `until` bound `ts` (since inclusive, until exclusive)."""
    q = Telemetry.select().where(Telemetry.device_uuid == device_uuid)
    if metric is not None:
        q = q.where(Telemetry.metric == metric)
    if source is not None:
        q = q.where(Telemetry.source == source)
    if since is not None:
        q = q.where(Telemetry.ts >= since)
    if until is not None:
        q = q.where(Telemetry.ts < until)
    q = q.order_by(Telemetry.ts.desc(), Telemetry.id.desc()).limit(limit)
    return [TelemetryRecord(**row) for row in bound(q.dicts(), db)]


def count(device_uuid: str | None = None, *, db=None) -> int:
    q = Telemetry.select()
    if device_uuid is not None:
        q = q.where(Telemetry.device_uuid == device_uuid)
    return bound(q, db).count()


def last_id(*, db=None) -> int:
    """The highest telemetry id stored (0 if none)."""
    row = bound(Telemetry.select(peewee_fn.MAX(Telemetry.id)).tuples(), db)
    return (list(row)[0][0] or 0)


def rows_after(after_id: int, device_uuid: str, metric: str | None = None, source: str | None = None,
               since: float | None = None, limit: int = 1000, *, db=None) -> list[TelemetryRecord]:
    """A device's rows stored after row `after_id`, in the order they were
    stored (`gateway telemetry --follow`). It walks the id range: on SQLite
    the unary `+` keeps the planner off the per-device index, which would
    visit every row the device ever sent."""
    target = database if db is None else db
    uuid_col = "+device_uuid" if target.engine != POSTGRESQL else "device_uuid"
    mark = target.param
    columns = ("id", *TELEMETRY_COLUMNS)
    sql = f"SELECT {', '.join(columns)} FROM {_TABLE} WHERE id > {mark} AND {uuid_col} = {mark}"
    params: list = [after_id, device_uuid]
    for column, value in (("metric", metric), ("source", source)):
        if value is not None:
            sql += f" AND {column} = {mark}"
            params.append(value)
    if since is not None:
        sql += f" AND ts >= {mark}"
        params.append(since)
    sql += f" ORDER BY id LIMIT {int(limit)}"
    rows = target.execute_sql(sql, params).fetchall()
    return [TelemetryRecord(**dict(zip(columns, row))) for row in rows]
