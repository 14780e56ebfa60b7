"""The gateway on PostgreSQL, end to end: a real gateway subprocess with
AUTOCORE_DB_URL pointing at a fresh database of the session's throw-away
cluster (tests/support/postgres.py), a real Mosquitto, test devices.

The single-instance guarantees are tested on PostgreSQL by the modules that
set `ENGINES` to both backends: test_commands (a command written into
`commands` delivered, answered, retried, cancelled), test_telemetry,
test_devices, test_durability (kill -9 mid stream and the broker's
redelivery stored exactly once, a graceful stop under load) and
test_robustness. Here: what only the PostgreSQL set-up has."""

from __future__ import annotations

import subprocess
import sys
import time

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
    assert stored(db, dev.uuid)[:len(FULL_ROWS)] == FULL_ROWS  # ordered by seq: 981 before 982


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


def test_a_restart_of_the_server_holds_back_acknowledgements_and_catches_up_without_a_restart(broker, tmp_path,
                                                                                             devices):
    """PostgreSQL stopped and started again while messages come (its own
    cluster: the session's is shared): the gateway keeps running, says so
    once, acknowledges nothing it could not store, and stores everything
    exactly once when the server is back, on new connections; a command
    written after it is back is delivered (the command feed listens again)."""
    from tests.integration.conftest import Gateways
    from tests.integration.helpers import PgDb, Stream, inspect
    from tests.support.postgres import PgCluster

    cluster = PgCluster().start()
    try:
        url = cluster.create_database()
        made = Gateways(broker, tmp_path / "gw", url)
        try:
            gw = made()
            pid = gw.proc.pid
            dev = devices()
            dev.announce(boot_id=1, status_interval=60.0)
            Stream(broker.port, "pg-before", 200).start().wait(30)
            db = PgDb(url)
            wait_until(lambda: db.one("SELECT COUNT(*) FROM telemetry") == 200, 20, what="the first messages stored")
            db.close()
            cluster.stop_server()
            during = Stream(broker.port, "pg-during", 200).start()
            during.wait(30)  # the broker has them all, whatever the gateway does
            gw.wait_for_line("the database server cannot be reached", 20)
            writer = wait_until(lambda: (lambda w: w["store"]["state"] == "database_unreachable" and w)(
                inspect(gw.socket_path, "stats")["stats"]["writer"]), 10, what="inspect: database_unreachable")
            assert writer["store"]["waiting_batches"] >= 1
            assert inspect(gw.socket_path, "stats")["stats"]["mqtt"]["unacknowledged"] > 0
            assert gw.proc.poll() is None
            cluster.start_server()
            db = PgDb(url)
            try:
                wait_until(lambda: db.one("SELECT COUNT(*) FROM telemetry") == 400, 40,
                           what="every message stored once the server is back")
                assert db.one("SELECT COUNT(DISTINCT (device_uuid, seq)) FROM telemetry") == 400
            finally:
                db.close()
            wait_until(lambda: inspect(gw.socket_path, "stats")["stats"]["writer"]["store"]["state"] == "ok", 20,
                       what="store state ok again")
            wait_until(lambda: inspect(gw.socket_path, "stats")["stats"]["mqtt"]["unacknowledged"] == 0, 10,
                       what="every message acknowledged")
            db = PgDb(url)
            try:
                command = db.insert_command(dev.uuid, timeout=30.0)
                [sent] = dev.wait_commands(1, timeout=10)
                assert sent["command_id"] == str(command)
                dev.respond(sent["command_id"], success=True)
                db.wait_command(command, "succeeded", 10)
            finally:
                db.close()
            assert gw.proc.poll() is None and gw.proc.pid == pid  # no restart, no crash
            assert sum("the database server cannot be reached" in line for line in gw.lines) == 1
            assert any("writable again" in line for line in gw.lines)
            assert not any("Traceback" in line or "died" in line for line in gw.lines), gw.lines[-30:]
        finally:
            made.close()
    finally:
        cluster.stop()
