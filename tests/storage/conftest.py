"""Every storage test gets a real SQLite file in its own tmp_path."""

from __future__ import annotations

import sqlite3
import threading
import time
from contextlib import contextmanager

import pytest

from storage import migrations
from storage.db import close_database, open_database


@pytest.fixture
def db_path(tmp_path):
    return str(tmp_path / "var" / "autocore.db")


@pytest.fixture
def db(db_path):
    database = open_database(db_path)
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
