"""A power cut loses nothing the gateway acknowledged (issue 22).

The database lives on a file system that keeps only what was fsynced
(tests/support/lossy_fs.py). A cut is the power going: every gateway
process killed at once, then every write not yet fsynced thrown away; the
gateway then starts again on what the disk kept, beside a broker that
survived (it stands for the broker's own promise, which the deployment
docs bound). Cuts fall at random moments while telemetry streams in, while
commands run, and while rows go up to the fleet.

Counting: every message the broker acknowledged to a publisher either
reached the gateway and was acknowledged by it (then it must be stored),
or is still in the gateway's session (then the broker delivers it again).
So once a marker published after everything else is stored and nothing is
unacknowledged, every published message must be stored, exactly once. A
message the gateway acknowledged and the cut took back is missing for
good: that is the loss this test catches (and does catch, in the test
that acknowledges before the sync, as the gateway did before issue 22).
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gateway.control import ControlError
from tests.integration.devices import TestDevice
from tests.integration.helpers import Stream, inspect, telemetry_line
from tests.integration.uplink_runs import kill_9_while_uplinking
from tests.integration.uplink_support import FleetCollector
from tests.support.broker import Broker, wait_until
from tests.support.lossy_fs import LossyFs

# `make test` cuts 5 times; AUTOCORE_TEST_POWER_CUTS=50 for a longer run.
CUTS = int(os.environ.get("AUTOCORE_TEST_POWER_CUTS") or 5)
DEVICES = 10
# At about 100 messages/s each, a cut and a restart about every 1.5 s: the
# stream outlasts the cuts.
PER_DEVICE = 800 if CUTS <= 5 else CUTS * 400
pytestmark = pytest.mark.timeout(300 if CUTS <= 5 else 60 * CUTS)

COMMAND_CUTS = max(4, CUTS - 1)
UPLINK_ROWS = max(6000, CUTS * 1200)
FINAL = ("succeeded", "failed", "timeout", "expired", "cancelled")


@pytest.fixture
def disk(tmp_path):
    with LossyFs(tmp_path / "disk") as fs:
        yield fs


def query(path: Path, sql: str, *args) -> list:
    """One short-lived read: no connection of the test may outlive a cut."""
    conn = sqlite3.connect(path, timeout=10)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def integrity(path: Path) -> str:
    return query(path, "PRAGMA integrity_check")[0][0]


def publish_one(port: int, uuid: str, seq: int) -> None:
    done = subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-i", f"{uuid}-marker", "-q", "1",
                           "-t", f"autocore/devices/{uuid}/telemetry", "-m", telemetry_line(seq)],
                          capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr


def acked(gw) -> int:
    """Messages the running gateway has acknowledged so far."""
    try:
        return inspect(gw.socket_path, "stats")["stats"]["mqtt"]["counters"].get("acked", 0)
    except ControlError as exc:
        raise AssertionError(f"the gateway is not running ({exc}; exit {gw.proc.poll()}):\n"
                             + "\n".join(gw.lines[-40:])) from None


def cut(gw, disk: LossyFs) -> int:
    """The power goes: every process at once, then the disk's cache."""
    gw.kill()
    return disk.drop()


@dataclass
class CutRun:
    published: int
    stored: int  # distinct (device, seq)
    rows: int  # telemetry rows (a reading stored twice would show here)
    acked_at_cuts: list[int] = field(default_factory=list)  # messages the gateway had acknowledged, per cut
    dropped_bytes: list[int] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return self.published - self.stored


