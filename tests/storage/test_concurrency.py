"""Another connection (the Config App) holding the write lock: our writes
wait for it, then succeed; past busy_timeout they fail with DatabaseBusy
and leave nothing half-written. Real files only: locking is the point."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest

from storage import commands, devices, events, migrations, telemetry
from storage.db import (
    DatabaseBusy,
    WriteWaits,
    close_database,
    database,
    open_database,
    timed_write_transaction,
    write_transaction,
)
from tests.support.broker import wait_until

from .conftest import lock_held_by_other_connection

# SQLite's single write lock, held by another connection (busy_timeout, BEGIN IMMEDIATE).
pytestmark = pytest.mark.sqlite_only


def batch(n, start=0, device="d1"):
    return [(device, 1, start + i, 0, float(i), float(i), "sensor", "m", float(i), None, None, None) for i in range(n)]


def test_a_batch_waits_for_the_other_writer_then_succeeds(db, db_path):
    rows = batch(2000)
    with lock_held_by_other_connection(db_path, 0.5):
        t = time.monotonic()
        assert telemetry.insert_rows(db, rows) == 2000
        waited = time.monotonic() - t
    assert waited >= 0.3, waited
    assert telemetry.count("d1") == 2000
    # The other connection's row is there too: nobody lost anything.
    assert [e.device_uuid for e in events.list_events()] == ["config-app"]


def test_a_timed_transaction_counts_the_wait_for_the_lock_as_its_stall_not_its_work(db, db_path):
    waits = WriteWaits()
    with lock_held_by_other_connection(db_path, 0.3):
        with timed_write_transaction(waits):
            telemetry.insert_rows(db, batch(10))
    assert waits.begin_s >= 0.2, waits.begin_s  # BEGIN IMMEDIATE waited for the other writer
    assert waits.commit_s < waits.begin_s
    assert waits.stall_s == waits.begin_s + waits.commit_s
    # Unhindered, the stall is small; a failing block rolls back as write_transaction does.
    calm = WriteWaits()
    with pytest.raises(ZeroDivisionError):
        with timed_write_transaction(calm):
            telemetry.insert_rows(db, batch(5, start=100))
            1 / 0
    assert calm.begin_s < 0.2 and telemetry.count("d1") == 10


def test_every_kind_of_write_waits_and_succeeds(db, db_path):
    cid = commands.insert_command("d1", "ping", {}, now=1.0, ttl_s=60)
    with lock_held_by_other_connection(db_path, 0.3):
        assert devices.ensure_device("d1", 1.0, "v1")
    with lock_held_by_other_connection(db_path, 0.3):
        assert [r.id for r in commands.claim([cid], 2.0)] == [cid]
    with lock_held_by_other_connection(db_path, 0.3):
        assert commands.transition(cid, "sent", 3.0, attempts=1)
    with lock_held_by_other_connection(db_path, 0.3):
        assert events.append_events([("d1", 4.0, "online", None)]) == 1


def test_busy_timeout_expiring_raises_database_busy_and_stores_nothing(db_path):
    db = open_database(db_path, busy_timeout_ms=100)
    migrations.migrate()
    try:
        with lock_held_by_other_connection(db_path, 0.6):
            with pytest.raises(DatabaseBusy):
                with write_transaction():
                    telemetry.insert_rows(db, batch(100))
                    devices.touch_last_seen([("d1", 5.0)])
            with pytest.raises(DatabaseBusy):
                commands.insert_command("d1", "ping", {}, now=1.0, ttl_s=60)
            with pytest.raises(DatabaseBusy):
                telemetry.insert_rows(db, batch(100))
        assert not database.in_transaction()
        assert telemetry.count() == 0 and commands.list_commands() == []
        # Once the lock is gone, retrying the same batch just works.
        assert telemetry.insert_rows(db, batch(100)) == 100
    finally:
        close_database()


def test_database_busy_is_an_operational_error():
    import peewee

    assert issubclass(DatabaseBusy, peewee.OperationalError)


def test_an_open_reader_does_not_block_the_writer(db, db_path):
    telemetry.insert_rows(db, batch(10))
    reader = sqlite3.connect(db_path, isolation_level=None)
    try:
        reader.execute("BEGIN")
        assert reader.execute("SELECT count(*) FROM telemetry").fetchone()[0] == 10
        t = time.monotonic()
        assert telemetry.insert_rows(db, batch(10, start=100)) == 10  # WAL: no wait
        assert time.monotonic() - t < 2.0  # blocked, it would wait the full busy_timeout
        # The reader keeps its snapshot until it ends its transaction.
        assert reader.execute("SELECT count(*) FROM telemetry").fetchone()[0] == 10
        reader.execute("COMMIT")
    finally:
        reader.close()


def test_gateway_and_config_app_writing_at_once_lose_nothing(db, db_path):
    """The Config App inserts commands in short transactions while the
    gateway stores telemetry batches and claims commands."""
    n_commands = 300
    errors: list[BaseException] = []

    def config_app():
        try:
            conn = sqlite3.connect(db_path, isolation_level=None, timeout=10)
            for i in range(n_commands):
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("INSERT INTO commands (device_uuid, command_type, parameters) VALUES (?, 'ping', '{}')",
                             (f"d{i % 4}",))
                conn.execute("COMMIT")
            conn.close()
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=config_app)
    t.start()
    stored = 0
    claimed: set[int] = set()
    for b in range(40):
        stored += telemetry.insert_rows(db, batch(500, start=b * 500))
        claimed |= {r.id for r in commands.claim([c.id for c in commands.pending_commands()], float(b))}
    t.join(60)
    assert not errors, errors
    claimed |= {r.id for r in commands.claim([c.id for c in commands.pending_commands()], 99.0)}
    assert stored == 20000 and telemetry.count() == 20000
    assert len(claimed) == n_commands
    assert {r.status for r in commands.list_commands(limit=1000)} == {"queued"}


def test_the_reader_sees_commits_of_both_writers(db, db_path):
    from storage.db import data_version, open_reader

    reader = open_reader(db_path)
    seen = {}

    started = threading.Event()

    def poller():
        # The poller thread has its own connection to the reader database.
        first = data_version(reader)
        started.set()
        wait_until(lambda: data_version(reader) != first, 5, interval=0.01, what="data_version to change")
        seen["rows"] = [c.command_type for c in commands.pending_commands(db=reader)]
        reader.close()

    t = threading.Thread(target=poller)
    t.start()
    assert started.wait(5)
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("INSERT INTO commands (device_uuid, command_type) VALUES ('d1', 'reboot')")
    conn.close()
    t.join(10)
    assert seen["rows"] == ["reboot"]


def test_every_writer_transaction_takes_the_lock_at_begin(db, db_path):
    # Even a plain database.atomic() that starts with a read holds the
    # write lock at once, so its later write cannot hit a stale snapshot.
    other = sqlite3.connect(db_path, isolation_level=None, timeout=0)
    try:
        with database.atomic():
            database.execute_sql("SELECT count(*) FROM telemetry").fetchone()
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
            telemetry.insert_rows(db, batch(5))
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
    finally:
        other.close()
