"""Making what is committed durable against a power cut.

SQLite in WAL mode with `synchronous=NORMAL` writes each commit into the
write-ahead log without an fsync: a crashed process loses nothing, but a
power cut loses whatever the kernel had not yet written to the disk
(measured: about half a second of stream per cut, FIELD-NOTES.md). One
`fdatasync` of the log makes every commit written into it before the call
durable, whichever connection made it. So the store commits as before and
releases what a commit promises (acknowledgements, command publications,
rows for the fleet) only after such a sync has covered it: group commit,
one fsync for many commits (actors/syncer.py decides when).

`synchronous=FULL` syncs inside every commit instead: nothing is left to
do here. PostgreSQL makes a commit durable before it returns as long as
`synchronous_commit` is not off (storage/postgres.py sees to that), so
there too nothing is left to do; `open_log_sync` then gives None.
"""

from __future__ import annotations

import os

from storage.url import SQLITE, parse_location


class WalSync:
    """fdatasync of one SQLite database's write-ahead log (`FILE-wal`).

    The log is opened read-only on first use and again whenever the file
    at its path is another one (SQLite deletes the log when its last
    connection closes and makes a new one on the next write). A new log's
    directory entry is synced once too, or a power cut could lose the file
    itself.

    The database file need not be synced here: SQLite's checkpoint syncs it
    after copying the log into it and before the log starts over."""

    def __init__(self, database_file: str) -> None:
        self.database_file = os.path.abspath(database_file)
        self.log_file = self.database_file + "-wal"
        self._fd: int | None = None
        self._inode: tuple[int, int] | None = None

    def sync(self) -> None:
        """Make every commit written before this call durable. An OSError
        here (EIO) means the kernel may have dropped what it could not
        write: the caller must not release anything and should stop."""
        try:
            st = os.stat(self.log_file)
        except FileNotFoundError:
            # No log: every commit is in the database file, and the
            # checkpoint that emptied the log synced it. (The database file
            # itself is never opened here: closing a descriptor of it would
            # drop every POSIX lock this process's SQLite connections hold.)
            return
        inode = (st.st_dev, st.st_ino)
        if self._fd is None or inode != self._inode:
            self.close()
            self._fd = os.open(self.log_file, os.O_RDONLY | os.O_CLOEXEC)
            self._inode = inode
            self._sync_path(os.path.dirname(self.log_file))
        os.fdatasync(self._fd)

    @staticmethod
    def _sync_path(path: str) -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            self._inode = None


def open_log_sync(location: str, synchronous: str) -> WalSync | None:
    """What makes commits durable after the fact at `location`, or None
    where every commit already is when it returns (SQLite with
    `synchronous=FULL`, PostgreSQL, an in-memory database)."""
    target = parse_location(location)
    if target.engine != SQLITE or synchronous.upper() == "FULL":
        return None
    if target.file == ":memory:" or target.file.startswith("file:"):
        return None
    return WalSync(target.file)


def sync_database_now(location: str, synchronous: str) -> None:
    """One sync at start-up: whatever an earlier process committed and a
    crash left unsynced becomes durable before this one acts on it (hands
    core the commands in flight, sends rows to the fleet)."""
    log_sync = open_log_sync(location, synchronous)
    if log_sync is None:
        return
    try:
        log_sync.sync()
    finally:
        log_sync.close()


def durability_report(location: str, synchronous: str) -> dict:
    """What makes a commit durable here, for inspection."""
    target = parse_location(location)
    if target.engine != SQLITE:
        from storage.postgres import DURABILITY

        return {"engine": target.engine, **DURABILITY}
    return {"engine": target.engine, "synchronous": synchronous.upper()}
