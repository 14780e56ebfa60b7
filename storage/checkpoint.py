"""Copying SQLite's write-ahead log into the database file, on a
connection of its own (actors/checkpointer.py says when and why).

PostgreSQL checkpoints by itself, in the server: there `open_checkpointer`
gives an object with the same calls that does nothing, so the actor above
needs no idea which engine it runs on.
"""

from __future__ import annotations

import sqlite3

from storage.url import SQLITE, parse_location


class WalCheckpointer:
    def __init__(self, path: str, busy_timeout_s: float) -> None:
        self.conn = sqlite3.connect(path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False)

    def page_size(self) -> int:
        return self.conn.execute("PRAGMA page_size").fetchone()[0]

    def passive(self) -> tuple[int, int, int]:
        """(busy, pages in the log, pages copied) of a PASSIVE checkpoint,
        which never waits for the writer."""
        busy, log_pages, copied = self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return busy, log_pages, copied

    def truncate(self) -> None:
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        try:
            self.passive()  # leave little behind
        except sqlite3.Error:
            pass
        self.conn.close()


class NoCheckpointer:
    """The server's own business (PostgreSQL)."""

    def page_size(self) -> int:
        return 8192

    def passive(self) -> tuple[int, int, int]:
        return 0, 0, 0

    def truncate(self) -> None:
        pass

    def close(self) -> None:
        pass


def open_checkpointer(location: str, busy_timeout_s: float) -> WalCheckpointer | NoCheckpointer:
    target = parse_location(location)
    if target.engine != SQLITE:
        return NoCheckpointer()
    return WalCheckpointer(target.file, busy_timeout_s)
