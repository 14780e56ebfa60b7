"""Pruning telemetry: the one module that deletes it, used by the store's
Retention actor (age, size and free-space reserve, a small transaction at a
time) and by `gateway db prune`.

There is no index on `ts` alone (it would slow every insert), so finding
old rows is a scan by plain reads, which in WAL mode take no lock; each
write transaction only deletes a list of ids by primary key, so the write
lock is held for one batch at a time and the writer (ours or the Config
App's) waits at most that long. Every delete takes the Config App's copies
in `telemetry_data` with it (storage/config_app.py). Call these outside a
transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from storage import config_app
from storage.db import POSTGRESQL, database, sqlite_errors, write_transaction
from storage.models import Telemetry


@dataclass(frozen=True)
class AgeWindow:
    """One window of the age walk: the ids in it whose `ts` is before the
    cutoff, the last id it covered, and whether the walk goes on."""

    old_ids: list[int]
    last_id: int
    more: bool


def oldest_ids(limit: int) -> list[int]:
    """The ids of the `limit` oldest stored rows (first stored)."""
    return [i for (i,) in Telemetry.select(Telemetry.id).order_by(Telemetry.id).limit(limit).tuples()]


def age_window(after_id: int, cutoff: float, limit: int) -> AgeWindow | None:
    """The next `limit` rows after `after_id`, for a walk that stops where
    the rows were all received after `cutoff`: rows are stored in id order
    and `received_at` grows with the id, so the rows received before the
    cutoff are a prefix of the table. None when no row is left."""
    window = list(
        Telemetry.select(Telemetry.id, Telemetry.ts, Telemetry.received_at)
        .where(Telemetry.id > after_id)
        .order_by(Telemetry.id)
        .limit(limit)
        .tuples()
    )
    if not window:
        return None
    still_old_region = any(received < cutoff for _, _, received in window)
    return AgeWindow([i for i, ts, _ in window if ts < cutoff], window[-1][0],
                     still_old_region and len(window) == limit)


def prune_older_than(cutoff_ts: float, batch: int = 5000) -> int:
    """Delete rows with `ts` before `cutoff_ts`, `batch` rows per
    transaction; return how many. It scans the whole table (resuming after
    the last id seen), so a reading replayed long after it was taken is
    found too: what the operator asks for is done at once."""
    deleted = 0
    after = 0
    while True:
        ids = [
            i
            for (i,) in Telemetry.select(Telemetry.id)
            .where((Telemetry.id > after) & (Telemetry.ts < cutoff_ts))
            .order_by(Telemetry.id)
            .limit(batch)
            .tuples()
        ]
        if not ids:
            return deleted
        deleted += delete_rows(ids, before_ts=cutoff_ts)
        if len(ids) < batch:
            return deleted
        after = ids[-1]


def delete_rows(ids: Sequence[int], *, before_ts: float | None = None, copies_limit: int | None = None) -> int:
    """Delete the telemetry rows `ids` (only those with `ts` before
    `before_ts`, if given: a row is re-checked, it may have changed) in one
    short transaction; return how many. Their copies in the Config App's
    `telemetry_data` go in the same transaction: with `before_ts`, up to
    `copies_limit` (default len(ids)) of its rows older than that; without,
    as many of its oldest rows as were deleted here."""
    with write_transaction():
        removed = 0
        if ids:
            where = Telemetry.id.in_(list(ids))
            if before_ts is not None:
                where &= Telemetry.ts < before_ts
            removed = Telemetry.delete().where(where).execute()
        conn = database.connection()
        if before_ts is not None:
            config_app.prune_older_than(conn, before_ts, len(ids) if copies_limit is None else copies_limit)
        else:
            config_app.prune_oldest(conn, removed)
    return removed


def reusable_bytes(db=None) -> int:
    """Bytes of free pages inside the database file (left by deletes):
    new rows fill these before the file grows. 0 on PostgreSQL, whose
    free space the server manages (and whose disk is not ours)."""
    target = database if db is None else db
    if target.engine == POSTGRESQL:
        return 0
    with sqlite_errors():
        page_size = target.execute_sql("PRAGMA page_size").fetchone()[0]
        free = target.execute_sql("PRAGMA freelist_count").fetchone()[0]
    return free * page_size


def used_bytes(db=None) -> int:
    """Bytes of the database file in use (free pages left by deletes are
    not counted: SQLite reuses them, so the file stops growing). On
    PostgreSQL, the size of the whole database."""
    target = database if db is None else db
    if target.engine == POSTGRESQL:
        from storage import postgres

        return postgres.used_bytes(target)
    with sqlite_errors():
        page_size = target.execute_sql("PRAGMA page_size").fetchone()[0]
        pages = target.execute_sql("PRAGMA page_count").fetchone()[0]
        free = target.execute_sql("PRAGMA freelist_count").fetchone()[0]
    return (pages - free) * page_size


def size_limit_applies(db=None) -> bool:
    """Whether `used_bytes` shrinks when rows are deleted, so that a size
    limit can be kept by pruning: SQLite counts its free pages; PostgreSQL
    gives the space back only at VACUUM, and a size limit would prune it all."""
    return (database if db is None else db).engine != POSTGRESQL


def prune_to_size(max_bytes: int, batch: int = 5000, *, max_rows: int | None = None) -> int:
    """Delete the oldest telemetry rows (lowest id, i.e. first stored)
    `batch` at a time while the database uses more than `max_bytes`;
    return how many. `max_rows` caps one call's work. The file itself does
    not shrink (no VACUUM, which would hold the lock for long): its free
    pages are reused by new rows."""
    deleted = 0
    while used_bytes() > max_bytes and (max_rows is None or deleted < max_rows):
        n = batch if max_rows is None else min(batch, max_rows - deleted)
        removed = delete_rows(oldest_ids(n))
        if removed == 0:
            break
        deleted += removed
    return deleted
