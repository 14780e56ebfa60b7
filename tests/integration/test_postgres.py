"""The gateway on PostgreSQL, end to end: a real gateway subprocess with
AUTOCORE_DB_URL pointing at a fresh database of the session's throw-away
cluster (tests/support/postgres.py), a real Mosquitto, test devices.
The same guarantees as on SQLite: telemetry stored once however often it
arrives (a broker redelivery after kill -9 included), a command written
into `commands` delivered and brought to a final state, and an unreachable
database one clear line at start-up."""

from __future__ import annotations

import subprocess
import sys
import time

from tests.integration.devices import decode
from tests.integration.helpers import Stream
from tests.integration.test_commands import LONG, online_device
from tests.integration.test_durability import assert_each_seq_once
from tests.integration.test_telemetry import FULL_ROWS, FULL_TELEMETRY, stored
from tests.support.broker import wait_until
from tests.support.gateway import ROOT
from tests.support.postgres import free_port


ENGINES = ("postgresql",)


def test_telemetry_is_stored_once_however_often_it_arrives(gateways, db, devices):
    gw = gateways()
    assert any("database postgresql://" in line for line in gw.lines), gw.lines[-10:]
    dev = devices()
    dev.publish("telemetry", FULL_TELEMETRY)
    dev.publish("telemetry", FULL_TELEMETRY)  # the same message again (seq 981, boot 17)
    dev.telemetry(seq=982, boot_id=17)  # after the repeat on the same session: stored after it
    wait_until(lambda: db.one("SELECT COUNT(*) FROM telemetry WHERE device_uuid = ? AND seq = 982", dev.uuid) == 1,
               10, what="the message after the repeat")
    assert db.count(dev.uuid) == len(FULL_ROWS) + 1
    assert [r for r in stored(db, dev.uuid) if r[0] is not None][:len(FULL_ROWS)] == FULL_ROWS


def test_kill_9_mid_stream_then_the_brokers_redelivery_is_stored_once(gateways, db, broker):
    n = 3000
    gw = gateways()
    uuid = "pg-stream-kill"
    stream = Stream(broker.port, uuid, n, pause_every=100, pause_s=0.03).start()
    try:
        wait_until(lambda: db.count(uuid) >= n // 10, 30, what="the first tenth stored")
        assert not stream.done.is_set(), "the stream ended before the kill"
        gw.kill()
        assert db.count(uuid) < n, "everything was stored before the kill; nothing was cut"
        gateways.allow_tracebacks = True  # a killed process may leave half a line
        stream.wait(60)
        gateways()  # the same database, the same persistent session: the broker redelivers
        wait_until(lambda: db.count(uuid) >= n, 60, what=f"all {n} messages stored after the restart")
        assert_each_seq_once(db, uuid, n)
    finally:
        stream.stop()


def test_a_command_written_into_commands_is_delivered_and_finished(gateways, db, devices):
    gateways()
    dev = online_device(devices, db)
    inserted_at = time.time()
    cid = db.insert_command(dev.uuid, "relay_control", {"relay_id": 2, "state": True}, timeout=LONG)
    waiting = db.insert_command(dev.uuid, "reboot", {}, timeout=LONG)  # behind it: the window is 1
    [cmd] = dev.wait_commands(1)
    assert (cmd["command_id"], cmd["command_type"], cmd["attempt"]) == (str(cid), "relay_control", 1)
    assert cmd["parameters"] == {"relay_id": 2, "state": True}
    row = db.wait_command(cid, "sent")
    assert row["attempts"] == 1 and row["sent_at"] >= inserted_at
    # The NOTIFY from the trigger wakes the feed: picked up well within a second.
    assert row["sent_at"] - inserted_at < 2.0
    # The Config App cancels the one still waiting: it is never sent.
    db.wait_command(waiting, "queued")
    db.request_cancel(waiting)
    assert db.wait_command(waiting, "cancelled")["sent_at"] is None
    dev.respond(cmd["command_id"], success=True, result={"relay_id": 2, "state": True})
    row = db.wait_command(cid, "succeeded")
    assert decode(row["result"].encode()) == {"relay_id": 2, "state": True}
    assert row["completed_at"] >= row["sent_at"]
    assert len(dev.commands) == 1


def test_an_unreachable_database_stops_start_up_with_one_line(tmp_path):
    url = f"postgresql://gateway:s3cret@127.0.0.1:{free_port()}/autocore"
    started = time.monotonic()
    result = subprocess.run([sys.executable, str(ROOT / "bin" / "gateway"), "run"], cwd=str(ROOT),
                            env={"PATH": "/usr/bin:/bin", "AUTOCORE_DB_URL": url,
                                 "AUTOCORE_RUN_DIR": str(tmp_path / "run")},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: cannot reach the database postgresql://gateway:***@127.0.0.1:")
    assert "s3cret" not in result.stderr and "Traceback" not in result.stderr
    assert time.monotonic() - started < 30
