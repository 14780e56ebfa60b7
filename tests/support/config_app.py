"""The AutoCore Config App's database, as that program makes and reads it.

Written from the facts in PROTOCOL.md ("The Config App's database"): the
DDL is what SQLAlchemy's `create_all` emits for its models on SQLite
(`CREATE TABLE` only when the name is free, `id INTEGER NOT NULL ...
PRIMARY KEY (id)`, its named indexes), and the queries are those of its
repositories, in SQL. `USER_CONFIGURATION` is an owner's configuration:
a registered relay board with its 16 channels, CAN signals, a screen.
Nothing here is the Config App's code; it is a client we do not control,
modelled from outside.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime

TABLES = {
    "users": """CREATE TABLE users (
    id INTEGER NOT NULL, username VARCHAR(50) NOT NULL, password_hash VARCHAR(255) NOT NULL,
    full_name VARCHAR(100), email VARCHAR(100), role VARCHAR(50) NOT NULL, pin_code VARCHAR(10),
    is_active BOOLEAN, last_login DATETIME, created_at DATETIME, updated_at DATETIME,
    PRIMARY KEY (id), UNIQUE (username), UNIQUE (email))""",
    "devices": """CREATE TABLE devices (
    id INTEGER NOT NULL, uuid VARCHAR(36) NOT NULL, name VARCHAR(100) NOT NULL, type VARCHAR(50) NOT NULL,
    mac_address VARCHAR(17), ip_address VARCHAR(15), firmware_version VARCHAR(20), hardware_version VARCHAR(20),
    status VARCHAR(20) NOT NULL, last_seen DATETIME, configuration_json TEXT, capabilities_json TEXT,
    is_active BOOLEAN, created_at DATETIME, updated_at DATETIME,
    PRIMARY KEY (id), UNIQUE (uuid), UNIQUE (mac_address))""",
    "relay_boards": """CREATE TABLE relay_boards (
    id INTEGER NOT NULL, device_id INTEGER NOT NULL, total_channels INTEGER NOT NULL, board_model VARCHAR(50),
    is_active BOOLEAN, created_at DATETIME,
    PRIMARY KEY (id), FOREIGN KEY(device_id) REFERENCES devices (id) ON DELETE CASCADE)""",
    "relay_channels": """CREATE TABLE relay_channels (
    id INTEGER NOT NULL, board_id INTEGER NOT NULL, channel_number INTEGER NOT NULL, name VARCHAR(100) NOT NULL,
    description TEXT, function_type VARCHAR(20), icon VARCHAR(50), color VARCHAR(7),
    protection_mode VARCHAR(20) NOT NULL, max_activation_time INTEGER, allow_in_macro BOOLEAN,
    is_active BOOLEAN, created_at DATETIME, updated_at DATETIME,
    PRIMARY KEY (id), FOREIGN KEY(board_id) REFERENCES relay_boards (id) ON DELETE CASCADE)""",
    "screens": """CREATE TABLE screens (
    id INTEGER NOT NULL, name VARCHAR(100) NOT NULL, title VARCHAR(100) NOT NULL, icon VARCHAR(50),
    screen_type VARCHAR(50), parent_id INTEGER, position INTEGER NOT NULL, is_visible BOOLEAN,
    created_at DATETIME, PRIMARY KEY (id), FOREIGN KEY(parent_id) REFERENCES screens (id))""",
    "telemetry_data": """CREATE TABLE telemetry_data (
    id INTEGER NOT NULL, timestamp DATETIME NOT NULL, device_id INTEGER NOT NULL, data_type VARCHAR(50) NOT NULL,
    data_key VARCHAR(100) NOT NULL, data_value TEXT NOT NULL, unit VARCHAR(20),
    PRIMARY KEY (id), FOREIGN KEY(device_id) REFERENCES devices (id) ON DELETE CASCADE)""",
    "event_logs": """CREATE TABLE event_logs (
    id INTEGER NOT NULL, timestamp DATETIME NOT NULL, event_type VARCHAR(50) NOT NULL, source VARCHAR(100) NOT NULL,
    target VARCHAR(100), action VARCHAR(100), payload TEXT, user_id INTEGER, ip_address VARCHAR(15),
    status VARCHAR(20), error_message TEXT,
    PRIMARY KEY (id), FOREIGN KEY(user_id) REFERENCES users (id))""",
    "can_signals": """CREATE TABLE can_signals (
    id INTEGER NOT NULL, signal_name VARCHAR(100) NOT NULL, can_id VARCHAR(20) NOT NULL, start_bit INTEGER NOT NULL,
    length_bits INTEGER NOT NULL, byte_order VARCHAR(20), data_type VARCHAR(20), scale_factor FLOAT,
    "offset" FLOAT, unit VARCHAR(20), min_value FLOAT, max_value FLOAT, description TEXT, category VARCHAR(50),
    is_active BOOLEAN, created_at DATETIME, PRIMARY KEY (id), UNIQUE (signal_name))""",
}

INDEXES = [
    "CREATE INDEX idx_devices_uuid ON devices (uuid)",
    "CREATE INDEX idx_devices_type ON devices (type)",
    "CREATE INDEX idx_devices_status ON devices (status)",
    "CREATE INDEX idx_relay_boards_device ON relay_boards (device_id)",
    "CREATE INDEX idx_relay_channels_board ON relay_channels (board_id)",
    "CREATE INDEX idx_telemetry_timestamp ON telemetry_data (timestamp, device_id)",
    "CREATE INDEX idx_telemetry_type ON telemetry_data (data_type)",
    "CREATE INDEX idx_telemetry_key ON telemetry_data (data_key)",
    "CREATE INDEX idx_events_timestamp ON event_logs (timestamp)",
    "CREATE INDEX idx_events_type ON event_logs (event_type)",
    "CREATE INDEX idx_events_source ON event_logs (source)",
    "CREATE INDEX idx_can_signals_name ON can_signals (signal_name)",
    "CREATE INDEX idx_can_signals_id ON can_signals (can_id)",
]

# The FuelTech ECU's signals as the Config App seeds them
# (`seed_default_can_signals`): no byte_order and no data_type (so least
# significant byte first, unsigned), scale 1 and offset 0 unless given.
# (name, can_id, start_bit, length_bits, unit, min, max, scale, offset)
FUELTECH_SIGNALS = (
    ("RPM", "0x100", 0, 16, "RPM", 0, 8000, 1.0, 0.0),
    ("TPS", "0x100", 16, 8, "%", 0, 100, 0.392, 0.0),
    ("MAP", "0x200", 0, 16, "kPa", 0, 250, 1.0, 0.0),
    ("IAT", "0x200", 16, 8, "°C", -40, 120, 1.0, -40.0),
    ("ECT", "0x300", 0, 8, "°C", -40, 120, 1.0, -40.0),
    ("FuelPressure", "0x400", 0, 16, "kPa", 0, 600, 1.0, 0.0),
    ("Ethanol", "0x400", 16, 8, "%", 0, 100, 0.392, 0.0),
    ("FuelLevel", "0x400", 24, 8, "%", 0, 100, 0.392, 0.0),
    ("Battery", "0x500", 0, 8, "V", 10, 16, 0.1, 0.0),
    ("Lambda", "0x300", 8, 16, "λ", 0.7, 1.3, 0.001, 0.0),
    ("OilPressure", "0x500", 8, 8, "bar", 0, 10, 0.039, 0.0),
    ("BoostPressure", "0x500", 16, 16, "bar", -1, 3, 0.001, -1.0),
    ("Speed", "0x600", 0, 16, "km/h", 0, 300, 1.0, 0.0),
    ("Gear", "0x600", 16, 8, "", 0, 6, 1.0, 0.0),
)


def fueltech_rows(byte_order: str | None = None) -> list[dict]:
    """The seed as `can_signals` rows (dicts of its columns)."""
    return [{"id": i, "signal_name": name, "can_id": can_id, "start_bit": start, "length_bits": length,
             "byte_order": byte_order, "data_type": None, "scale_factor": scale, "offset": offset, "unit": unit,
             "min_value": lo, "max_value": hi, "is_active": 1}
            for i, (name, can_id, start, length, unit, lo, hi, scale, offset) in enumerate(FUELTECH_SIGNALS, 1)]


def seed_can_signals(conn: sqlite3.Connection, byte_order: str | None = None) -> int:
    """seed_default_can_signals: the FuelTech set, inserted by the ORM
    (scale_factor, offset and is_active get its Python defaults)."""
    stamp = now_text()
    for row in fueltech_rows(byte_order):
        conn.execute(
            "INSERT INTO can_signals (signal_name, can_id, start_bit, length_bits, byte_order, data_type,"
            " scale_factor, \"offset\", unit, min_value, max_value, description, category, is_active, created_at)"
            " VALUES (?, ?, ?, ?, ?, NULL, ?, ?, ?, ?, ?, '', 'motor', 1, ?)",
            (row["signal_name"], row["can_id"], row["start_bit"], row["length_bits"], byte_order,
             row["scale_factor"], row["offset"], row["unit"], row["min_value"], row["max_value"], stamp))
    conn.commit()
    return len(FUELTECH_SIGNALS)

CONFIGURATION_TABLES = ("devices", "relay_boards", "relay_channels", "screens", "can_signals", "users")


def now_text() -> str:
    """What SQLAlchemy writes into a DATETIME for `datetime.now()`."""
    return datetime.now().isoformat(sep=" ", timespec="microseconds")


def connect(path: str) -> sqlite3.Connection:
    """A connection as the Config App's driver opens one: waits 5 s for a
    lock, no transaction until the first write (pysqlite's default)."""
    return sqlite3.connect(path, timeout=5.0)


def create_all(path: str) -> list[str]:
    """SQLAlchemy's create_all: every table whose name is free (a table of
    that name is skipped whatever its shape), then its indexes. Returns
    the tables it created."""
    conn = connect(path)
    try:
        have = {n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        made = [name for name in TABLES if name not in have]
        for name in made:
            conn.execute(TABLES[name])
        for index in INDEXES:
            table = index.split(" ON ")[1].split(" ")[0]
            if table in made:
                conn.execute(index)
        conn.commit()
        return made
    finally:
        conn.close()


def register_device(conn: sqlite3.Connection, uuid: str, name: str, type_: str, *, mac: str | None = None,
                    ip: str | None = None, firmware: str | None = None, hardware: str | None = None) -> int:
    """POST /api/devices (the firmware's HTTP registration): one row, status
    offline, is_active set by the ORM's Python default. Returns its id."""
    stamp = now_text()
    cur = conn.execute(
        "INSERT INTO devices (uuid, name, type, mac_address, ip_address, firmware_version, hardware_version, status,"
        " configuration_json, capabilities_json, is_active, created_at, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, 'offline', '{}', '{}', 1, ?, ?)",
        (uuid, name, type_.lower(), mac, ip, firmware, hardware, stamp, stamp))
    device_id = cur.lastrowid
    conn.execute("INSERT INTO event_logs (timestamp, event_type, source, target, action, payload, status)"
                 " VALUES (?, 'device', 'config-app', ?, 'create', ?, 'success')",
                 (stamp, f"device_{device_id}", f'{{"device_uuid": "{uuid}"}}'))
    conn.commit()
    return device_id


def user_configuration(conn: sqlite3.Connection, relay_uuid: str = "esp32-relay-cfg") -> int:
    """An owner's configuration: a registered relay board with its relay
    board row and 16 channels, two CAN signals, a screen, a user. Returns
    the relay board's device id."""
    device_id = register_device(conn, relay_uuid, "Relays front", "esp32_relay", mac="AA:BB:CC:00:00:01",
                                ip="192.168.4.20", firmware="2.0.0", hardware="v1")
    stamp = "2025-08-01 10:00:00.000000"
    board = conn.execute("INSERT INTO relay_boards (device_id, total_channels, board_model, is_active, created_at)"
                         " VALUES (?, 16, 'ESP32_16CH', 1, ?)", (device_id, stamp)).lastrowid
    for n in range(1, 17):
        conn.execute(
            "INSERT INTO relay_channels (board_id, channel_number, name, description, function_type, icon, color,"
            " protection_mode, max_activation_time, allow_in_macro, is_active, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, 'lightbulb', '#FFAA00', 'none', ?, 1, 1, ?, ?)",
            (board, n, f"Channel {n}", f"relay {n}", "momentary" if n == 16 else "toggle",
             5 if n == 16 else None, stamp, stamp))
    conn.execute("INSERT INTO can_signals (signal_name, can_id, start_bit, length_bits, byte_order, data_type,"
                 " scale_factor, \"offset\", unit, min_value, max_value, description, category, is_active, created_at)"
                 " VALUES ('RPM', '0x100', 0, 16, 'big_endian', 'unsigned', 1, 0, 'rpm', 0, 10000, 'engine', 'motor', 1, ?),"
                 " ('TPS', '0x100', 16, 16, 'big_endian', 'unsigned', 0.1, 0, '%', 0, 100, 'throttle', 'motor', 1, ?)",
                 (stamp, stamp))
    conn.execute("INSERT INTO screens (name, title, icon, screen_type, position, is_visible, created_at)"
                 " VALUES ('home', 'Home', 'house', 'dashboard', 0, 1, ?)", (stamp,))
    conn.execute("INSERT INTO users (username, password_hash, role, is_active, created_at, updated_at)"
                 " VALUES ('owner', 'x', 'admin', 1, ?, ?)", (stamp, stamp))
    conn.commit()
    return device_id


def dump(conn: sqlite3.Connection, tables=CONFIGURATION_TABLES, *, skip_device_liveness: bool = True) -> dict:
    """Every row of the configuration tables, for a byte-for-byte
    comparison. The device row's liveness columns (status, last_seen,
    updated_at, ip and versions) are the gateway's to keep current, so
    they are left out unless `skip_device_liveness` is False."""
    out = {}
    for table in tables:
        cols = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
        if table == "devices" and skip_device_liveness:
            cols = [c for c in cols if c not in ("status", "last_seen", "updated_at", "ip_address",
                                                 "firmware_version", "hardware_version")]
        out[table] = conn.execute(f"SELECT {', '.join(cols)} FROM {table} ORDER BY id").fetchall()
    out["schema"] = conn.execute(
        "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE tbl_name IN (%s) ORDER BY name"
        % ", ".join("?" * len(TABLES)), tuple(TABLES)).fetchall()
    return out


# -- the Config App's repository queries, in SQL ---------------------------------


def devices_get_all(conn: sqlite3.Connection) -> list[sqlite3.Row]:
    """DeviceRepository.get_all: active rows by name."""
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute("SELECT * FROM devices WHERE is_active = 1 ORDER BY name").fetchall()
    finally:
        conn.row_factory = None


def device_by_uuid(conn: sqlite3.Connection, uuid: str):
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute("SELECT * FROM devices WHERE uuid = ? AND is_active = 1", (uuid,)).fetchone()
    finally:
        conn.row_factory = None


def online_devices(conn: sqlite3.Connection) -> list[str]:
    """DeviceRepository.get_online_devices."""
    return [u for (u,) in conn.execute("SELECT uuid FROM devices WHERE status = 'online' AND is_active = 1"
                                       " ORDER BY last_seen DESC")]


def telemetry_latest(conn: sqlite3.Connection, device_id: int, limit: int = 100) -> list[tuple]:
    """TelemetryRepository.get_latest (GET /api/telemetry/{id})."""
    return conn.execute("SELECT id, timestamp, data_type, data_key, data_value, unit FROM telemetry_data"
                        " WHERE device_id = ? ORDER BY timestamp DESC LIMIT ?", (device_id, limit)).fetchall()


def telemetry_latest_by_key(conn: sqlite3.Connection, device_id: int, limit: int = 50) -> dict[str, str]:
    """TelemetryRepository.get_latest_by_device (the `telemetry` of
    /api/config/full/{uuid}): the newest value per data_key."""
    rows = conn.execute(
        "SELECT t.data_key, t.data_value FROM telemetry_data t JOIN ("
        " SELECT data_key, max(timestamp) AS max_timestamp FROM telemetry_data WHERE device_id = ? GROUP BY data_key"
        ") s ON t.data_key = s.data_key AND t.timestamp = s.max_timestamp AND t.device_id = ?"
        " ORDER BY t.data_key LIMIT ?", (device_id, device_id, limit)).fetchall()
    return dict(rows)


def events_by_device(conn: sqlite3.Connection, device_id: int, limit: int = 50) -> list[tuple]:
    """EventRepository.get_by_device."""
    target = f"device_{device_id}"
    return conn.execute("SELECT timestamp, event_type, source, target, action, payload, status, error_message"
                        " FROM event_logs WHERE source = ? OR target = ? ORDER BY timestamp DESC LIMIT ?",
                        (target, target, limit)).fetchall()
