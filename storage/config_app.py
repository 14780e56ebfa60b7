"""What the gateway keeps current in the Config App's own tables.

The AutoCore Config App (PROTOCOL.md, "The Config App's database") shares
the database file. Where its tables exist, the gateway shows it what it
knows, in the same transactions as its own rows and in the formats that
program reads back:

* `devices`: each device's row is a projection of its `gateway_devices`
  row (status, last_seen, updated_at, ip, firmware and hardware version);
  a device the Config App has no row for gets one (`register`), which is
  never re-inserted or replaced afterwards: its `id` is what the Config
  App's other tables point at.
* `telemetry_data`: every reading inserted into `telemetry`, copied by one
  INSERT ... SELECT per batch over the ids the batch inserted, so only rows
  really inserted are copied (a redelivered message adds nothing) and no
  Python runs per row.
* `event_logs`: every device event, attributed `device_{devices.id}`.

The gateway never creates, alters or drops these tables. Whether they
exist is looked up again whenever `PRAGMA schema_version` changes (one
cheap read per transaction), so tables the Config App creates while the
gateway runs are noticed at the next batch. Nothing above storage/ knows
any of this exists. The Config App only ever uses SQLite: on PostgreSQL
these functions find no tables and do nothing.

DATETIME columns hold naive local time as text, `YYYY-MM-DD
HH:MM:SS.ffffff` (what SQLAlchemy writes for `datetime.now()`): the
Config App parses them with `datetime.fromisoformat` and compares them as
text. `local_datetime` (Python) and `_local_datetime_sql` (SQL) compute
the same text from epoch seconds.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from peewee import chunked

from storage.errors import sqlite_errors

log = logging.getLogger("autocore.config_app")

DEVICES = "devices"
TELEMETRY_DATA = "telemetry_data"
EVENT_LOGS = "event_logs"

# Columns each table must have for the gateway to write into it; a table of
# that name without them is someone else's and is left alone.
_REQUIRED = {
    DEVICES: {"id", "uuid", "name", "type", "status"},
    TELEMETRY_DATA: {"timestamp", "device_id", "data_type", "data_key", "data_value", "unit"},
    EVENT_LOGS: {"timestamp", "event_type", "source", "target", "action", "payload", "status", "error_message"},
}
# Columns of `devices` written when present (older Config App schemas lack some).
_DEVICE_OPTIONAL = ("mac_address", "ip_address", "firmware_version", "hardware_version", "last_seen",
                    "configuration_json", "capabilities_json", "is_active", "created_at", "updated_at")

REGISTRY = "gateway_devices"  # storage.models.Device's table; no import, to keep this module standalone
TELEMETRY = "telemetry"

# The relay firmware reports this before it has an address: never worth
# overwriting what the board registered over HTTP.
_NO_ADDRESS = "0.0.0.0"

# v1 device types under the names the Config App gives the same boards.
_TYPE_NAMES = {"relay_board": "esp32_relay", "display_small": "esp32_display"}


def local_datetime(ts: float) -> str:
    """Epoch seconds as the Config App's DATETIME text (naive local time,
    always six digits of microseconds, so text order is time order)."""
    whole = int(ts)
    micro = int((ts - whole) * 1_000_000)
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(whole)) + f".{micro:06d}"


def _local_datetime_sql(expr: str) -> str:
    """`local_datetime` in SQL, for the copies and the projections.
    strftime gets whole seconds: given a fraction it rounds to the
    millisecond, which could carry into the next second."""
    whole = f"CAST({expr} AS INTEGER)"
    return (f"(strftime('%Y-%m-%d %H:%M:%S', {whole}, 'unixepoch', 'localtime')"
            f" || printf('.%06d', CAST((({expr}) - {whole}) * 1000000 AS INTEGER)))")


# -- which tables exist --------------------------------------------------------


@dataclass(frozen=True)
class Tables:
    devices: bool = False
    telemetry_data: bool = False
    event_logs: bool = False
    device_columns: frozenset[str] = frozenset()

    @property
    def any(self) -> bool:
        return self.devices or self.telemetry_data or self.event_logs


NONE = Tables()


class _Settings:
    register = True  # AUTOCORE_CONFIG_APP_REGISTER


def configure(*, register: bool) -> None:
    """Whether a device the Config App has no row for gets one."""
    _Settings.register = bool(register)


class _ConnectionState(threading.local):
    conn: sqlite3.Connection | None = None
    schema_version: int | None = None
    tables: Tables = NONE
    mac_clashes_logged: set
    present: set  # uuids known to have a row in `devices`


_state = _ConnectionState()


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f'PRAGMA table_info("{table}")')}


def _detect(conn: sqlite3.Connection) -> Tables:
    found = {}
    columns: dict[str, set[str]] = {}
    for table, required in _REQUIRED.items():
        columns[table] = _columns(conn, table)
        found[table] = required <= columns[table]
    return Tables(
        devices=found[DEVICES],
        telemetry_data=found[DEVICES] and found[TELEMETRY_DATA],  # its rows point at devices.id
        event_logs=found[EVENT_LOGS],
        device_columns=frozenset(columns[DEVICES]),
    )


def tables(conn: sqlite3.Connection) -> Tables:
    """The Config App's tables on this connection, looked up again when
    the schema changed.
    When `devices` is new to this connection (found at start, or just
    created by the Config App), every device of the registry is projected
    there at once, so none waits for its next message to appear.
    Call it inside the write transaction, where the schema cannot change.
    The Config App is a SQLite program: on PostgreSQL there is none.
    """
    if not isinstance(conn, sqlite3.Connection):
        return NONE
    with sqlite_errors():
        version = conn.execute("PRAGMA schema_version").fetchone()[0]
    if _state.conn is conn and _state.schema_version == version:
        return _state.tables
    before = _state.tables if _state.conn is conn else NONE
    with sqlite_errors():
        found = _detect(conn)
    if _state.conn is not conn:
        _state.mac_clashes_logged = set()
    _state.present = set()  # the Config App may have dropped and remade its table
    if found != before and found.any:
        log.info("the Config App's tables are here (%s): the gateway keeps them current",
                 ", ".join(t for t in (DEVICES, TELEMETRY_DATA, EVENT_LOGS) if getattr(found, t)))
    _state.conn, _state.schema_version, _state.tables = conn, version, found
    if found.devices and not before.devices:
        with sqlite_errors():
            everyone = [u for (u,) in conn.execute(f"SELECT uuid FROM {REGISTRY}")]
        _project(conn, found, everyone, time.time())
    return found


_VALUE_TEXT = ("CASE WHEN t.value IS NULL THEN NULL"
               " WHEN t.value = CAST(t.value AS INTEGER) THEN CAST(CAST(t.value AS INTEGER) AS TEXT)"
               " ELSE CAST(t.value AS TEXT) END")
_RAW_TEXT = "CASE typeof(t.raw) WHEN 'blob' THEN lower(hex(t.raw)) ELSE t.raw END"

# Rows with an id past the one given: those the batch really inserted (an
# ignored repeat gets no id), copied in one statement. A per-row trigger
# did the same at half the speed.
_COPY_SQL = f"""
INSERT INTO {TELEMETRY_DATA} (timestamp, device_id, data_type, data_key, data_value, unit)
SELECT {_local_datetime_sql('t.ts')}, d.id, t.source, t.metric, COALESCE({_VALUE_TEXT}, t.tag, {_RAW_TEXT}, ''), t.unit
FROM {TELEMETRY} t JOIN {DEVICES} d ON d.uuid = t.device_uuid
WHERE t.id > ?
"""


def copy_telemetry(conn: sqlite3.Connection, after_id: int) -> int:
    """Copy into `telemetry_data` every telemetry row with an id past
    `after_id` whose device has a row in `devices`. Call it in the
    transaction that inserted them, with the highest id from before."""
    if not tables(conn).telemetry_data:
        return 0
    with sqlite_errors():
        return max(conn.execute(_COPY_SQL, (after_id,)).rowcount, 0)


# -- devices -------------------------------------------------------------------

_STATUS_SQL = "CASE g.status WHEN 'online' THEN 'online' WHEN 'offline' THEN 'offline' ELSE {keep} END"


def _type_sql() -> str:
    cases = " ".join(f"WHEN '{ours}' THEN '{theirs}'" for ours, theirs in _TYPE_NAMES.items())
    return f"CASE lower(g.device_type) {cases} ELSE lower(COALESCE(g.device_type, 'unknown')) END"


_NAME_SQL = "COALESCE(NULLIF(g.name, ''), {uuid})"


def _update_sql(columns: frozenset[str]) -> str:
    """Liveness and what the device told us; and, where the row still holds
    the placeholders of a registration made before the device announced
    (name = uuid, type unknown, no MAC), what it said since."""
    sets = [f"status = {_STATUS_SQL.format(keep='devices.status')}",
            f"name = CASE WHEN devices.name = devices.uuid THEN {_NAME_SQL.format(uuid='g.uuid')} ELSE devices.name END",
            f"type = CASE WHEN devices.type = 'unknown' THEN {_type_sql()} ELSE devices.type END"]
    if "mac_address" in columns:
        sets.append("mac_address = CASE WHEN devices.mac_address IS NULL AND g.mac_address IS NOT NULL"
                    f" AND NOT EXISTS (SELECT 1 FROM {DEVICES} o WHERE o.mac_address = g.mac_address)"
                    " THEN g.mac_address ELSE devices.mac_address END")
    if "capabilities_json" in columns:
        sets.append("capabilities_json = COALESCE(devices.capabilities_json, g.capabilities)")
    if "last_seen" in columns:
        seen = _local_datetime_sql("g.last_seen")
        sets.append(f"last_seen = CASE WHEN g.last_seen IS NULL THEN devices.last_seen"
                    f" ELSE MAX(IFNULL(devices.last_seen, ''), {seen}) END")
    if "updated_at" in columns:
        sets.append("updated_at = ?2")
    if "ip_address" in columns:
        sets.append(f"ip_address = COALESCE(NULLIF(g.ip_address, '{_NO_ADDRESS}'), devices.ip_address)")
    if "firmware_version" in columns:
        sets.append("firmware_version = COALESCE(g.firmware_version, devices.firmware_version)")
    if "hardware_version" in columns:
        sets.append("hardware_version = COALESCE(g.hardware_revision, devices.hardware_version)")
    return (f"UPDATE {DEVICES} SET {', '.join(sets)} FROM {REGISTRY} g"
            f" WHERE g.uuid = ?1 AND {DEVICES}.uuid = ?1")


def _insert_sql(columns: frozenset[str]) -> str:
    """A new row from the registry's; for a device whose readings reach the
    store before its registry row (they travel separately), placeholders
    (name = uuid, type unknown, online) that projections fill in later."""
    values = {
        "uuid": "k.uuid",
        "name": _NAME_SQL.format(uuid="k.uuid"),
        "type": _type_sql(),
        "status": _STATUS_SQL.format(keep="CASE WHEN g.uuid IS NULL THEN 'online' ELSE 'offline' END"),
        "mac_address": "?3",
        "ip_address": f"NULLIF(g.ip_address, '{_NO_ADDRESS}')",
        "firmware_version": "g.firmware_version",
        "hardware_version": "g.hardware_revision",
        "last_seen": f"CASE WHEN g.last_seen IS NULL THEN NULL ELSE {_local_datetime_sql('g.last_seen')} END",
        "configuration_json": "'{}'",
        "capabilities_json": "g.capabilities",
        "is_active": "1",
        "created_at": "?2",
        "updated_at": "?2",
    }
    names = [c for c in ("uuid", "name", "type", "status", *_DEVICE_OPTIONAL) if c in columns]
    return (f"INSERT INTO {DEVICES} ({', '.join(names)}) SELECT {', '.join(values[c] for c in names)}"
            f" FROM (SELECT ?1 AS uuid) k LEFT JOIN {REGISTRY} g ON g.uuid = k.uuid")


def project_devices(conn: sqlite3.Connection, uuids: Iterable[str], now: float) -> int:
    """Bring the Config App's row of each device up to date with its
    `gateway_devices` row (call after writing that row, in the same
    transaction); register the ones it has no row for. Returns how many
    rows were registered."""
    found = tables(conn)
    return _project(conn, found, uuids, now) if found.devices else 0


def _project(conn: sqlite3.Connection, found: Tables, uuids: Iterable[str], now: float) -> int:
    uuids = list(dict.fromkeys(uuids))
    if not uuids:
        return 0
    stamp = local_datetime(now)
    with sqlite_errors():
        conn.executemany(_update_sql(found.device_columns), [(u, stamp) for u in uuids])
    return _ensure_rows(conn, found, uuids, stamp)


def _ensure_rows(conn: sqlite3.Connection, found: Tables, uuids: list[str], stamp: str) -> int:
    """Register the devices among `uuids` the Config App has no row for
    (unless registration is off); returns how many. Rows known to exist on
    this connection are not looked up again."""
    if not _Settings.register:
        return 0
    present = _state.present
    unknown = [u for u in uuids if u not in present]
    registered = 0
    for chunk in chunked(unknown, 500):
        marks = ", ".join("?" * len(chunk))
        with sqlite_errors():
            present.update(u for (u,) in conn.execute(f"SELECT uuid FROM {DEVICES} WHERE uuid IN ({marks})", chunk))
        for uuid in chunk:
            if uuid not in present and _register(conn, found.device_columns, uuid, stamp):
                present.add(uuid)
                registered += 1
    return registered


def before_telemetry(conn: sqlite3.Connection, uuids: Iterable[str], now: float) -> bool:
    """Call before inserting telemetry rows of `uuids`: gives each device a
    row in `devices` (a reading may be stored before its device's registry
    row: they travel apart), so that no reading misses its copy. True if
    the rows are to be copied (`copy_telemetry`) after the insert."""
    found = tables(conn)
    if found.telemetry_data:
        _ensure_rows(conn, found, list(dict.fromkeys(uuids)), local_datetime(now))
    return found.telemetry_data


def _register(conn: sqlite3.Connection, columns: frozenset[str], uuid: str, stamp: str) -> int:
    mac = _free_mac(conn, columns, uuid)
    try:
        with sqlite_errors():
            cursor = conn.execute(_insert_sql(columns), (uuid, stamp, mac))
    except sqlite3.IntegrityError as exc:
        # A failed statement undoes only itself: the batch goes on.
        log.warning("could not add device %s to the Config App's devices (%s); left out", uuid, exc)
        return 0
    if cursor.rowcount == 1:
        log.info("device %s added to the Config App's devices", uuid)
    return max(cursor.rowcount, 0)


def _free_mac(conn: sqlite3.Connection, columns: frozenset[str], uuid: str) -> str | None:
    """The device's MAC address, or None when another row has it already
    (`mac_address` is unique there): logged once per device."""
    if "mac_address" not in columns:
        return None
    row = conn.execute(f"SELECT mac_address FROM {REGISTRY} WHERE uuid = ?", (uuid,)).fetchone()
    mac = row[0] if row else None
    if not mac:
        return None
    owner = conn.execute(f"SELECT uuid FROM {DEVICES} WHERE mac_address = ?", (mac,)).fetchone()
    if owner is None:
        return mac
    if uuid not in _state.mac_clashes_logged:
        _state.mac_clashes_logged.add(uuid)
        log.warning("device %s reports MAC %s, which the Config App's device %s has: registered without it",
                    uuid, mac, owner[0])
    return None


# -- events --------------------------------------------------------------------

def _event_sql(attributed: bool) -> str:
    target = f"(SELECT 'device_' || id FROM {DEVICES} WHERE uuid = ?2)" if attributed else "NULL"
    return (f"INSERT INTO {EVENT_LOGS} (timestamp, event_type, source, target, action, payload, status,"
            f" error_message) VALUES (?1, 'device', 'gateway', {target}, ?3, ?4, ?5, ?6)")


def _error_message(detail: Any) -> str:
    if isinstance(detail, dict):
        for key in ("error_message", "message", "error", "error_code", "code", "reason"):
            if detail.get(key):
                return str(detail[key])
    return json.dumps(detail, separators=(",", ":"), ensure_ascii=False, default=str)[:500]


def log_events(conn: sqlite3.Connection, rows: Sequence[tuple[str, float, str, Any]]) -> None:
    """Copy device events (uuid, ts, event, detail) into `event_logs`."""
    found = tables(conn)
    if not found.event_logs or not rows:
        return
    params = []
    for uuid, ts, event, detail in rows:
        payload = dict(detail) if isinstance(detail, dict) else ({} if detail is None else {"detail": detail})
        payload.setdefault("uuid", uuid)
        # An error event, or the error a relay answered a command with.
        error = event == "error" or (isinstance(detail, dict) and detail.get("outcome") == "error")
        params.append((local_datetime(ts), uuid, event,
                       json.dumps(payload, separators=(",", ":"), ensure_ascii=False, default=str),
                       "error" if error else "success", _error_message(detail) if error else None))
    with sqlite_errors():
        conn.executemany(_event_sql(found.devices), params)


# -- retention -----------------------------------------------------------------


def prune_older_than(conn: sqlite3.Connection, cutoff_ts: float, limit: int) -> int:
    """Delete up to `limit` `telemetry_data` rows older than `cutoff_ts`
    (the same age limit as `telemetry`; its (timestamp, device_id) index
    finds them)."""
    if not tables(conn).telemetry_data:
        return 0
    with sqlite_errors():
        cursor = conn.execute(
            f"DELETE FROM {TELEMETRY_DATA} WHERE id IN (SELECT id FROM {TELEMETRY_DATA}"
            f" WHERE timestamp < ? ORDER BY timestamp LIMIT ?)", (local_datetime(cutoff_ts), int(limit)))
    return max(cursor.rowcount, 0)


def prune_oldest(conn: sqlite3.Connection, count: int) -> int:
    """Delete the `count` oldest `telemetry_data` rows (as many as the
    size limit took from `telemetry`)."""
    if count <= 0 or not tables(conn).telemetry_data:
        return 0
    with sqlite_errors():
        cursor = conn.execute(
            f"DELETE FROM {TELEMETRY_DATA} WHERE id IN (SELECT id FROM {TELEMETRY_DATA}"
            f" ORDER BY timestamp LIMIT ?)", (int(count),))
    return max(cursor.rowcount, 0)


# -- reading -------------------------------------------------------------------


def device_names(conn: sqlite3.Connection, uuids: Iterable[str] | None = None) -> dict[str, str]:
    """The name the owner gave each device in the Config App (active rows
    only, as the Config App shows them); {} without its table (always
    on PostgreSQL: the Config App is a SQLite program)."""
    if not isinstance(conn, sqlite3.Connection):
        return {}
    columns = _columns(conn, DEVICES)
    if not {"id", "uuid", "name"} <= columns:
        return {}
    active = " AND is_active = 1" if "is_active" in columns else ""
    if uuids is None:
        rows = conn.execute(f"SELECT uuid, name FROM {DEVICES} WHERE name IS NOT NULL{active}").fetchall()
    else:
        rows = []
        for chunk in chunked(list(uuids), 500):
            marks = ", ".join("?" * len(chunk))
            rows += conn.execute(f"SELECT uuid, name FROM {DEVICES} WHERE uuid IN ({marks}) AND name IS NOT NULL"
                                 f"{active}", chunk).fetchall()
    return {uuid: name for uuid, name in rows}
