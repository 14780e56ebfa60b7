"""What only PostgreSQL has: its change signal, row locks, types, several
writers at once. (The shared storage tests run on it too; these are the
counterparts of SQLite's data_version, busy_timeout and query_only tests.)"""

from __future__ import annotations

import threading

import peewee
import pytest

from storage import commands, devices, telemetry
from storage.db import DatabaseBusy, data_version, database, open_reader, write_transaction
from storage.errors import DatabaseGone
from storage.migrations import migrate
from tests.support.broker import wait_until

from .conftest import OtherProgram


pytestmark = pytest.mark.postgresql_only


def row(device="d1", boot=1, seq=1, idx=0, ts=100.0, value=1.0, raw=None):
    return (device, boot, seq, idx, ts, ts, "sensor", "m", value, None, None, raw)


def test_the_change_signal_moves_only_when_commands_change(db, db_url):
    reader = open_reader(db_url)
    try:
        first = data_version(reader)
        assert data_version(reader) == first  # nothing happened
        telemetry.insert_rows(db, [row()])  # not a command: no signal
        devices.ensure_device("d1", 1.0, "v1")
        assert data_version(reader) == first
        other = OtherProgram("postgresql", db_url)  # the Config App inserts a command
        other.execute("INSERT INTO commands (device_uuid, command_type) VALUES ('d1', 'ping')")
        other.close()
        assert wait_until(lambda: data_version(reader) != first, 5)
        seen = data_version(reader)
        (pending,) = commands.pending_commands(db=reader)
        commands.claim([pending.id], 2.0)  # our own writer's change counts too
        assert wait_until(lambda: data_version(reader) != seen, 5)
    finally:
        reader.close()


def test_the_reader_is_a_read_only_session(db, db_url):
    reader = open_reader(db_url)
    try:
        with pytest.raises(peewee.PeeweeException, match="read-only"):
            reader.execute_sql("INSERT INTO device_events (device_uuid, ts, event) VALUES ('d', 1, 'x')")
    finally:
        reader.close()


def test_a_row_lock_past_the_busy_timeout_is_database_busy_and_changes_nothing(db_url):
    from storage.db import close_database, open_database

    open_database(db_url, busy_timeout_ms=200)
    migrate()
    try:
        cid = commands.insert_command("d1", "ping", {}, now=1.0, ttl_s=60)
        other = OtherProgram("postgresql", db_url)
        other.conn.autocommit = False
        other.execute("SELECT id FROM commands WHERE id = ? FOR UPDATE", (cid,))
        try:
            with pytest.raises(DatabaseBusy):
                commands.transition(cid, "cancel_requested", 2.0)
        finally:
            other.conn.rollback()
            other.close()
        assert commands.get_command(cid).status == "pending"
        assert commands.transition(cid, "cancel_requested", 3.0)  # free again: it works
    finally:
        close_database()


def test_types_keep_what_sqlite_keeps(db):
    # 64-bit boot ids and seqs, epoch times to the microsecond, bytes.
    big = 2**62
    telemetry.insert_rows(db, [row(boot=big, seq=big, ts=1764253810.123456, raw=b"\x00\xff")])
    (r,) = telemetry.query("d1")
    assert (r.boot_id, r.seq, r.ts, bytes(r.raw)) == (big, big, 1764253810.123456, b"\x00\xff")


def test_a_value_no_column_can_hold_is_a_data_error_and_stores_nothing(db):
    with pytest.raises(peewee.DataError):
        telemetry.insert_rows(db, [row(seq=1), row(seq=2**70)])
    assert telemetry.count() == 0
    assert telemetry.insert_rows(db, [row(seq=1)]) == 1  # the connection is usable again


def test_rows_staged_in_one_call_never_leak_into_the_next(db):
    with write_transaction():
        assert telemetry.insert_rows(db, [row(seq=1), row(seq=2)]) == 2
        assert telemetry.insert_rows(db, [row(seq=3)]) == 1
    assert telemetry.count() == 3


def test_three_writers_inserting_the_same_keys_store_each_once(db, db_url):
    keys = [row(device=f"d{i % 7}", seq=i) for i in range(3000)]
    errors: list[BaseException] = []

    def writer(offset: int) -> None:
        w = peewee_db(db_url)
        try:
            mine = keys[offset:] + keys[:offset]  # the same keys, in another order
            for start in range(0, len(mine), 500):
                with w.atomic():
                    telemetry.insert_rows(w, mine[start:start + 500])
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            w.close()

    threads = [threading.Thread(target=writer, args=(o,)) for o in (0, 1000, 2000)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert telemetry.count() == len(keys)


def test_two_migrations_at_once_take_turns(db_url):
    from storage.db import close_database, open_database

    errors: list[BaseException] = []

    def start() -> None:
        try:
            open_database(db_url)
            migrate()
            database.close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    open_database(db_url)
    try:
        assert migrate() == []
    finally:
        close_database()


def peewee_db(url: str):
    from storage.postgres import PostgresDatabase
    from storage.url import parse_location

    return PostgresDatabase(parse_location(url))


def test_a_lost_connection_is_no_unstorable_value_and_the_next_use_reconnects(db, db_url, pg_cluster):
    # The writer leaves out (and acknowledges) what raises an "unstorable"
    # error: a server that went away must never look like one.
    from storage.db import unstorable_errors

    telemetry.insert_rows(db, [row(seq=1)])
    pid = db.execute_sql("SELECT pg_backend_pid()").fetchone()[0]
    with pg_cluster.admin() as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    # the first call finds the connection dead: DatabaseGone, back-pressure
    with pytest.raises(DatabaseGone) as caught:
        telemetry.insert_rows(db, [row(seq=2)])
    assert not isinstance(caught.value, unstorable_errors()), repr(caught.value)
    # the next use closes the dead connection and opens a new one
    assert telemetry.insert_rows(db, [row(seq=3)]) == 1
    assert db.execute_sql("SELECT pg_backend_pid()").fetchone()[0] != pid
    assert db.execute_sql("SELECT COUNT(*) FROM telemetry").fetchone()[0] == 2


def test_the_writer_turns_synchronous_commit_back_on_where_the_server_turned_it_off(pg_url):
    """The gateway acknowledges at commit: a commit that returns before the
    WAL is flushed (`synchronous_commit = off`, a server's or a role's
    default) would break that on a power cut of the database's computer."""
    from storage.db import close_database, open_database
    from storage.postgres import DURABILITY

    other = OtherProgram("postgresql", pg_url)
    dbname = pg_url.rsplit("/", 1)[1].split("?")[0]
    other.execute(f'ALTER DATABASE "{dbname}" SET synchronous_commit = off')
    other.close()
    plain = OtherProgram("postgresql", pg_url)
    try:
        assert plain.execute("SHOW synchronous_commit").fetchone()[0] == "off"  # what a session gets
    finally:
        plain.close()
    writer = open_database(pg_url)
    try:
        assert writer.execute_sql("SHOW synchronous_commit").fetchone()[0] == "on"
        assert DURABILITY["synchronous_commit"].startswith("off on the server")
        # These test clusters run with fsync off (speed): said, not hidden.
        assert DURABILITY["fsync"] == "off"
    finally:
        close_database()
