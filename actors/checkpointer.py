"""Checkpointer: copies the write-ahead log into the database file.

SQLite's automatic checkpoint runs inside whichever commit crosses 1000 WAL
pages and waits on fsync there: the benchmark saw live p99 latency jump from
about 30 ms to 200-440 ms every few seconds at 5k messages/s. The writer's
connection has it off; this actor runs a PASSIVE checkpoint every
`AUTOCORE_DB_CHECKPOINT_MS` on a connection of its own (it never waits for
the writer, and sqlite3 lets go of the GIL meanwhile), and truncates the log
once it has grown past `AUTOCORE_DB_WAL_MAX_MB` and is fully copied.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from typing import Any

from actors.base import GatewayActor
from actors.messages import Deadline, Schedule

logger = logging.getLogger("autocore.db")


class Checkpointer(GatewayActor):
    name = "Checkpointer"
    process = "store"

    def __init__(self, settings: Any, scheduler: Any) -> None:
        super().__init__()
        self.path = settings.db_path
        self.busy_timeout_s = settings.db_busy_timeout_ms / 1000.0
        self.interval_s = settings.db_checkpoint_ms / 1000.0
        self.wal_max_bytes = int(settings.db_wal_max_mb * 1024 * 1024)
        self.scheduler = scheduler
        self.conn: sqlite3.Connection | None = None
        self.page_size = 4096
        self.last_ms = 0.0
        self.max_ms = 0.0
        self.wal_pages = 0

    def on_start(self) -> None:
        self.conn = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None,
                                    check_same_thread=False)
        self.page_size = self.conn.execute("PRAGMA page_size").fetchone()[0]
        self._next()

    def on_stop(self) -> None:
        if self.conn is not None:
            try:
                self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")  # leave little behind
            except sqlite3.Error:
                pass
            self.conn.close()

    def _next(self) -> None:
        self.scheduler.tell(Schedule("checkpoint", time.time() + self.interval_s, self.actor_ref))

    def handle(self, message: Any) -> Any:
        if isinstance(message, Deadline):
            try:
                self.checkpoint()
            except sqlite3.Error as exc:  # locked or busy: the next round tries again
                self.counters["errors"] += 1
                logger.warning("checkpoint failed: %s", exc)
            self._next()
            return None
        return super().handle(message)

    def checkpoint(self) -> None:
        assert self.conn is not None
        started = time.perf_counter()
        busy, log_pages, copied = self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        self.counters["passive"] += 1
        self.wal_pages = max(log_pages, 0)
        if busy == 0 and log_pages >= 0 and copied == log_pages and log_pages * self.page_size > self.wal_max_bytes:
            # Everything is copied: truncating waits only for the writer's current commit.
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self.counters["truncated"] += 1
            self.wal_pages = 0
        self.last_ms = (time.perf_counter() - started) * 1000.0
        self.max_ms = max(self.max_ms, self.last_ms)

    def summary(self) -> str:
        return f"WAL {self.wal_pages * self.page_size / 1048576:.1f} MiB, last {self.last_ms:.1f} ms"

    def state(self) -> dict:
        return {
            "interval_ms": round(self.interval_s * 1000),
            "wal_mb": round(self.wal_pages * self.page_size / 1048576, 2),
            "wal_max_mb": round(self.wal_max_bytes / 1048576, 1),
            "checkpoint_ms": {"last": round(self.last_ms, 2), "max": round(self.max_ms, 2)},
        }
