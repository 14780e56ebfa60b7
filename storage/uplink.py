"""What the fleet uplink reads and keeps in the database (issue 14).

* `database_id()`: the uuid migration 6 made for this database, for life.
* `newest_ids()`: the highest committed id of each wire lane (telemetry,
  device events, command state changes).
* `read_lane(lane, first, last, limit)`: committed rows first..last of a
  lane, ascending, at most `limit` (a page: memory stays flat however long
  the backlog), as maps keyed by column name (PROTOCOL.md, "Fleet uplink").
* `load_cursor()` / `save_cursor()`: the acknowledged ids per lane.
* `insert_fleet_command()`: a command from the fleet, once per origin id.
* `prunable_ids()`: what retention deletes first (acknowledged rows).

Reads run on the calling thread's own connection (the Uplink actor's),
which in WAL mode takes no lock. On SQLite ids commit in order (one write
lock, AUTOINCREMENT), so every id up to `newest_ids()` is either there or
was deleted. On PostgreSQL the lanes' ids come from sequences: two
transactions writing the same table at once may commit a higher id first.
The gateway has one writer per table there as well, except for
`commands`, which the CLI and the Config App also write (see the README's
Known limits).
"""

from __future__ import annotations

import json
from typing import Any, Iterable

from peewee import fn

from storage.db import database, write_transaction
from storage.models import CommandChange, DeviceEvent, GatewayMeta, Telemetry, UplinkCursor

TELEMETRY_LANE, EVENTS_LANE, COMMANDS_LANE = "telemetry", "events", "commands"
LANES = (EVENTS_LANE, COMMANDS_LANE, TELEMETRY_LANE)

TELEMETRY_COLUMNS = ("id", "device_uuid", "boot_id", "seq", "idx", "ts", "received_at", "source", "metric", "value",
                     "unit", "tag", "raw")
EVENT_COLUMNS = ("id", "device_uuid", "ts", "event", "detail")
# A command lane row: the change (id, command_id, status, at) and the
# command as it is when read (its result once final).
COMMAND_COLUMNS = ("id", "command_id", "status", "at", "origin_id", "device_uuid", "command_type", "topic",
                   "attempts", "max_attempts", "created_at", "completed_at", "result", "error_message")

_MODELS = {TELEMETRY_LANE: Telemetry, EVENTS_LANE: DeviceEvent, COMMANDS_LANE: CommandChange}


def _check_lane(lane: str) -> None:
    if lane not in _MODELS:
        raise ValueError(f"lane must be one of {', '.join(LANES)}, got {lane!r}")


def database_id() -> str:
    row = GatewayMeta.get_or_none(GatewayMeta.key == "database_id")
    if row is None:
        raise RuntimeError("this database has no database_id: run the migrations (gateway db migrate)")
    return row.value


def newest_ids() -> dict[str, int]:
    out = {}
    for lane, model in _MODELS.items():
        out[lane] = model.select(fn.MAX(model.id)).scalar() or 0
    return out


def _json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _sql(text: str) -> str:
    return text.replace("?", database.param) if database.param != "?" else text


_READ_SQL = {
    TELEMETRY_LANE: f"SELECT {', '.join(TELEMETRY_COLUMNS)} FROM telemetry WHERE id >= ? AND id <= ? ORDER BY id LIMIT ?",
    EVENTS_LANE: f"SELECT {', '.join(EVENT_COLUMNS)} FROM device_events WHERE id >= ? AND id <= ? ORDER BY id LIMIT ?",
    COMMANDS_LANE: (
        "SELECT ch.id, ch.command_id, ch.status, ch.at, c.origin_id, c.device_uuid, c.command_type, c.topic, "
        "c.attempts, c.max_attempts, c.created_at, c.completed_at, c.result, c.error_message "
        "FROM uplink_command_changes ch LEFT JOIN commands c ON c.id = ch.command_id "
        "WHERE ch.id >= ? AND ch.id <= ? ORDER BY ch.id LIMIT ?"
    ),
}
_COLUMNS = {TELEMETRY_LANE: TELEMETRY_COLUMNS, EVENTS_LANE: EVENT_COLUMNS, COMMANDS_LANE: COMMAND_COLUMNS}


