"""No room to write: SQLite's SQLITE_FULL (here from a page limit on a real
file) and an OSError ENOSPC both come out as `DatabaseFull`, with the
transaction rolled back, so the caller can hold back and retry."""

from __future__ import annotations

import errno

import pytest

from storage import telemetry
from storage.db import DatabaseFull, database, sqlite_errors, write_transaction
from storage.errors import is_full_error

# A full disk under a SQLite file; a PostgreSQL server's disk is not the gateway's.
pytestmark = pytest.mark.sqlite_only


def rows(n, start=0):
    return [("dev", 1, start + i, 0, 1.0, 1.0, "sensor", "x" * 200, float(i), None, None, None) for i in range(n)]


def test_a_full_database_raises_database_full_and_keeps_nothing_of_the_batch(db):
    telemetry.insert_rows(database, rows(10))
    pages = database.execute_sql("PRAGMA page_count").fetchone()[0]
    database.execute_sql(f"PRAGMA max_page_count = {pages + 2}")
    with pytest.raises(DatabaseFull):
        with write_transaction():
            telemetry.insert_rows(database, rows(5000, start=100))
    assert telemetry.count("dev") == 10  # rolled back as a whole
    database.execute_sql("PRAGMA max_page_count = 1073741823")
    assert telemetry.insert_rows(database, rows(5000, start=100)) == 5000  # and retried once there is room


def test_enospc_is_full_too():
    assert is_full_error(OSError(errno.ENOSPC, "No space left on device"))
    assert not is_full_error(OSError(errno.EACCES, "Permission denied"))
    with pytest.raises(DatabaseFull):
        with sqlite_errors():
            raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(PermissionError):
        with sqlite_errors():
            raise PermissionError(errno.EACCES, "Permission denied")
