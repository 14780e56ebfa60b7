"""Opening the database: pragmas, the proxy, the reader, data_version."""

from __future__ import annotations

import os
import sqlite3
import threading

import pytest
from peewee import SqliteDatabase

from storage import telemetry
from storage.db import close_database, data_version, database, open_database, open_reader, write_transaction


def pragma(db, name):
    return db.execute_sql(f"PRAGMA {name}").fetchone()[0]


@pytest.mark.sqlite_only  # SQLite's file and PRAGMAs
def test_parent_directory_is_created_and_pragmas_are_in_effect(db_path):
    assert not os.path.exists(os.path.dirname(db_path))
    db = open_database(db_path, busy_timeout_ms=1234)
    try:
        assert isinstance(db, SqliteDatabase)
        assert database.obj is db
        assert pragma(db, "journal_mode") == "wal"
        assert pragma(db, "synchronous") == 1  # NORMAL
        assert pragma(db, "foreign_keys") == 1
        assert pragma(db, "busy_timeout") == 1234
    finally:
        close_database()


@pytest.mark.sqlite_only  # PRAGMA synchronous
def test_synchronous_full(db_path):
    db = open_database(db_path, synchronous="full")
    try:
        assert pragma(db, "synchronous") == 2  # FULL
    finally:
        close_database()


@pytest.mark.sqlite_only  # SQLite PRAGMAs per connection
def test_pragmas_apply_to_every_threads_connection(db):
    # peewee opens one connection per thread; each must get the pragmas.
    seen = {}

    def work():
        seen["sync"] = pragma(database, "synchronous")
        seen["busy"] = pragma(database, "busy_timeout")
        seen["fk"] = pragma(database, "foreign_keys")
        database.close()

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert seen == {"sync": 1, "busy": 5000, "fk": 1}


@pytest.mark.sqlite_only  # SQLite's synchronous and busy_timeout
@pytest.mark.parametrize("kwargs", [{"synchronous": "OFF"}, {"busy_timeout_ms": 0}])
def test_bad_settings_are_refused(db_path, kwargs):
    with pytest.raises(ValueError):
        open_database(db_path, **kwargs)


def test_close_unbinds_the_proxy(db_url):
    open_database(db_url)
    close_database()
    with pytest.raises(AttributeError):
        database.execute_sql("SELECT 1")
    close_database()  # twice is harmless


def test_opening_does_not_migrate(db_url):
    db = open_database(db_url)
    try:
        assert db.get_tables() == []
    finally:
        close_database()


@pytest.mark.sqlite_only  # PRAGMA data_version (tests/storage/test_postgres.py has the NOTIFY counterpart)
def test_data_version_changes_only_when_another_connection_commits(db, db_path):
    reader = open_reader(db_path)
    try:
        v_writer, v_reader = data_version(db), data_version(reader)
        # Our own commit: our data_version stays, the reader's moves.
        telemetry.insert_rows(db, [("d", 0, 1, 0, 1.0, 1.0, "s", "m", 1.0, None, None, None)])
        assert data_version(db) == v_writer
        assert data_version(reader) != v_reader
        # Nothing committed since: both unchanged (a poller skips its query).
        v_reader = data_version(reader)
        reader.execute_sql("SELECT count(*) FROM telemetry").fetchone()
        assert data_version(reader) == v_reader
        assert data_version(db) == v_writer
        # Another process (the Config App) commits: ours moves.
        other = sqlite3.connect(db_path, isolation_level=None)
        other.execute("INSERT INTO commands (device_uuid, command_type) VALUES ('d', 'ping')")
        other.close()
        assert data_version(db) != v_writer
        assert data_version(reader) != v_reader
    finally:
        reader.close()


@pytest.mark.sqlite_only  # a raw sqlite3 connection
def test_data_version_accepts_a_plain_sqlite3_connection(db, db_path):
    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        before = data_version(conn)
        with write_transaction():
            database.execute_sql("INSERT INTO device_events (device_uuid, ts, event) VALUES ('d', 1, 'online')")
        assert data_version(conn) != before
    finally:
        conn.close()


@pytest.mark.sqlite_only  # WAL and query_only (test_postgres.py: the read-only session)
def test_reader_is_independent_and_query_only(db, db_path):
    reader = open_reader(db_path)
    try:
        assert reader is not db and database.obj is db
        assert pragma(reader, "journal_mode") == "wal"  # persistent, set by the writer
        with pytest.raises(Exception, match="readonly|read-only|query_only|attempt to write"):
            reader.execute_sql("INSERT INTO device_events (device_uuid, ts, event) VALUES ('d', 1, 'x')")
    finally:
        reader.close()