def read_lane(lane: str, first: int, last: int, limit: int) -> list[dict[str, Any]]:
    """Rows first..last (inclusive) of `lane`, ascending, at most `limit`."""
    _check_lane(lane)
    if limit < 1:
        raise ValueError("limit must be at least 1")
    columns = _COLUMNS[lane]
    cursor = database.execute_sql(_sql(_READ_SQL[lane]), (first, last, limit))
    rows = [dict(zip(columns, r)) for r in cursor.fetchall()]
    if lane == TELEMETRY_LANE:
        for row in rows:
            raw = row["raw"]
            if isinstance(raw, memoryview):
                row["raw"] = raw.tobytes()
    elif lane == EVENTS_LANE:
        for row in rows:
            row["detail"] = _json(row["detail"])
    else:
        for row in rows:
            row["result"] = _json(row["result"])
    return rows


def received_at(rid: int) -> float | None:
    """When telemetry row `rid` (or the first one after it) was received:
    the age of the oldest row not yet sent."""
    row = (Telemetry.select(Telemetry.received_at).where(Telemetry.id >= rid).order_by(Telemetry.id).limit(1)
           .tuples().first())
    return None if row is None else row[0]


def load_cursor() -> dict[str, list[tuple[int, int]]]:
    out: dict[str, list[tuple[int, int]]] = {}
    for row in UplinkCursor.select():
        try:
            out[row.lane] = [(int(a), int(b)) for a, b in json.loads(row.acked)]
        except (ValueError, TypeError):
            raise RuntimeError(f"uplink_cursor row {row.lane!r} is not a list of [first, last] pairs: "
                               f"{row.acked!r}") from None
    return out


def save_cursor(cursor: dict[str, Iterable[tuple[int, int]]], now: float) -> None:
    """One short write transaction: every lane's acknowledged ranges."""
    rows = [{"lane": lane, "acked": json.dumps([list(p) for p in pairs]), "updated_at": now}
            for lane, pairs in cursor.items()]
    if not rows:
        return
    with write_transaction():
        for row in rows:
            (UplinkCursor.insert(**row)
             .on_conflict(conflict_target=[UplinkCursor.lane],
                          preserve=[UplinkCursor.acked, UplinkCursor.updated_at])
             .execute())


def insert_fleet_command(origin_id: str, device_uuid: str, command_type: str, parameters: Any, *, topic: str,
                         now: float, ttl_s: float, timeout: float | None, max_attempts: int) -> int | None:
    """A fleet command as a pending `commands` row, in its own transaction;
    None if a row with this origin id exists already (a redelivery)."""
    params = json.dumps(parameters, separators=(",", ":"), ensure_ascii=False) if parameters is not None else None
    sql = _sql("INSERT INTO commands (device_uuid, command_type, parameters, topic, status, created_at, expires_at, "
               "timeout, max_attempts, attempts, origin_id) VALUES (?, ?, ?, ?, 'pending', ?, ?, ?, ?, 0, ?) "
               "ON CONFLICT (origin_id) DO NOTHING RETURNING id")
    with write_transaction():
        row = database.execute_sql(sql, (device_uuid, command_type, params, topic, now, now + ttl_s, timeout,
                                         max_attempts, origin_id)).fetchone()
    return None if row is None else int(row[0])


def prunable_telemetry(acked: list[tuple[int, int]], limit: int) -> list[int]:
    """Up to `limit` telemetry ids the fleet has, oldest first: what
    retention deletes before anything not yet sent."""
    ids: list[int] = []
    for first, last in acked:
        if len(ids) >= limit:
            break
        q = (Telemetry.select(Telemetry.id).where((Telemetry.id >= first) & (Telemetry.id <= last))
             .order_by(Telemetry.id).limit(limit - len(ids)).tuples())
        ids += [i for (i,) in q]
    return ids
