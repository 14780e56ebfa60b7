"""Every storage test runs against both engines: a real SQLite file in its
own tmp_path, and a fresh database in a throw-away PostgreSQL cluster.

Tests of what only SQLite has (WAL, PRAGMAs, its file lock, the Config
App's file, a full disk) carry `@pytest.mark.sqlite_only` and run on SQLite
alone; `db_path` (a file) exists only there. PostgreSQL's own
(test_postgres.py) carry `postgresql_only`.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from contextlib import contextmanager

import pytest

from storage import migrations
from storage.db import close_database, open_database

ENGINES = ("sqlite", "postgresql")


def pytest_generate_tests(metafunc):
    if "engine" in metafunc.fixturenames:
        if metafunc.definition.get_closest_marker("sqlite_only") is not None:
            engines: tuple[str, ...] = ("sqlite",)
        elif metafunc.definition.get_closest_marker("postgresql_only") is not None:
            engines = ("postgresql",)
        else:
            engines = ENGINES
        metafunc.parametrize("engine", engines, indirect=True)


@pytest.fixture
def engine(request):
    return request.param


@pytest.fixture
def db_path(tmp_path, engine):
    if engine != "sqlite":
        raise RuntimeError("db_path is a SQLite file: mark the test @pytest.mark.sqlite_only, or use db_url")
    return str(tmp_path / "var" / "autocore.db")


@pytest.fixture
def db_url(engine, tmp_path, request):
    """The database location for this engine: a SQLite path, or the URL of
    a fresh PostgreSQL database."""
    if engine == "sqlite":
        return str(tmp_path / "var" / "autocore.db")
    return request.getfixturevalue("pg_url")


@pytest.fixture
def db(db_url):
    database = open_database(db_url)
    migrations.migrate()
    yield database
    close_database()


@contextmanager
def lock_held_by_other_connection(path: str, seconds: float):
    """A separate sqlite3 connection (the Config App) takes the write lock
    with BEGIN IMMEDIATE in a thread, holds it `seconds`, then commits.
    The block runs once the lock is held."""
    taken = threading.Event()
    errors: list[BaseException] = []

    def hold() -> None:
        try:
            conn = sqlite3.connect(path, isolation_level=None, timeout=10)
            conn.execute("BEGIN IMMEDIATE")
            # A real write, so the commit changes data_version for others.
            conn.execute("INSERT INTO device_events (device_uuid, ts, event) VALUES ('config-app', 0, 'lock')")
            taken.set()
            time.sleep(seconds)
            conn.execute("COMMIT")
            conn.close()
        except BaseException as exc:  # surfaced by the caller
            errors.append(exc)
            taken.set()

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert taken.wait(5), "the other connection never got the lock"
    try:
        yield
    finally:
        thread.join(10)
        assert not errors, errors


class OtherProgram:
    """Another program's own connection to the same database (the Config
    App, an operator's psql): plain DB-API, autocommit, `?` placeholders
    on both engines."""

    def __init__(self, engine: str, location: str) -> None:
        self.engine = engine
        if engine == "sqlite":
            self.conn = sqlite3.connect(location, isolation_level=None, timeout=10)
        else:
            import psycopg

            self.conn = psycopg.connect(location, autocommit=True)

    def execute(self, sql: str, params: tuple = ()):
        if self.engine != "sqlite":
            sql = sql.replace("?", "%s")
        return self.conn.execute(sql, params)

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def other_program(engine, db_url, db):
    """A second program's connection to the test's database (after `db` made it)."""
    other = OtherProgram(engine, db_url)
    yield other
    other.close()