def stream_through_cuts(gateways, broker, disk: LossyFs, seed: int, **settings) -> CutRun:
    db = disk.mount / "autocore.db"
    gw = gateways(db_path=str(db), **settings)
    stem = f"cut{seed}"
    # The last messages wait until the cuts are done, so the streams outlast
    # them however slow the restarts are.
    after_cuts = threading.Event()
    streams = [Stream(broker.port, f"{stem}-{k}", PER_DEVICE, pause_every=10, pause_s=0.1, gates=[after_cuts],
                      gate_every=PER_DEVICE - 20).start() for k in range(DEVICES)]
    published_before = 0
    run = CutRun(published=DEVICES * PER_DEVICE, stored=0, rows=0)
    rng = random.Random(seed)
    try:
        for i in range(CUTS):
            time.sleep(rng.uniform(0.3, 1.0))  # a random moment mid-stream
            published = sum(s.written for s in streams)
            assert published > published_before, f"nothing was published between cut {i} and cut {i + 1}"
            published_before = published
            run.acked_at_cuts.append(acked(gw))
            gateways.allow_tracebacks = True  # a killed process may leave half a line
            run.dropped_bytes.append(cut(gw, disk))
            gw.start()  # on what the disk kept; it must come back every time
        after_cuts.set()
        for s in streams:
            s.wait(60 + PER_DEVICE / 50)  # at about 100 messages/s each
        # One more message per device, published after all the others: once
        # each is stored and nothing waits unacknowledged, the broker has
        # handed the gateway everything it held.
        marker = PER_DEVICE + 1
        for k in range(DEVICES):
            publish_one(broker.port, f"{stem}-{k}", marker)
        wait_until(lambda: inspect(gw.socket_path, "stats")["stats"]["mqtt"]["unacknowledged"] == 0
                   and query(db, "SELECT COUNT(*) FROM telemetry WHERE device_uuid LIKE ? AND seq = ?",
                             f"{stem}-%", marker)[0][0] == DEVICES, 60,
                   what="the markers stored and nothing unacknowledged")
    finally:
        for s in streams:
            s.stop()
    run.stored = query(db, "SELECT COUNT(*) FROM (SELECT DISTINCT device_uuid, seq FROM telemetry "
                           "WHERE device_uuid LIKE ? AND seq <= ?)", f"{stem}-%", PER_DEVICE)[0][0]
    run.rows = query(db, "SELECT COUNT(*) FROM telemetry WHERE device_uuid LIKE ?", f"{stem}-%")[0][0]
    assert integrity(db) == "ok"
    gw.stop()
    print(f"{CUTS} cuts: {run.published} published, {run.stored} stored, {run.lost} lost; acknowledged by the "
          f"gateway at each cut {run.acked_at_cuts}; unsynced bytes dropped {run.dropped_bytes}")
    return run


def test_power_cuts_mid_stream_lose_no_acknowledged_message(gateways, broker, disk):
    run = stream_through_cuts(gateways, broker, disk, seed=22)
    assert sum(run.acked_at_cuts) > 0, "the gateway acknowledged nothing before the cuts: nothing was at stake"
    assert any(run.dropped_bytes), "no cut found unsynced data to drop: the cuts tested nothing"
    assert run.lost == 0, f"{run.lost} of {run.published} acknowledged messages lost"
    assert run.rows == run.stored + DEVICES, "a reading stored twice"  # + the markers


def test_the_cut_catches_acknowledging_before_the_sync(gateways, broker, disk):
    """What the gateway did before issue 22 (acknowledge at commit, sync
    later): the same cuts lose acknowledged messages, so the test above
    would see a loss."""
    run = stream_through_cuts(gateways, broker, disk, seed=23, db_unsafe_ack_before_sync=1)
    assert run.lost > 0, "acknowledging before the sync lost nothing: these cuts would not catch a loss"


class Responder:
    """A v1 board that answers every command it gets (a repeat too, as the
    protocol asks) from a thread of its own, and keeps what it got."""

    def __init__(self, port: int, uuid: str) -> None:
        self.device = TestDevice(port, uuid).connect()
        self.device.announce(boot_id=1, status_interval=60)
        self._stop = threading.Event()
        self.answered = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "Responder":
        self._thread.start()
        return self

    def _run(self) -> None:
        self.answered = 0
        while not self._stop.is_set():
            got = self.device.commands
            for command in got[self.answered:]:
                self.device.respond(command["command_id"], success=True, result={"ok": True})
                self.answered += 1
            self._stop.wait(0.005)

    def deliveries(self) -> dict[int, list[int]]:
        """command id -> the attempt numbers it came with, in order."""
        out: dict[int, list[int]] = {}
        for command in self.device.commands:
            out.setdefault(int(command["command_id"]), []).append(int(command["attempt"]))
        return out

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.device.disconnect()


