"""The storage errors both engines raise (storage/db.py for SQLite,
storage/postgres.py for PostgreSQL), and how SQLite's errors become them,
in a module of their own: neither engine module imports the other to name
them, and the modules that call sqlite3 themselves (storage/config_app.py)
need not import storage/db.py, which opens them."""

from __future__ import annotations

import errno
import sqlite3
from contextlib import contextmanager
from typing import Iterator

import peewee


class DatabaseBusy(peewee.OperationalError):
    """Another connection held the lock for longer than busy_timeout.

    The transaction has been rolled back; retrying it later is safe.
    A subclass of peewee's OperationalError so generic handlers still match.
    """


class DatabaseFull(peewee.OperationalError):
    """No room to write: the file system is full (SQLITE_FULL, ENOSPC).

    Like `DatabaseBusy`, back-pressure rather than a fault: the transaction
    has been rolled back, nothing it held is stored (so nothing of it may be
    acknowledged), and it can be retried once space returns.
    """


class DatabaseGone(peewee.OperationalError):
    """The connection to the database server was lost or cannot be made
    (PostgreSQL restarted, the network cut it): back-pressure like a full
    disk. The transaction is gone and nothing it held is stored; the broken
    connection is closed at its next use and a new one opened
    (storage/postgres.py), so retrying later is safe."""


# Primary result codes meaning "someone else holds a lock".
_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6
# ... and "no room": the disk (or max_page_count) is full.
_SQLITE_FULL = 13


def is_busy_error(exc: BaseException) -> bool:
    """True if `exc` (sqlite3 or peewee) says the database was locked."""
    for candidate in (exc, *exc.args[:1]):
        code = getattr(candidate, "sqlite_errorcode", None)
        if code is not None:
            return code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)
    text = str(exc)
    return "database is locked" in text or "database table is locked" in text


def is_full_error(exc: BaseException) -> bool:
    """True if `exc` (sqlite3, peewee or OSError) says there was no room."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return True
    for candidate in (exc, *exc.args[:1]):
        code = getattr(candidate, "sqlite_errorcode", None)
        if code is not None:
            return code & 0xFF == _SQLITE_FULL
    text = str(exc)
    return "database or disk is full" in text or "No space left on device" in text


@contextmanager
def sqlite_errors() -> Iterator[None]:
    """Turn a lock time-out into `DatabaseBusy` and a full disk into
    `DatabaseFull` (for raw sqlite3 calls; the peewee ones pass through
    `GatewayDatabase`, which does the same)."""
    try:
        yield
    except (sqlite3.OperationalError, peewee.OperationalError, OSError) as exc:
        if isinstance(exc, (DatabaseBusy, DatabaseFull)):
            raise
        if is_full_error(exc):
            raise DatabaseFull(str(exc)) from exc
        if isinstance(exc, OSError) or not is_busy_error(exc):
            raise
        raise DatabaseBusy(str(exc)) from exc
