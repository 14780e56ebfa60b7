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
