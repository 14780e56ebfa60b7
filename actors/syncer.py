"""Syncer: group commit. Nothing a commit promises leaves the store before
the commit is durable against a power cut.

The DbWriter commits as it always did (`synchronous=NORMAL`: no fsync in
the commit) and hands what the commit promises to this actor: the tokens
core may acknowledge, the command publications that may now go out, the
refused transitions. The uplink hands it the newest ids it read, before it
sends those rows to the fleet, and the fleet commands it stored, before it
acknowledges them. This actor fdatasyncs the write-ahead log once for all
of them (storage/durability.py) and then delivers them, in the order they
came. The rule of when (at most one sync every `AUTOCORE_DB_SYNC_MS`,
sooner past `AUTOCORE_DB_SYNC_MAX_MB` written, at once for a command) is
actors/rules/group_commit.py.

A message that arrives while a sync runs waits for the next one: its commit
may have finished after the sync began. A failed fsync (EIO) stops this
actor, and with it the store process: the kernel may have dropped the
pages it could not write, so nothing waiting is released; the broker
redelivers it to the restarted gateway.

Where commits are durable when they return (SQLite with
`AUTOCORE_DB_SYNCHRONOUS=FULL`, PostgreSQL) or where the operator chose to
acknowledge before the sync (`AUTOCORE_DB_UNSAFE_ACK_BEFORE_SYNC`), it
delivers at once.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from actors.base import GatewayActor
from actors.messages import Deadline, Schedule, WhenDurable
from actors.rules.group_commit import GroupCommit
from actors.rules.histogram import Histogram
from actors.settings import GatewaySettings
from storage.durability import durability_report, open_log_sync

logger = logging.getLogger("autocore.db")

SYNC = "group-sync"


def written_bytes() -> int | None:
    """Bytes this process has written (all threads), from /proc/self/io;
    None where the kernel does not say."""
    try:
        with open("/proc/self/io", "rb") as f:
            for line in f:
                if line.startswith(b"wchar:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


class Syncer(GatewayActor):
    name = "Syncer"
    process = "store"

    def __init__(self, settings: GatewaySettings, channel: Any, scheduler: Any) -> None:
        super().__init__()
        self.settings = settings
        self.channel = channel
        self.scheduler = scheduler
        self.unsafe = bool(settings.db_unsafe_ack_before_sync)
        self.log_sync = None if self.unsafe else open_log_sync(settings.database, settings.db_synchronous)
        self.rule = GroupCommit(settings.db_sync_ms / 1000.0, max(1, int(settings.db_sync_max_mb * 1024 * 1024)))
        self.waiting: list[tuple[WhenDurable, float]] = []  # with when each arrived (monotonic)
        self.urgent = False
        self.scheduled_at: float | None = None
        self.syncs = 0
        self.sync_hist = Histogram()  # the fdatasync itself
        self.wait_hist = Histogram()  # a message's wait, from arriving here to its delivery
        self.sync_ms_last = 0.0
        self.sync_ms_max = 0.0

    @property
    def mode(self) -> str:
        if self.unsafe:
            return "unsafe: acknowledged before the sync"
        if self.log_sync is None:
            return "every commit durable when it returns"
        return "group commit"

    def on_start(self) -> None:
        if self.unsafe:
            logger.warning("AUTOCORE_DB_UNSAFE_ACK_BEFORE_SYNC is on: messages are acknowledged before they are "
                           "synced to disk, and a power cut loses the last ones")

    def on_stop(self) -> None:
        if self.waiting:
            self._sync()  # what the last commits promised goes out before the store stops
        if self.log_sync is not None:
            self.log_sync.close()

    def handle(self, message: Any) -> Any:
        if isinstance(message, WhenDurable):
            if self.log_sync is None:
                self._deliver(message)
                return None
            self.waiting.append((message, time.monotonic()))
            self.urgent = self.urgent or message.urgent
            self._consider(time.time())
        elif isinstance(message, Deadline):
            self.scheduled_at = None
            self._consider(time.time())
        else:
            return super().handle(message)
        return None

    def _consider(self, now: float) -> None:
        due = self.rule.due_at(now, bool(self.waiting), self.urgent, written_bytes())
        if due is None:
            return
        if due <= now:
            self._sync()
        elif self.scheduled_at is None or due < self.scheduled_at:
            self.scheduled_at = due
            self.scheduler.tell(Schedule(SYNC, due, self.actor_ref))

    def _sync(self) -> None:
        assert self.log_sync is not None
        batch = self.waiting
        self.waiting, self.urgent = [], False
        started_wall = time.time()
        written = written_bytes()
        started = time.perf_counter()
        try:
            self.log_sync.sync()
        except OSError as exc:
            logger.critical("fsync of the write-ahead log failed (%s): what it should have made durable may be "
                            "lost, so nothing waiting on it is acknowledged; the store stops", exc)
            raise
        took_ms = (time.perf_counter() - started) * 1000.0
        self.syncs += 1
        self.sync_hist.observe(took_ms)
        self.sync_ms_last = took_ms
        self.sync_ms_max = max(self.sync_ms_max, took_ms)
        self.rule.synced(started_wall, written)
        done = time.monotonic()
        for message, at in batch:
            self.wait_hist.observe((done - at) * 1000.0)
            self._deliver(message)

    def _deliver(self, message: WhenDurable) -> None:
        for m in message.messages:
            if message.reply_to is None:
                self.channel.send(m)
            else:
                try:
                    message.reply_to.tell(m)
                except Exception:  # that actor stopped meanwhile (the store is stopping)
                    self.counters["reply_to_gone"] += 1

    # -- inspection ----------------------------------------------------------

    def summary(self) -> str:
        if self.log_sync is None:
            return self.mode
        return f"{self.syncs} syncs, last {self.sync_ms_last:.1f} ms, {len(self.waiting)} waiting"

    def state(self) -> dict:
        return {
            "mode": self.mode,
            "interval_ms": self.settings.db_sync_ms,
            "max_mb": self.settings.db_sync_max_mb,
            "syncs": self.syncs,
            "waiting": len(self.waiting),
            "sync_ms": {"last": round(self.sync_ms_last, 2), "max": round(self.sync_ms_max, 2),
                        "histogram": self.sync_hist.snapshot()},
            "wait_ms": {"histogram": self.wait_hist.snapshot()},
            "database": durability_report(self.settings.database, self.settings.db_synchronous),
        }
