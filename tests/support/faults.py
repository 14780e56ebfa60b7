"""What the fault tests (tests/integration/test_faults.py) need beside the
integration fixtures: a publisher whose QoS 1 session outlives broker
restarts, another program holding the SQLite write lock, the gateway's
processes by role, freezing them, and the broker's last save."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import paho.mqtt.client as mqtt

from protocol.decode import decode_message
from protocol.values import Rejected
from tests.support.broker import Broker, wait_until

# -- a publisher that survives broker restarts ---------------------------------


class PersistentPublisher:
    """QoS 1 telemetry with seq 1, 2, ... from one device, paced at `rate`
    messages/s until `stop()`, on a persistent session (MQTT 3.1.1, clean
    session off) that outlives broker restarts: paho reconnects by itself and
    sends again every message the broker has not acknowledged (paho 2.x
    resets its whole outgoing queue on a reconnect; a message published while
    disconnected waits in that queue). `mosquitto_pub -l` gives up when the
    connection drops, hence this.

    `acked_at[seq]` is when the broker's PUBACK for `seq` arrived
    (time.time()): from then on the message is the broker's to keep."""

    MAX_MESSAGES = 65000  # paho message ids are 16 bits: each seq keeps its own

    def __init__(self, port: int, uuid: str, rate: float = 1000.0, prefix: str = "autocore", boot_id: int = 1) -> None:
        self.uuid = uuid
        self.topic = f"{prefix}/devices/{uuid}/telemetry"
        self.rate = rate
        self.boot_id = boot_id
        self.port = port
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{uuid}-pub", clean_session=False,
                                  protocol=mqtt.MQTTv311)
        self.client.max_inflight_messages_set(100)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(0.1, 0.5)  # type: ignore[arg-type]  (floats work)
        self.client.on_publish = self._on_publish
        self.client.on_connect = self._on_connect
        self.connections = 0
        self.published = 0  # handed to paho: seq 1..published
        self.publish_errors: list[str] = []
        self._mid_of: dict[int, int] = {}  # seq -> paho message id
        self._acks: dict[int, float] = {}  # message id -> when its PUBACK arrived
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # paho's network thread: record and return (no lock: paho holds its own
    # while it calls back, and publish() takes that one too).
    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        self._acks.setdefault(mid, time.time())

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if not reason_code.is_failure:
            self.connections += 1

    def start(self) -> "PersistentPublisher":
        self.client.connect("127.0.0.1", self.port, keepalive=10)
        self.client.loop_start()
        wait_until(lambda: self.connections >= 1, 10, what=f"publisher {self.uuid} connected")
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        started = time.monotonic()
        while not self._stop.is_set() and self.published < self.MAX_MESSAGES:
            due = min(int((time.monotonic() - started) * self.rate), self.MAX_MESSAGES)
            while self.published < due:
                seq = self.published + 1
                payload = json.dumps({"seq": seq, "boot_id": self.boot_id, "analog_sensors": {"fuel_level": seq % 100}},
                                     separators=(",", ":"))
                info = self.client.publish(self.topic, payload, qos=1)
                # MQTT_ERR_NO_CONN: queued by paho, sent once connected again.
                if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                    self.publish_errors.append(f"seq {seq}: {mqtt.error_string(info.rc)}")
                self._mid_of[seq] = info.mid
                self.published = seq
            self._stop.wait(0.01)  # pacing the publisher

    @property
    def acked(self) -> int:
        return len(self._acks)

    def acked_at(self, seq: int) -> float | None:
        mid = self._mid_of.get(seq)
        return None if mid is None else self._acks.get(mid)

    def stop(self, timeout: float = 30.0) -> int:
        """Stop publishing, wait until the broker has acknowledged every
        message, disconnect; returns how many were published."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        wait_until(lambda: self.acked >= self.published, timeout,
                   what=f"the broker's PUBACK for all {self.published} messages of {self.uuid}")
        self.close()
        assert not self.publish_errors, self.publish_errors[:5]
        return self.published

    def close(self) -> None:
        self._stop.set()
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()


# -- the broker -----------------------------------------------------------------


def kill_broker(broker: Broker) -> None:
    """SIGKILL Mosquitto: what it had not saved is gone (FIELD-NOTES)."""
    assert broker.proc is not None
    broker.proc.kill()
    broker.proc.wait(5)


def broker_saved_at(broker: Broker) -> float | None:
    """When Mosquitto last finished writing its persistence file (it writes
    `mosquitto.db.new` and renames it, so the file's mtime is the end of the
    last save), time.time() clock; None before the first save."""
    path = Path(broker.directory) / "data" / "mosquitto.db"
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return None


# -- another program holding the SQLite write lock -------------------------------


class HeldWriteLock:
    """A separate sqlite3 connection (as the Config App would) takes the
    write lock with BEGIN IMMEDIATE, writes a row, holds the transaction
    `seconds`, then commits. `taken_at` / `released_at` are time.monotonic()."""

    def __init__(self, path: Path, seconds: float) -> None:
        self.path = str(path)
        self.seconds = seconds
        self.taken_at: float | None = None
        self.released_at: float | None = None
        self.errors: list[BaseException] = []
        self._taken = threading.Event()
        self._thread = threading.Thread(target=self._hold, daemon=True)

    def _hold(self) -> None:
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=10)
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO device_events (device_uuid, ts, event) VALUES ('config-app', 0, 'lock')")
            self.taken_at = time.monotonic()
            self._taken.set()
            time.sleep(self.seconds)  # holding the lock for a set time
            conn.execute("COMMIT")
            self.released_at = time.monotonic()
            conn.close()
        except BaseException as exc:  # surfaced by start()/join()
            self.errors.append(exc)
        finally:
            self._taken.set()

    def start(self) -> "HeldWriteLock":
        self._thread.start()
        assert self._taken.wait(10), "the other connection never got the lock"
        assert not self.errors, self.errors
        return self

    def join(self, timeout: float) -> float:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the lock holder did not finish"
        assert not self.errors, self.errors
        assert self.released_at is not None
        return self.released_at


# -- the gateway's processes ------------------------------------------------------


def gateway_pids(gw) -> dict[str, int]:
    """{"launcher": pid, "core": pid, "store": pid} of a running gateway."""
    assert gw.proc is not None
    return {"launcher": gw.proc.pid, **gw.children()}


def alive(pid: int) -> bool:
    """Running or stopped, not gone and not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def rss_mib(pid: int) -> float:
    """Resident memory of a process, from /proc (independent of what the
    gateway reports about itself)."""
    with open(f"/proc/{pid}/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1048576.0


def process_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().rsplit(")", 1)[1].split()[0]


def signal_all(pids, signum: int) -> None:
    """One signal to each pid (never a process group: the gateway shares
    pytest's)."""
    for pid in pids:
        os.kill(pid, signum)


def freeze(pids) -> None:
    signal_all(pids, signal.SIGSTOP)
    for pid in pids:
        wait_until(lambda pid=pid: process_state(pid) == "T", 5, what=f"process {pid} stopped")


def thaw(pids) -> None:
    signal_all(pids, signal.SIGCONT)


# -- publishing prepared lines ------------------------------------------------------


def publish_lines(port: int, topic: str, lines: list[bytes], client_id: str, workdir: Path) -> subprocess.Popen:
    """`mosquitto_pub -l -q 1`: one message per line (no newline or NUL in a
    line), from a file so a large volume costs no Python thread."""
    for line in lines:
        assert b"\n" not in line and b"\0" not in line and line, line[:40]
    path = Path(workdir) / f"{client_id}.lines"
    path.write_bytes(b"\n".join(lines) + b"\n")
    with open(path, "rb") as fh:
        return subprocess.Popen(
            ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-i", client_id, "-q", "1", "-t", topic, "-l"],
            stdin=fh, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )


# -- a flood of malformed messages (tests/integration/test_faults.py, bench scenario 10) --

MAX_PAYLOAD = 1024
VALID_TELEMETRY = b'{"seq": 1, "boot_id": 1, "analog_sensors": {"fuel_level": 1}}'

# (topic, payloads sent in turn): bad encodings, wrong types, oversize, topics
# whose uuid is no device id. One line each (mosquitto_pub -l): no newline, no NUL.
MALFORMED = [
    ("autocore/devices/malformed-encoding/telemetry",
     [b'{"seq": 1, "analog', b"{not json at all}", b"\xff\xfe\xfd not utf-8", b"\x85\xa3abc\xa1", b'{"a": NaN}']),
    ("autocore/devices/malformed-types/telemetry",
     [b'{"seq": "x", "analog_sensors": {"fuel_level": 1}}', b'{"analog_sensors": [1, 2]}',
      b'{"seq": -1, "analog_sensors": {"fuel_level": 1}}', b'{"gps": {"latitude": [1]}}', b"[1, 2, 3]"]),
    ("autocore/devices/malformed-types/status", [b'{"status": 42}', b'{"status": "sleeping"}']),
    ("autocore/devices/malformed-size/telemetry",
     [b'{"analog_sensors": {"x": 1}, "pad": "' + b"a" * MAX_PAYLOAD + b'"}']),
    ("autocore/devices/bad.uuid/telemetry", [VALID_TELEMETRY]),
]


def malformed_plan(volume: int) -> list[tuple[str, list[bytes]]]:
    share, extra = divmod(volume, len(MALFORMED))
    plan = []
    for i, (topic, payloads) in enumerate(MALFORMED):
        count = share + (1 if i < extra else 0)
        plan.append((topic, [payloads[j % len(payloads)] for j in range(count)]))
    return plan


def expected_rejections(plan) -> Counter:
    """The reason the protocol gives each message (and that each is rejected at all)."""
    verdicts: dict[tuple[str, bytes], str] = {}
    wanted: Counter = Counter()
    for topic, lines in plan:
        for line in lines:
            key = (topic, line)
            if key not in verdicts:
                try:
                    decode_message(topic, line, prefix="autocore", max_payload=MAX_PAYLOAD)
                except Rejected as rej:
                    verdicts[key] = rej.reason
                else:
                    raise AssertionError(f"not malformed: {topic} {line[:60]!r}")
            wanted[verdicts[key]] += 1
    return wanted
