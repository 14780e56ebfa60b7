"""What the integration tests share besides devices: reading the gateway's
SQLite file, writing commands as the Config App does, asking the control
socket, and publishing long streams fast."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from gateway import control
from tests.support.broker import wait_until

# Short timeouts so the suite stays fast (PROTOCOL's defaults are seconds).
FAST_SETTINGS = {
    "device_timeout_s": 1,
    "command_timeout_s": 0.5,
    "command_poll_ms": 50,
    "batch_max_age_ms": 20,
}


class Db:
    """The gateway's database as another program (the Config App) sees it."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            wait_until(self.path.exists, 10, what=f"database {self.path}")
            # Autocommit: every SELECT sees the latest commit; every write is
            # its own transaction, as the Config App's would be.
            self._conn = sqlite3.connect(str(self.path), isolation_level=None, timeout=10)
            self._conn.row_factory = sqlite3.Row
        return self._conn

    def rows(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        return self.conn.execute(sql, args).fetchall()

    def one(self, sql: str, *args: Any) -> Any:
        row = self.conn.execute(sql, args).fetchone()
        return None if row is None else row[0]

    def device(self, uuid: str) -> dict | None:
        found = self.rows("SELECT * FROM gateway_devices WHERE uuid = ?", uuid)
        return dict(found[0]) if found else None

    def field(self, uuid: str, name: str) -> Any:
        """One column of the device's row; None while there is no row."""
        row = self.device(uuid)
        return None if row is None else row[name]

    def events(self, uuid: str) -> list[tuple[str, Any]]:
        return [(r["event"], json.loads(r["detail"]) if r["detail"] else None)
                for r in self.rows("SELECT event, detail FROM device_events WHERE device_uuid = ? ORDER BY id", uuid)]

    def event_names(self, uuid: str) -> list[str]:
        return [e for e, _ in self.events(uuid)]

    def telemetry(self, uuid: str) -> list[sqlite3.Row]:
        return self.rows("SELECT * FROM telemetry WHERE device_uuid = ? ORDER BY seq, idx, id", uuid)

    def count(self, uuid: str) -> int:
        return self.one("SELECT COUNT(*) FROM telemetry WHERE device_uuid = ?", uuid)

    # -- commands, as the Config App writes them -----------------------------

    def insert_command(self, uuid: str, command_type: str = "relay_control", parameters: Any = None, *,
                       topic: str = "command", timeout: float | None = None, max_attempts: int = 3,
                       ttl_s: float = 300.0) -> int:
        now = time.time()
        cur = self.conn.execute(
            "INSERT INTO commands (device_uuid, command_type, parameters, topic, status, created_at, expires_at,"
            " timeout, max_attempts, attempts) VALUES (?, ?, ?, ?, 'pending', ?, ?, ?, ?, 0)",
            (uuid, command_type, json.dumps(parameters if parameters is not None else {"relay_id": 1, "state": True}),
             topic, now, now + ttl_s, timeout, max_attempts),
        )
        return cur.lastrowid

    def request_cancel(self, command_id: int) -> None:
        self.conn.execute("UPDATE commands SET status = 'cancel_requested' WHERE id = ? AND status IN "
                          "('pending', 'queued', 'sent', 'accepted')", (command_id,))

    def command(self, command_id: int) -> sqlite3.Row:
        return self.rows("SELECT * FROM commands WHERE id = ?", command_id)[0]

    def wait_command(self, command_id: int, status: str, timeout: float = 10.0) -> sqlite3.Row:
        def reached():
            row = self.command(command_id)
            return row if row["status"] == status else None

        try:
            return wait_until(reached, timeout, what=f"command {command_id} to be {status}")
        except AssertionError:
            raise AssertionError(f"command {command_id} is {dict(self.command(command_id))}, not {status}") from None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class _Row(tuple):
    """A row readable by position and by column name, as sqlite3.Row."""

    def __new__(cls, values, names):
        row = super().__new__(cls, values)
        row._names = names
        return row

    def __getitem__(self, key):
        if isinstance(key, str):
            key = self._names.index(key)
        return tuple.__getitem__(self, key)

    def keys(self):
        return list(self._names)


def _row_factory(cursor):
    names = tuple(c.name for c in cursor.description or ())
    return lambda values: _Row(values, names)


class PgDb(Db):
    """The same view of a PostgreSQL database (a Config App-like client of
    a depot's server): the same SQL, `?` placeholders turned into `%s`."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn = None

    @property
    def conn(self):
        if self._conn is None:
            import psycopg

            self._conn = psycopg.connect(self.url, autocommit=True, row_factory=_row_factory)
        return self._conn

    def _wait_for_schema(self) -> None:
        wait_until(lambda: self.conn.execute("SELECT to_regclass('commands')").fetchone()[0] is not None, 20,
                   what="the gateway's tables")

    def rows(self, sql: str, *args: Any) -> list:
        return self.conn.execute(sql.replace("?", "%s"), args).fetchall()

    def one(self, sql: str, *args: Any) -> Any:
        row = self.conn.execute(sql.replace("?", "%s"), args).fetchone()
        return None if row is None else row[0]

    def insert_command(self, uuid: str, command_type: str = "relay_control", parameters: Any = None, *,
                       topic: str = "command", timeout: float | None = None, max_attempts: int = 3,
                       ttl_s: float = 300.0) -> int:
        self._wait_for_schema()
        now = time.time()
        return self.one(
            "INSERT INTO commands (device_uuid, command_type, parameters, topic, status, created_at, expires_at,"
            " timeout, max_attempts, attempts) VALUES (?, ?, ?, ?, 'pending', ?, ?, ?, ?, 0) RETURNING id",
            uuid, command_type, json.dumps(parameters if parameters is not None else {"relay_id": 1, "state": True}),
            topic, now, now + ttl_s, timeout, max_attempts)

    def request_cancel(self, command_id: int) -> None:
        self.rows("UPDATE commands SET status = 'cancel_requested' WHERE id = ? AND status IN "
                  "('pending', 'queued', 'sent', 'accepted') RETURNING id", command_id)


# -- the control socket --------------------------------------------------------

def inspect(socket_path: Path, what: str, **fields: Any) -> dict:
    """One request to the gateway's control socket, through the CLI's own client."""
    return control.request(str(socket_path), what, **fields)


def device_rejections(socket_path: Path, uuid: str) -> dict:
    reply = inspect(socket_path, "device", uuid=uuid)
    assert "device" in reply, reply
    return reply["device"]["rejections"]


# -- fast streams ------------------------------------------------------------


def telemetry_line(seq: int, boot_id: int = 1) -> str:
    return json.dumps({"seq": seq, "boot_id": boot_id, "analog_sensors": {"fuel_level": seq % 100}},
                      separators=(",", ":"))


class Stream:
    """`count` QoS 1 telemetry messages with seq 1..count from one device,
    published by `mosquitto_pub -l` (one message per stdin line: faster than
    paho) in a background thread. `published` says how many lines were
    handed over; `done` is set once mosquitto_pub has exited (every message
    acknowledged by the broker)."""

    def __init__(self, port: int, uuid: str, count: int, prefix: str = "autocore", boot_id: int = 1,
                 pause_every: int = 0, pause_s: float = 0.0, gates: list[threading.Event] | None = None,
                 gate_every: int = 0) -> None:
        self.port = port
        self.uuid = uuid
        self.count = count
        self.topic = f"{prefix}/devices/{uuid}/telemetry"
        self.boot_id = boot_id
        self.written = 0
        self.returncode: int | None = None
        self.done = threading.Event()
        self.proc: subprocess.Popen | None = None
        self.stderr = b""
        # Throttling (if asked): a stream that lasts long enough to be cut.
        self.pause_every = pause_every
        self.pause_s = pause_s
        # Gated (if asked): message k * gate_every + 1 waits for gates[k - 1],
        # so a stream lasts until the test's own steps are done, however slow.
        self.gates = gates or []
        self.gate_every = gate_every

    def start(self) -> Stream:
        self.proc = subprocess.Popen(
            ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(self.port), "-i", f"{self.uuid}-pub", "-q", "1",
             "-t", self.topic, "-l"],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        threading.Thread(target=self._feed, daemon=True).start()
        return self

    def _feed(self) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        try:
            for seq in range(1, self.count + 1):
                gate = (seq - 1) // self.gate_every - 1 if self.gate_every else -1
                if 0 <= gate < len(self.gates) and (seq - 1) % self.gate_every == 0:
                    self.proc.stdin.flush()
                    if not self.gates[gate].wait(300):
                        break
                self.proc.stdin.write((telemetry_line(seq, self.boot_id) + "\n").encode())
                self.written = seq
                if self.pause_every and seq % self.pause_every == 0:
                    self.proc.stdin.flush()
                    time.sleep(self.pause_s)  # pacing the publisher, not waiting for the gateway
            self.proc.stdin.close()
            assert self.proc.stderr is not None
            self.stderr = self.proc.stderr.read()
            self.returncode = self.proc.wait()
        except BrokenPipeError:
            self.stderr = b"mosquitto_pub went away"
        finally:
            self.done.set()

    def wait(self, timeout: float = 60.0) -> None:
        assert self.done.wait(timeout), f"mosquitto_pub did not finish within {timeout} s"
        assert self.returncode == 0, f"mosquitto_pub failed ({self.returncode}): {self.stderr.decode(errors='replace')}"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def fast_client(port: int, client_id: str) -> mqtt.Client:
    """A paho publisher with a large in-flight window (for bursts)."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client
