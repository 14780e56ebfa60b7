"""What the Config App's telemetry reads cost on a large `telemetry_data`.

Builds the Config App's schema (tests/support/config_app.py: its tables and
exactly its indexes) in a temporary SQLite file, fills `telemetry_data` with
`--rows` readings as the gateway copies them (time-ordered text
timestamps, a dozen keys per device), then times the two queries the Config
App runs per device:

* `GET /api/telemetry/{id}`: `WHERE device_id = ? ORDER BY timestamp DESC
  LIMIT 100` (TelemetryRepository.get_latest);
* the `telemetry` of `/api/config/full/{uuid}`: the newest value per
  `data_key` (TelemetryRepository.get_latest_by_device),

for a busy device (most rows, reading now), a quiet one (a few rows, long
ago) and a device with no rows, and prints each query's plan and its median
time over `--repeat` runs. Usage: `python -m bench.config_app_queries
[--rows 10000000]` (`make bench-config-app`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sqlite3
import tempfile
import time

from storage.config_app import local_datetime
from tests.support import config_app as app

KEYS = ("fuel_level", "oil_pressure", "coolant_temp", "rpm", "speed", "battery_voltage", "relay.1.state",
        "relay.2.state", "wifi_signal", "free_memory", "uptime", "cpu_temperature")


def fill(path: str, rows: int, devices: int, chunk: int = 200_000) -> dict[str, int]:
    """`rows` readings: device 1 (busy) gets half, the others share the
    rest, except the last two: one quiet (12 rows, at the very start) and
    one silent (no rows). One reading per 10 ms of device time."""
    app.create_all(path)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    stamp = app.now_text()
    for n in range(1, devices + 1):
        conn.execute("INSERT INTO devices (uuid, name, type, status, is_active, created_at, updated_at)"
                     " VALUES (?, ?, 'esp32_relay', 'online', 1, ?, ?)", (f"dev-{n}", f"Device {n}", stamp, stamp))
    busy, quiet, silent = 1, devices - 1, devices
    start = time.time() - rows * 0.01
    quiet_rows = [(local_datetime(start + i), quiet, "analog", KEYS[i % len(KEYS)], str(i), None) for i in range(12)]
    conn.executemany("INSERT INTO telemetry_data (timestamp, device_id, data_type, data_key, data_value, unit)"
                     " VALUES (?, ?, ?, ?, ?, ?)", quiet_rows)
    others = list(range(2, quiet))
    written = 0
    while written < rows - 12:
        n = min(chunk, rows - 12 - written)
        batch = []
        for i in range(written, written + n):
            device = busy if i % 2 == 0 else others[(i // 2) % len(others)]
            batch.append((local_datetime(start + i * 0.01), device, "analog", KEYS[i % len(KEYS)], f"{i % 1000}.5", None))
        conn.executemany("INSERT INTO telemetry_data (timestamp, device_id, data_type, data_key, data_value, unit)"
                         " VALUES (?, ?, ?, ?, ?, ?)", batch)
        conn.commit()
        written += n
    conn.commit()
    conn.close()
    return {"busy": busy, "quiet": quiet, "silent": silent}


def timed(conn: sqlite3.Connection, sql: str, args: tuple, repeat: int) -> dict:
    plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, args)]
    times = []
    result = []
    for _ in range(repeat):
        started = time.perf_counter()
        result = conn.execute(sql, args).fetchall()
        times.append((time.perf_counter() - started) * 1000.0)
    return {"median_ms": round(statistics.median(times), 2), "max_ms": round(max(times), 2), "rows": len(result),
            "plan": plan}


LATEST = ("SELECT id, timestamp, data_type, data_key, data_value, unit FROM telemetry_data"
          " WHERE device_id = ? ORDER BY timestamp DESC LIMIT 100")
BY_KEY = ("SELECT t.* FROM telemetry_data t JOIN (SELECT data_key, max(timestamp) AS max_timestamp"
          " FROM telemetry_data WHERE device_id = ? GROUP BY data_key) s"
          " ON t.data_key = s.data_key AND t.timestamp = s.max_timestamp AND t.device_id = ?"
          " ORDER BY t.data_key LIMIT 50")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000, help="readings in telemetry_data")
    parser.add_argument("--devices", type=int, default=20, help="devices the readings belong to (at least 4)")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each query (median reported)")
    parser.add_argument("--json", action="store_true", help="one JSON document instead of the table")
    parser.add_argument("--extra-index", action="append", default=[], metavar="COLUMNS",
                        help="also index telemetry_data on these columns (e.g. device_id,timestamp): what an index "
                             "the Config App lacks would change; repeatable")
    args = parser.parse_args(argv)
    if args.devices < 4:
        parser.error("--devices must be at least 4")
    with tempfile.TemporaryDirectory(prefix="autocore-config-app-") as tmp:
        path = os.path.join(tmp, "autocore.db")
        started = time.time()
        ids = fill(path, args.rows, args.devices)
        fill_s = time.time() - started
        conn = sqlite3.connect(path)
        for n, columns in enumerate(args.extra_index):
            conn.execute(f"CREATE INDEX extra_{n} ON telemetry_data ({columns})")
        results = {}
        for who, device_id in ids.items():
            results[f"GET /api/telemetry/{{id}} ({who})"] = timed(conn, LATEST, (device_id,), args.repeat)
            results[f"newest per data_key ({who})"] = timed(conn, BY_KEY, (device_id, device_id), args.repeat)
        size_mb = os.path.getsize(path) / 1e6
        conn.close()
    doc = {"rows": args.rows, "devices": args.devices, "fill_seconds": round(fill_s, 1),
           "file_mb": round(size_mb, 1), "queries": results}
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print(f"telemetry_data: {args.rows} rows, {args.devices} devices, {size_mb:.0f} MB (filled in {fill_s:.0f} s)")
    width = max(len(k) for k in results)
    print(f"{'query':<{width}}  {'median ms':>10}  {'max ms':>8}  {'rows':>5}  plan")
    for name, r in results.items():
        print(f"{name:<{width}}  {r['median_ms']:>10.2f}  {r['max_ms']:>8.2f}  {r['rows']:>5}  {' | '.join(r['plan'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
