"""Retention: keeps the telemetry table within its age and size limits,
and the disk within its free-space reserve.

An actor of the store process. Every `interval_s` it prunes telemetry whose
`ts` is older than `AUTOCORE_RETENTION_DAYS`, then, while the database uses
more than `AUTOCORE_DB_MAX_MB`, the oldest stored rows, so a vehicle's SD
card never fills. Every `reserve_check_s` it also looks at the free space of
the database's file system (actors/rules/reserve.py): below
`AUTOCORE_DB_RESERVE_MB` it prunes the oldest telemetry until the database
has room inside itself again, says so in the log and as an event of the
gateway (`disk_reserve`), before the disk fills.

Ingest must never stall for it. SQLite has one write lock, so every delete
is a short transaction of its own (`batch` rows by primary key, a few
milliseconds) and the actor pauses between two of them (`pause_s`, or twice
the last delete's time if longer), through the Scheduler: the DbWriter's
next BEGIN IMMEDIATE waits at most about one small delete, and snapshots
are answered between batches. A backlog of old rows (retention turned on
for a full card) thus drains at several thousand rows a second without
holding up ingest. Finding the rows is
done by plain reads, which in WAL mode take no lock.

With the fleet uplink on (issue 14), rows the fleet broker has not yet
acknowledged are kept: age pruning skips them, and size and reserve
pruning take acknowledged rows first (oldest first) and unsent ones only
when nothing else is left, oldest first, counted as `dropped_unsent`, logged
and recorded as an `uplink_dropped_unsent` event of the gateway once per run.

Finding old rows without an index on `ts` (one would slow every insert):
rows are stored in id order, and `received_at` grows with the id, so the
rows received before the cutoff are a prefix of the table. A run walks that
prefix a window of ids at a time, deleting the rows among them whose `ts` is
old, and stops at the first window received wholly after the cutoff. A
reading a device replayed long after taking it (old `ts`, new
`received_at`) is thus pruned at the latest `retention_days` after it was
received, and a run costs what there is to delete plus one window.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from actors.base import GatewayActor
from actors.rules.acked import AckedRanges
from actors.messages import Deadline, Schedule
from actors.rules.reserve import Reserve
from actors.settings import GatewaySettings
from storage import events as event_repo
from storage import prune
from storage import uplink as uplink_repo
from storage.db import DatabaseBusy, database, database_errors, free_disk_bytes

logger = logging.getLogger("autocore.retention")

DAY_S = 86400.0
MB = 1024 * 1024
RESERVE_KEY = "retention-reserve"
DB_ERRORS = database_errors()


class Retention(GatewayActor):
    name = "Retention"
    process = "store"

    def __init__(
        self,
        settings: GatewaySettings,
        scheduler: Any,
        *,
        first_delay_s: float | None = None,
        interval_s: float | None = None,
        batch: int = 500,
        pause_s: float = 0.05,
        reserve_check_s: float = 1.0,
        reserve_batch: int = 5000,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.reserve = Reserve(int(float(getattr(settings, "db_reserve_mb", 0.0)) * MB))
        self.reserve_check_s = reserve_check_s
        self.reserve_batch = reserve_batch
        self.days = float(settings.retention_days)
        self.max_bytes = int(float(settings.db_max_mb) * MB)
        self.scheduler = scheduler
        # AUTOCORE_RETENTION_INTERVAL_S (the arguments win: tests)
        self.interval_s = float(interval_s if interval_s is not None
                                else getattr(settings, "retention_interval_s", 60.0))
        self.first_delay_s = float(first_delay_s if first_delay_s is not None else min(5.0, self.interval_s))
        self.batch = batch
        self.pause_s = pause_s
        # the run in progress: phase "age" then "size"; None between runs
        self.phase: str | None = None
        self.cutoff: float | None = None
        self.after_id = 0
        self.run_started: float | None = None
        self.run_pruned = 0
        self.next_run_at: float | None = None
        # what the Inspector shows
        self.runs = 0
        self.pruned_age = 0
        self.pruned_size = 0
        self.batches = 0
        self.busy = 0
        self.batch_ms_max = 0.0
        self.last_batch_s = 0.0
        self.last_run: dict | None = None
        self.used_bytes: int | None = None
        self.over_limit_without_telemetry = False
        # the fleet uplink: what it has not sent is kept as long as possible
        self.uplink = bool(getattr(settings, "uplink_url", None))
        self.dropped_unsent = 0
        self.run_dropped = 0

    @property
    def enabled(self) -> bool:
        return self.days > 0 or self.max_bytes > 0

    def on_start(self) -> None:
        if self.max_bytes > 0 and not prune.size_limit_applies():
            logger.warning("AUTOCORE_DB_MAX_MB is ignored: this database cannot tell a size its deletes shrink "
                           "(a PostgreSQL server's disk is its own; AUTOCORE_RETENTION_DAYS still applies)")
            self.max_bytes = 0
        if self.enabled:
            self._wake(time.time() + self.first_delay_s)
        if self.reserve.enabled:
            self.scheduler.tell(Schedule(RESERVE_KEY, time.time(), self.actor_ref))

    def on_stop(self) -> None:
        if database.obj is not None and not database.is_closed():
            database.close()  # this thread's connection

    def _wake(self, at: float) -> None:
        self.next_run_at = at
        self.scheduler.tell(Schedule("retention", at, self.actor_ref))

    def handle(self, message: Any) -> Any:
        if isinstance(message, Deadline) and message.key == RESERVE_KEY:
            at = self.reserve_step(time.time())
            self.scheduler.tell(Schedule(RESERVE_KEY, at, self.actor_ref))
            return None
        if isinstance(message, Deadline):
            self.step(time.time())
            return None
        return super().handle(message)

    # -- the free-space reserve ------------------------------------------------

    def reserve_step(self, now: float) -> float:
        """Check the reserve; prune one batch if short. Returns when to
        check again (soon while short)."""
        disk_free = free_disk_bytes(self.settings.database)
        if disk_free is None:
            return now + self.reserve_check_s
        try:
            check = self.reserve.check(now, disk_free, prune.reusable_bytes())
            if check.started:
                logger.warning("free space on the database's disk is %.1f MB, below the reserve of %.0f MB: "
                               "pruning the oldest telemetry so the database stops growing",
                               disk_free / MB, self.reserve.reserve_bytes / MB)
                self._reserve_event(now, "short", disk_free)
            if check.ended:
                self._report_dropped(now)
                logger.info("free space is back above the reserve (%d telemetry rows pruned for it)",
                            self.reserve.pruned_this_shortage)
                self._reserve_event(now, "restored", disk_free)
            if not check.deficit:
                return now + self.reserve_check_s
            ids, unsent = self._oldest(self.reserve_batch)
            if not ids:
                self.counters["reserve_nothing_to_prune"] += 1
                return now + self.reserve_check_s
            removed = self._delete(ids)
            self._count_unsent(unsent, removed, now)
            self.reserve.pruned_rows(removed)
            self.counters["pruned_for_reserve"] += removed
        except DatabaseBusy:
            self.counters["busy"] += 1
        except DB_ERRORS as exc:  # a full disk included: try again later
            self.counters["errors"] += 1
            logger.error("pruning for the free-space reserve failed: %s: %s", type(exc).__name__, exc)
            return now + self.reserve_check_s
        return time.time() + self._pause()

    def _reserve_event(self, now: float, what: str, disk_free: int) -> None:
        detail = {"state": what, "disk_free_mb": round(disk_free / MB, 1),
                  "reserve_mb": round(self.reserve.reserve_bytes / MB, 1),
                  "pruned": self.reserve.pruned_this_shortage}
        try:
            event_repo.append_events([(self.settings.gateway_id, now, "disk_reserve", detail)])
        except DB_ERRORS as exc:
            logger.error("could not record the disk_reserve event: %s", exc)

    # -- one step: at most one delete transaction ---------------------------

    def step(self, now: float) -> bool:
        """Do one batch of the current run (starting a run if none is in
        progress); schedule the next step. True if the run has more to do."""
        if self.phase is None:
            self._begin(now)
        try:
            more = self._age_step() if self.phase == "age" else self._size_step()
        except DatabaseBusy:
            # The Config App holds the lock: try again after a pause.
            self.busy += 1
            self.counters["busy"] += 1
            self._wake(time.time() + max(self.pause_s, 1.0))
            return True
        except DB_ERRORS as exc:
            # A damaged or missing table, a full disk: give this run up, log
            # it, and try again at the next interval rather than stop pruning.
            self.counters["errors"] += 1
            logger.error("retention run failed: %s: %s", type(exc).__name__, exc)
            self.phase = None
            self._wake(time.time() + self.interval_s)
            return False
        if not more and self.phase == "age" and self.max_bytes > 0:
            self.phase, more = "size", True
        if more:
            self._wake(time.time() + self._pause())
            return True
        self._finish(time.time())
        return False

    def _pause(self) -> float:
        """Between two deletes, at least `pause_s` and twice the last
        delete's time: a writer that found the lock taken sleeps in SQLite's
        busy handler in growing steps, and must find it free when it wakes."""
        return max(self.pause_s, 2.0 * self.last_batch_s)

    # -- the fleet uplink's rows ----------------------------------------------

    def _acked(self) -> AckedRanges | None:
        """The telemetry ids the fleet broker has acknowledged (None: the
        uplink is off, every row may go)."""
        if not self.uplink:
            return None
        return AckedRanges.from_pairs(uplink_repo.load_cursor().get("telemetry", []))

    def _oldest(self, limit: int) -> tuple[list[int], bool]:
        """Up to `limit` ids to delete for size: acknowledged rows first;
        the oldest unsent only when none is left. (ids, unsent?)"""
        acked = self._acked()
        if acked is not None:
            ids = uplink_repo.prunable_telemetry(acked.to_pairs(), limit)
            if ids:
                return ids, False
        ids = prune.oldest_ids(limit)
        return ids, acked is not None

    def _count_unsent(self, unsent: bool, removed: int, now: float) -> None:
        if not unsent or not removed:
            return
        if self.run_dropped == 0:
            logger.warning("the database is over its size bounds with every uplinked row gone: deleting the oldest "
                           "rows the fleet does not have yet")
        self.dropped_unsent += removed
        self.run_dropped += removed
        self.counters["dropped_unsent"] += removed

    def _report_dropped(self, now: float) -> None:
        if not self.run_dropped:
            return
        logger.warning("%d telemetry rows were deleted before the fleet had them (%d since start)",
                       self.run_dropped, self.dropped_unsent)
        try:
            event_repo.append_events([(self.settings.gateway_id, now, "uplink_dropped_unsent",
                                       {"rows": self.run_dropped, "since_start": self.dropped_unsent})])
        except DB_ERRORS as exc:
            logger.error("could not record the uplink_dropped_unsent event: %s", exc)
        self.run_dropped = 0

    def _begin(self, now: float) -> None:
        self.phase = "age"
        self.cutoff = now - self.days * DAY_S if self.days > 0 else None
        self.after_id = 0
        self.run_started = now
        self.run_pruned = 0

    def _finish(self, now: float) -> None:
        self._report_dropped(now)
        try:
            self.used_bytes = prune.used_bytes()
        except DatabaseBusy:
            pass
        self.runs += 1
        self.last_run = {
            "at": round(self.run_started or now, 3),
            "duration_s": round(now - (self.run_started or now), 3),
            "pruned": self.run_pruned,
        }
        if self.run_pruned:
            logger.info("pruned %d telemetry rows (older than %g days or over %g MB)", self.run_pruned,
                        self.days, self.max_bytes / MB)
        self.phase = None
        self._wake(now + self.interval_s)

    def _delete(self, ids: list[int], before_ts: float | None = None) -> int:
        started = time.perf_counter()
        removed = prune.delete_rows(ids, before_ts=before_ts, copies_limit=self.batch)
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        self.batches += 1
        self.last_batch_s = elapsed_ms / 1000.0
        self.batch_ms_max = max(self.batch_ms_max, elapsed_ms)
        self.run_pruned += removed
        return removed

    def _age_step(self) -> bool:
        if self.cutoff is None:
            return False
        window = prune.age_window(self.after_id, self.cutoff, self.batch)
        if window is None:
            return False
        old = window.old_ids
        acked = self._acked() if old else None
        if acked is not None:
            old = [i for i in old if i in acked]  # age alone never drops what the fleet lacks
        if old:
            # The Config App's copies go with them, up to a batch of its
            # rows older than the cutoff per delete.
            self.pruned_age += self._delete(old, self.cutoff)
        self.after_id = window.last_id
        return window.more

    def _size_step(self) -> bool:
        if self.max_bytes <= 0:
            return False
        used = prune.used_bytes()
        self.used_bytes = used
        if used <= self.max_bytes:
            self.over_limit_without_telemetry = False
            return False
        ids, unsent = self._oldest(self.batch)
        if not ids:
            if not self.over_limit_without_telemetry:
                logger.warning("the database uses %.1f MB, over AUTOCORE_DB_MAX_MB (%g), with no telemetry left to prune",
                               used / MB, self.max_bytes / MB)
            self.over_limit_without_telemetry = True
            return False
        removed = self._delete(ids)
        self.pruned_size += removed
        self._count_unsent(unsent, removed, time.time())
        return True

    # -- inspection ----------------------------------------------------------

    def summary(self) -> str:
        if not self.enabled:
            return "off"
        doing = f"pruning ({self.phase})" if self.phase else "idle"
        return f"{doing}, {self.pruned_age + self.pruned_size} rows pruned in {self.runs} runs"

    def state(self) -> dict:
        now = time.time()
        return {
            "enabled": self.enabled,
            "retention_days": self.days,
            "db_max_mb": round(self.max_bytes / MB, 3),
            "running": self.phase is not None,
            "runs": self.runs,
            "pruned_age": self.pruned_age,
            "pruned_size": self.pruned_size,
            "batches": self.batches,
            "batch_ms_max": round(self.batch_ms_max, 2),
            "busy": self.busy,
            "last_run": self.last_run,
            "next_run_in_s": None if self.next_run_at is None or self.phase else round(self.next_run_at - now, 1),
            "db_used_mb": None if self.used_bytes is None else round(self.used_bytes / MB, 2),
            "over_limit_without_telemetry": self.over_limit_without_telemetry,
            "reserve": self.reserve.snapshot(now),
            "uplink_first": self.uplink,
            "dropped_unsent": self.dropped_unsent,
        }