def insert_commands(db: Path, uuid: str, n: int) -> list[int]:
    """As the Config App writes them (its own connection, synchronous FULL)."""
    conn = sqlite3.connect(db, timeout=10)
    try:
        now = time.time()
        ids = []
        with conn:
            for i in range(n):
                cur = conn.execute(
                    "INSERT INTO commands (device_uuid, command_type, parameters, topic, status, created_at, expires_at,"
                    " max_attempts, attempts) VALUES (?, 'relay_control', ?, 'command', 'pending', ?, ?, 10, 0)",
                    (uuid, json.dumps({"relay_id": 1 + i % 4, "state": i % 2 == 0}), now, now + 600))
                ids.append(cur.lastrowid)
        return ids
    finally:
        conn.close()


def test_power_cuts_while_commands_run_send_no_command_twice_and_each_ends_once(gateways, broker, disk):
    db = disk.mount / "autocore.db"
    gw = gateways(db_path=str(db), command_timeout_s=2)
    board = Responder(broker.port, "cut-relay").start()
    try:
        wait_until(lambda: query(db, "SELECT status FROM gateway_devices WHERE uuid = 'cut-relay'") == [("online",)],
                   10, what="the board online")
        ids = insert_commands(db, "cut-relay", 15 * COMMAND_CUTS + 20)
        rng = random.Random(2201)
        for i in range(COMMAND_CUTS):
            time.sleep(rng.uniform(0.3, 0.8))
            final = query(db, f"SELECT COUNT(*) FROM commands WHERE status IN {FINAL}")[0][0]
            assert final < len(ids), f"every command ended before cut {i + 1}"
            gateways.allow_tracebacks = True
            cut(gw, disk)
            gw.start()
        # About ten commands a second go through on this file system (each
        # one a commit and a sync, then its answer's): the wait grows with them.
        wait_until(lambda: query(db, f"SELECT COUNT(*) FROM commands WHERE status IN {FINAL}")[0][0] == len(ids),
                   60 + len(ids) / 5, what="every command final",
                   progress=lambda: (query(db, "SELECT status, COUNT(*) FROM commands GROUP BY status"),
                                     f"the board got {len(board.device.commands)} commands",
                                     "\n".join(gw.lines[-20:])))
        rows = {r[0]: r[1:] for r in query(db, "SELECT id, status, attempts FROM commands")}
        deliveries = board.deliveries()
    finally:
        board.stop()
    assert integrity(db) == "ok"
    assert {status for status, _ in rows.values()} == {"succeeded"}, rows
    assert set(deliveries) == set(ids), "a command never reached the board"
    for command_id, attempts in deliveries.items():
        # A restart sends a `sent` command again with the next attempt (the
        # board answers without acting again). The same attempt twice means
        # a state the gateway had acted on was lost.
        assert attempts == sorted(set(attempts)), f"command {command_id} came with attempts {attempts}"
        assert rows[command_id][1] >= attempts[-1], (command_id, rows[command_id], attempts)
    again = sum(len(a) - 1 for a in deliveries.values())
    print(f"{len(ids)} commands through {COMMAND_CUTS} cuts, all succeeded; {again} sent again after a restart "
          "(next attempt)")


def test_power_cuts_while_uplinking_leave_the_fleet_exactly_the_vehicle_rows(gateways, broker, disk, tmp_path):
    fleet = Broker(tmp_path / "fleet-broker").start()
    collector = FleetCollector(fleet.port).start()
    db = disk.mount / "autocore.db"
    try:
        gw = gateways(db_path=str(db), uplink_url=f"mqtt://127.0.0.1:{fleet.port}", vehicle_id="car-cut",
                      uplink_reconnect_max_s=1, uplink_poll_ms=50, uplink_rate=0, uplink_batch_rows=200)
        gateways.allow_tracebacks = True
        run = kill_9_while_uplinking(gw, broker.port, collector, lambda sql: query(db, sql), UPLINK_ROWS, CUTS,
                                     seed=2202, after_kill=disk.drop)
        assert integrity(db) == "ok"
    finally:
        collector.stop()
        fleet.stop()
    # Nothing at the fleet that the vehicle lost ("unknown"), every stored row there once.
    assert run.check.violations == 0 and run.check.stored == UPLINK_ROWS, run.check
    print(f"{UPLINK_ROWS} rows through {CUTS} power cuts: every row at the fleet once "
          f"({run.check.repeats} repeats dropped)")
