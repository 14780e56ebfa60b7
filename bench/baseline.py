"""The bare baseline: one hand-written paho -> json -> sqlite3 loop.

What the gateway's backlog drain is compared with, in the same run, on the
same broker queue: one process, an MQTT v5 persistent session (clean start
off, session expiry set, Receive Maximum 65535 so the broker keeps many
messages in flight: FIELD-NOTES), paho's manual acknowledgement, and a main
loop that takes whatever has arrived (up to BATCH_MESSAGES), decodes it with
the standard `json` module, writes the rows with one `executemany` into a
telemetry table with the gateway's schema and indexes (WAL, synchronous
NORMAL), commits, and only then acknowledges those messages. It stores
only the sections the benchmark's messages carry (`analog_sensors`,
`readings`) and validates nothing else: the cheapest loop that keeps the
gateway's storage promise, which is what "bare" means.

    python -m bench.baseline --port P --db FILE --setup      # create the session, then leave
    python -m bench.baseline --port P --db FILE --expect N   # drain N messages, print JSON
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import threading
import time
from collections import deque
from datetime import datetime

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

TOPIC = "autocore/devices/+/telemetry"
CLIENT_ID = "bench-baseline"
BATCH_MESSAGES = 1000  # about 3000 rows a transaction with 3 readings a message

# The gateway's telemetry table and indexes (storage/models.py), as SQL.
SCHEMA = (
    'CREATE TABLE IF NOT EXISTS "telemetry" ("id" INTEGER NOT NULL PRIMARY KEY, "device_uuid" TEXT NOT NULL, '
    '"boot_id" INTEGER, "seq" INTEGER, "idx" INTEGER, "ts" REAL NOT NULL, "received_at" REAL NOT NULL, '
    '"source" TEXT NOT NULL, "metric" TEXT NOT NULL, "value" REAL, "unit" TEXT, "tag" TEXT, "raw" BLOB)',
    'CREATE UNIQUE INDEX IF NOT EXISTS "telemetry_device_uuid_boot_id_seq_idx" ON "telemetry" '
    '("device_uuid", "boot_id", "seq", "idx")',
    'CREATE INDEX IF NOT EXISTS "telemetry_device_uuid_ts" ON "telemetry" ("device_uuid", "ts")',
)
INSERT = ("INSERT OR IGNORE INTO telemetry (device_uuid, boot_id, seq, idx, ts, received_at, source, metric, value, "
          "unit, tag, raw) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL)")


def open_db(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    for statement in SCHEMA:
        conn.execute(statement)
    return conn


def connect_properties() -> Properties:
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 86400
    props.ReceiveMaximum = 65535
    return props


def device_time(value, received_at: float) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value).timestamp()
        except ValueError:
            pass
    return received_at


def rows_of(topic: str, payload: bytes, received_at: float) -> list[tuple]:
    body = json.loads(payload)
    uuid = topic.split("/")[2]
    ts = device_time(body.get("timestamp"), received_at)
    boot_id, seq = body.get("boot_id"), body.get("seq")
    rows = []
    for metric, value in (body.get("analog_sensors") or {}).items():
        rows.append((uuid, boot_id, seq, len(rows), ts, received_at, "analog", metric, value, None))
    for r in body.get("readings") or ():
        rows.append((uuid, boot_id, seq, len(rows), ts, received_at, r.get("source", "sensor"), r["metric"],
                     r.get("value"), r.get("unit")))
    return rows


class Baseline:
    def __init__(self, port: int, client_id: str = CLIENT_ID) -> None:
        self.port = port
        self.inbox: deque = deque()
        self.arrived = threading.Event()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
                                  manual_ack=True)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_message = self._on_message

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        client.subscribe(TOPIC, qos=1)

    def _on_message(self, client, userdata, message) -> None:
        self.inbox.append((message.topic, message.payload, message.mid, time.time()))
        self.arrived.set()

    def connect(self) -> None:
        self.client.connect("127.0.0.1", self.port, keepalive=60, clean_start=False, properties=connect_properties())
        self.client.loop_start()

    def disconnect(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def drain(self, db: sqlite3.Connection, expect: int, timeout: float) -> dict:
        """Store and acknowledge messages until `expect` are done."""
        done = rows_total = batches = 0
        first_at = None
        deadline = time.time() + timeout
        inbox = self.inbox
        while done < expect and time.time() < deadline:
            if not inbox:
                self.arrived.clear()
                if not inbox:
                    self.arrived.wait(0.05)
                continue
            if first_at is None:
                first_at = time.time()
            taken = [inbox.popleft() for _ in range(min(len(inbox), BATCH_MESSAGES))]
            rows = []
            for topic, payload, _, received_at in taken:
                rows.extend(rows_of(topic, payload, received_at))
            db.execute("BEGIN IMMEDIATE")
            db.executemany(INSERT, rows)
            db.execute("COMMIT")
            for _, _, mid, _ in taken:  # acknowledged only after the commit
                self.client.ack(mid, 1)
            done += len(taken)
            rows_total += len(rows)
            batches += 1
        return {"messages": done, "rows": rows_total, "batches": batches, "first_at": first_at,
                "done_at": time.time()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--client-id", default=CLIENT_ID)
    parser.add_argument("--setup", action="store_true", help="create the persistent session and leave")
    parser.add_argument("--expect", type=int, default=0, help="messages to drain")
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args(argv)

    db = open_db(args.db)
    base = Baseline(args.port, args.client_id)
    connect_at, cpu_at = time.time(), time.process_time()
    base.connect()
    # On a session with a queue the SUBACK comes behind whatever the broker
    # sends first: on a loaded machine that took more than 10 s.
    if not base.subscribed.wait(60):
        print(json.dumps({"error": "not subscribed"}))
        return 1
    if args.setup:
        base.disconnect()
        print(json.dumps({"setup": True}))
        return 0
    result = base.drain(db, args.expect, args.timeout)
    result["cpu_s"] = time.process_time() - cpu_at  # every thread of this process, during the drain
    time.sleep(0.2)  # the last acknowledgements leave with the network thread
    base.disconnect()
    result["connect_at"] = connect_at
    print(json.dumps(result))
    return 0 if result["messages"] >= args.expect else 1


if __name__ == "__main__":
    sys.exit(main())
