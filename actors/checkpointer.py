"""Checkpointer: copies the write-ahead log into the database file.

SQLite's automatic checkpoint runs inside whichever commit crosses 1000 WAL
pages and waits on fsync there: the benchmark saw live p99 latency jump from
about 30 ms to 200-440 ms every few seconds at 5k messages/s. The writer's
connection has it off; this actor runs a PASSIVE checkpoint every
`AUTOCORE_DB_CHECKPOINT_MS` on a connection of its own (it never waits for
the writer, and sqlite3 lets go of the GIL meanwhile). The log's file is cut
back to `AUTOCORE_DB_WAL_MAX_MB` by the writer itself when it starts the log
over after a complete checkpoint (`journal_size_limit`): a TRUNCATE
checkpoint here blocked commits for 100-200 ms at a time (issue 11). Only
below the free-space reserve does it still truncate, to give the disk back
at once.

A checkpoint that fails (the Config App holds a lock, the disk is full, the
WAL cannot grow) is reported, never fatal: counted, logged when failures
start and then once a minute with a count, shown in `gateway inspect`, and
tried again next round. The SQLite calls live in storage/checkpoint.py; on
PostgreSQL, which checkpoints by itself, they do nothing.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from actors.base import GatewayActor
from actors.messages import Deadline, Schedule
from actors.settings import GatewaySettings
from storage.checkpoint import open_checkpointer
from storage.db import database_errors, free_disk_bytes

logger = logging.getLogger("autocore.db")

LOG_EVERY_S = 60.0


class Checkpointer(GatewayActor):
    name = "Checkpointer"
    process = "store"

    def __init__(self, settings: GatewaySettings, scheduler: Any) -> None:
        super().__init__()
        self.path = settings.database
        self.busy_timeout_s = settings.db_busy_timeout_ms / 1000.0
        self.interval_s = settings.db_checkpoint_ms / 1000.0
        self.wal_max_bytes = int(settings.db_wal_max_mb * 1024 * 1024)
        self.settings = settings
        self.reserve_bytes = int(float(getattr(settings, "db_reserve_mb", 0.0)) * 1024 * 1024)
        self.scheduler = scheduler
        self.conn: Any = None
        self.page_size = 4096
        self.last_ms = 0.0
        self.max_ms = 0.0
        self.wal_pages = 0
        self.failing_since: float | None = None
        self.last_error: str | None = None
        self._logged_at = 0.0
        self._unlogged = 0

    def on_start(self) -> None:
        self.errors = database_errors() + (OSError,)
        self.conn = open_checkpointer(self.path, self.busy_timeout_s)
        try:
            self.page_size = self.conn.page_size()
        except self.errors as exc:
            self._failed(exc)
        self._next()

    def on_stop(self) -> None:
        if self.conn is not None:
            self.conn.close()

    def _next(self) -> None:
        self.scheduler.tell(Schedule("checkpoint", time.time() + self.interval_s, self.actor_ref))

    def handle(self, message: Any) -> Any:
        if isinstance(message, Deadline):
            try:
                self.checkpoint()
            except self.errors as exc:  # the next round tries again
                self._failed(exc)
            else:
                self._succeeded()
            self._next()
            return None
        return super().handle(message)

    def _failed(self, exc: BaseException) -> None:
        now = time.time()
        self.counters["errors"] += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        if self.failing_since is None:
            self.failing_since, self._logged_at, self._unlogged = now, now, 0
            logger.warning("checkpoint of the write-ahead log failed: %s (retrying every %.1f s)",
                           self.last_error, self.interval_s)
        elif now - self._logged_at >= LOG_EVERY_S:
            logger.warning("checkpoint still failing after %.0f s (%d more failures): %s",
                           now - self.failing_since, self._unlogged + 1, self.last_error)
            self._logged_at, self._unlogged = now, 0
        else:
            self._unlogged += 1

    def _succeeded(self) -> None:
        if self.failing_since is not None:
            logger.info("checkpoint works again after %.1f s", time.time() - self.failing_since)
            self.failing_since = None

    def checkpoint(self) -> None:
        assert self.conn is not None
        started = time.perf_counter()
        busy, log_pages, copied = self.conn.passive()
        self.counters["passive"] += 1
        self.wal_pages = max(log_pages, 0)
        if busy == 0 and log_pages > 0 and copied == log_pages and self._short_of_space():
            # Everything is copied: truncating waits only for the writer's current commit.
            self.conn.truncate()
            self.counters["truncated"] += 1
            self.wal_pages = 0
        self.last_ms = (time.perf_counter() - started) * 1000.0
        self.max_ms = max(self.max_ms, self.last_ms)

    def _short_of_space(self) -> bool:
        """Below the free-space reserve a copied WAL is truncated at once:
        its file is disk the database no longer needs."""
        if self.reserve_bytes <= 0:
            return False
        free = free_disk_bytes(self.settings.database)
        return free is not None and free < self.reserve_bytes

    def summary(self) -> str:
        return f"WAL {self.wal_pages * self.page_size / 1048576:.1f} MiB, last {self.last_ms:.1f} ms"

    def state(self) -> dict:
        return {
            "interval_ms": round(self.interval_s * 1000),
            "wal_mb": round(self.wal_pages * self.page_size / 1048576, 2),
            "wal_max_mb": round(self.wal_max_bytes / 1048576, 1),
            "checkpoint_ms": {"last": round(self.last_ms, 2), "max": round(self.max_ms, 2)},
            "failing_for_s": None if self.failing_since is None else round(time.time() - self.failing_since, 1),
            "last_error": self.last_error,
        }
