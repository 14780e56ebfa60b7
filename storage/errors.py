"""The storage errors both engines raise (storage/db.py for SQLite,
storage/postgres.py for PostgreSQL), in a module of their own so that
neither engine module imports the other to name them."""

from __future__ import annotations

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
