"""DbWriter: the store process's only write connection.

A batch (telemetry rows and device writes together) is one transaction;
once it commits, the tokens of every message it holds (and the command
publications its writes carry) go to the Syncer, which hands them to core
once an fsync has made the commit durable (actors/syncer.py); core then
acknowledges them to the broker. If the Config App holds the lock past the
busy timeout the whole batch is retried: nothing is acknowledged meanwhile.

A full disk is back-pressure too (actors/rules/stall.py), and so is a
PostgreSQL server that cannot be reached (restarting, or the network cut
the connection; a new one is opened at the next attempt): the batch and
every one after it wait, in order, unacknowledged, while the writer retries
with a growing pause through the Scheduler (so it still answers
inspection); core stops reading once `max_unacked` messages wait, the
broker holds the rest, and the store tells core (`StoreHealth`) so that
the gateway status says it. When space returns, it catches up without a
restart.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any

from actors.base import GatewayActor
from actors.fencing import NOT_OWNED
from actors.messages import (
    ClaimCommands,
    ClaimDeferred,
    CommandsRequested,
    CommandState,
    Committed,
    Deadline,
    DeviceWrite,
    Schedule,
    StoreHealth,
    TransitionRefused,
    WriteBatch,
    WhenDurable,
    WriterDone,
)
from actors.rules.histogram import Histogram
from actors.rules.stall import DISK_FULL, UNREACHABLE, Stall
from actors.settings import GatewaySettings
from protocol.buckets import bucket_of
from protocol.dialects import parse_dialect, parse_encoding
from protocol.lifecycle import Owner, owned_by
from protocol.values import Publication
from storage import commands as command_repo
from storage import devices as device_repo
from storage import events as event_repo
from storage import leases
from storage import telemetry as telemetry_repo
from storage.errors import DatabaseGone
from storage.db import (
    DatabaseBusy,
    DatabaseFull,
    WriteWaits,
    database,
    describe_location,
    free_disk_bytes,
    unstorable_errors,
    timed_write_transaction,
    write_transaction,
)

logger = logging.getLogger("autocore.db")

BUSY_RETRY_S = 0.2

# Errors that say "this value cannot be stored", not "the database is in
# trouble" (an I/O error still stops the writer, a full disk stalls it:
# either way nothing is acknowledged that was not stored).
UNSTORABLE = unstorable_errors()


def _mb(n: int | None) -> float | None:
    return None if n is None else round(n / 1048576, 1)


def command_state(record: command_repo.CommandRecord, settings: GatewaySettings) -> CommandState:
    """A `commands` row as core's device logic holds it, the gateway's
    defaults filled in where the row leaves them NULL."""
    spec = command_repo.to_spec(record, settings.command_timeout_s, default_ttl=settings.command_ttl_s,
                                default_max_attempts=settings.command_max_attempts)
    return CommandState(spec, record.status, record.attempts or 0, record.sent_at)


class DbWriter(GatewayActor):
    name = "DbWriter"
    process = "store"

    def __init__(self, settings: GatewaySettings, channel: Any, batcher: Any = None, scheduler: Any = None,
                 syncer: Any = None) -> None:
        super().__init__()
        self.settings = settings
        self.channel = channel
        self.syncer = syncer  # releases what a commit promises once it is durable (actors/syncer.py)
        self.batcher = batcher
        self.scheduler = scheduler
        self.stall = Stall()
        self.waiting: deque[WriteBatch] = deque()  # in order, while the disk is full
        self.commit_ms_last = 0.0
        self.commit_ms_max = 0.0
        self.commit_ms_total = 0.0
        self.commit_hist = Histogram()  # every transaction, whole, since start
        # Of each transaction, the time spent waiting at BEGIN (the write
        # lock) and in COMMIT, plus any busy retry: what checkpoints and
        # other programs cost the commit path (issue 11: p99 <= 20 ms).
        self.stall_hist = Histogram()
        self.batches = 0
        self.rows_inserted = 0
        self.rows_repeated = 0
        self._fences: dict[tuple[int, int], bool] = {}  # (bucket, epoch) -> held, within one transaction

    def on_stop(self) -> None:
        if not database.is_closed():
            database.close()  # this thread's connection

    def handle(self, message: Any) -> Any:
        if isinstance(message, WriteBatch):
            self.waiting.append(message)
            if not self.stall.stalled:
                self._write_waiting()
        elif isinstance(message, Deadline):
            self._write_waiting()
        elif isinstance(message, ClaimCommands):
            self._claim(message.ids, message.feed, message.fences)
        else:
            return super().handle(message)
        return None

    # -- a full disk -------------------------------------------------------

    def _write_waiting(self) -> None:
        """Write the waiting batches in order; on a full disk, leave them
        waiting and come back later."""
        while self.waiting:
            try:
                self._write(self.waiting[0])
            except (DatabaseFull, DatabaseGone) as exc:
                gone = isinstance(exc, DatabaseGone)
                self.counters["database_gone" if gone else "disk_full"] += 1
                now = time.time()
                first = not self.stall.stalled
                report = self.stall.failed(now, str(exc), len(self.waiting), UNREACHABLE if gone else DISK_FULL)
                if report.log:
                    logger.error("%s", report.log)
                if first:
                    self._tell_core(now)
                if self.scheduler is not None:
                    self.scheduler.tell(Schedule("writer-retry", report.retry_at, self.actor_ref))
                return
            self.waiting.popleft()
            line = self.stall.recovered(time.time())
            if line:
                logger.warning("%s", line)
                self._tell_core(time.time())

    def _tell_core(self, now: float) -> None:
        self.channel.send(StoreHealth(self.stall.state, self.stall.reason, self.stall.since, free_disk_bytes(self.settings.database)))

    # -- batches -----------------------------------------------------------

    def _write(self, batch: WriteBatch) -> None:
        refused: list[TransitionRefused] = []
        publish: list[tuple[int | None, Publication]] = []
        started = time.perf_counter()
        waits = WriteWaits()
        retried_s = 0.0  # attempts the Config App's lock outlasted
        salvage = False
        while True:
            attempt = time.perf_counter()
            try:
                refused.clear()
                publish.clear()
                self._fences.clear()
                with timed_write_transaction(waits):
                    if salvage:
                        inserted = self._write_item_by_item(batch, refused, publish)
                    else:
                        seen: list = []
                        rows = list(batch.rows)
                        for write in batch.writes:
                            self._apply(write, refused, seen, rows, publish)
                        device_repo.touch_last_seen(seen)
                        inserted = telemetry_repo.insert_rows(database, rows)
                break
            except DatabaseBusy:
                self.counters["busy_retries"] += 1
                logger.warning("the database stayed locked by another program; retrying the batch")
                time.sleep(BUSY_RETRY_S)
                retried_s += time.perf_counter() - attempt
            except UNSTORABLE as exc:
                # One value no column can hold (e.g. an integer past SQLite's
                # 64 bits from a device) used to kill this actor, and with it
                # storage for every device. Store the batch again item by
                # item, leaving out (and counting) only what cannot be stored.
                if salvage:
                    raise
                salvage = True
                self.counters["batches_salvaged"] += 1
                logger.error("a batch could not be stored (%s: %s); storing it item by item", type(exc).__name__, exc)
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        self.batches += 1
        self.commit_ms_last = elapsed_ms
        self.commit_ms_max = max(self.commit_ms_max, elapsed_ms)
        self.commit_ms_total += elapsed_ms
        self.commit_hist.observe(elapsed_ms)
        self.stall_hist.observe((waits.stall_s + retried_s) * 1000.0)
        self.rows_inserted += inserted
        offered = len(batch.rows) + sum(len(w.rows) for w in batch.writes)
        self.rows_repeated += max(offered - inserted, 0)
        publications = tuple(p for _, p in publish)
        promised: tuple = ((Committed(batch.tokens, publications),) if batch.tokens or publish else ()) + tuple(refused)
        if promised:
            # Acknowledged, published, told only once durable (actors/syncer.py);
            # a command to publish is synced at once.
            if self.syncer is not None:
                self.syncer.tell(WhenDurable(promised, urgent=any(c is not None for c, _ in publish)))
            else:
                for m in promised:
                    self.channel.send(m)
        if self.batcher is not None:
            self.batcher.tell(WriterDone(len(batch.rows)))

    def _write_item_by_item(self, batch: WriteBatch, refused: list[TransitionRefused],
                            publish: list[tuple[int | None, Publication]]) -> int:
        """Each row and each device write in its own savepoint; the ones that
        cannot be stored are left out. Their messages are acknowledged all
        the same: sent again, they could never be stored either."""
        inserted = 0
        for row in batch.rows:
            try:
                with database.atomic():
                    inserted += telemetry_repo.insert_rows(database, [row])
            except UNSTORABLE as exc:
                self.counters["unstorable_rows"] += 1
                logger.error("left out a telemetry row of %s that cannot be stored: %s: %s", row[0], type(exc).__name__, exc)
        for write in batch.writes:
            refused_here: list[TransitionRefused] = []
            publish_here: list[tuple[int | None, Publication]] = []
            try:
                with database.atomic():
                    self._apply(write, refused_here, publish=publish_here)
            except UNSTORABLE as exc:
                self.counters["unstorable_writes"] += 1
                logger.error("left out a state change of %s that cannot be stored: %s: %s", write.uuid, type(exc).__name__, exc)
            else:
                refused.extend(refused_here)
                publish.extend(publish_here)
        return inserted

    def _apply(self, w: DeviceWrite, refused: list[TransitionRefused], seen: list | None = None,
               rows: list | None = None, publish: list[tuple[int | None, Publication]] | None = None) -> None:
        """One device's changes. Given `seen` and `rows`, its bare last_seen
        refresh and its telemetry rows join the batch's (written at once).
        Its command publications join `publish` where the store took the
        command's transition (a fenced or refused one never goes out)."""
        uuid, at = w.uuid, w.at
        if w.epoch is not None and not self._holds(uuid, w.epoch):
            # Several instances: decided by an instance that no longer holds
            # the device's lease (or never did). Its state changes and
            # command transitions are the owner's to make; its rows and its
            # last sign of life are facts any instance stores.
            if w.last_seen is not None:
                if seen is not None:
                    seen.append((uuid, w.last_seen))
                else:
                    device_repo.touch_last_seen([(uuid, w.last_seen)])
            if w.rows and rows is not None:
                rows.extend(w.rows)
            elif w.rows:
                telemetry_repo.insert_rows(database, w.rows)
            if w.publish:
                self.counters["publications_fenced"] += len(w.publish)
            return
        # A device's first announce is the writes of thousands of devices at
        # once after a restart; each statement costs the store about a
        # millisecond (most of it peewee building the SQL), so none is
        # spent twice: upsert_facts creates a missing row and takes the
        # status, and the row is read only for what the write lacks.
        if w.ensure and (w.facts is None or w.discovery is not None):
            device_repo.ensure_device(uuid, at, w.ensure)
        if w.discovery is not None:
            device_repo.register_discovered(uuid, w.discovery, at)
        status = w.status if w.status is not None else ("online" if w.boot_id is not None else None)
        if w.facts is not None:
            protocol, encoding = w.protocol or w.ensure, w.encoding
            if protocol is None or encoding is None:
                record = device_repo.get_device(uuid)
                protocol = protocol or parse_dialect(record.protocol if record else None)
                encoding = encoding or parse_encoding(record.encoding if record else None)
            together = status is not None and (w.boot_id is None or w.boot_id == w.facts.boot_id)
            device_repo.upsert_facts(uuid, w.facts, at, protocol, encoding, status=status if together else None)
            if together:
                status = None
        elif w.protocol:
            device_repo.set_protocol(uuid, w.protocol)
        if status is not None:
            device_repo.set_status(uuid, status, at, w.boot_id)
        if w.encoding and w.facts is None:
            device_repo.set_encoding(uuid, w.encoding)
        if w.last_seen is not None and w.status is None:
            if seen is not None:
                seen.append((uuid, w.last_seen))
            else:
                device_repo.touch_last_seen([(uuid, w.last_seen)])
        if w.events:
            event_repo.append_events((uuid, ts, event, detail) for ts, event, detail in w.events)
        refused_ids: set[int] = set()
        for t in w.transitions:
            # Core's device logic owns every state after queued; the others
            # are the client's and the store's own (protocol/lifecycle.py).
            ok = owned_by(t.status, Owner.DEVICE) and command_repo.transition(
                t.command_id, t.status, at, attempts=t.attempts, result=t.result, error_message=t.error_message)
            if not ok:
                refused_ids.add(t.command_id)
                current = command_repo.get_command(t.command_id)
                refused.append(TransitionRefused(uuid, t.command_id, t.status, current.status if current else None))
                self.counters["transitions_refused"] += 1
        if w.rows and rows is not None:
            rows.extend(w.rows)
        elif w.rows:
            telemetry_repo.insert_rows(database, w.rows)
        for command_id, publication in w.publish:
            if command_id is not None and command_id in refused_ids:
                self.counters["publications_refused"] += 1
            elif publish is not None:
                publish.append((command_id, publication))

    def _holds(self, uuid: str, epoch: int) -> bool:
        """Whether this instance still holds the lease the write was decided
        under; asked once per bucket and epoch per transaction."""
        if epoch == NOT_OWNED:
            self.counters["writes_not_owned"] += 1
            return False
        key = (bucket_of(uuid, self.settings.lease_buckets), epoch)
        held = self._fences.get(key)
        if held is None:
            held = self._fences[key] = leases.holds(key[0], self.settings.instance_id, epoch)
        if not held:
            self.counters["writes_fenced"] += 1
        return held

    # -- commands --------------------------------------------------------

    def _claim(self, ids: tuple[int, ...], feed: Any = None,
               fences: tuple[tuple[int, int, int], ...] | None = None) -> None:
        s = self.settings
        try:
            if fences is None:
                records = command_repo.claim(ids, time.time(), default_ttl_s=s.command_ttl_s)
            else:
                # Several instances: only rows of devices whose lease this
                # instance still holds, checked in the claim's transaction.
                with write_transaction():
                    held: dict[tuple[int, int], bool] = {}
                    mine = []
                    for command_id, bucket, epoch in fences:
                        if (bucket, epoch) not in held:
                            held[bucket, epoch] = leases.holds(bucket, s.instance_id, epoch)
                        if held[bucket, epoch]:
                            mine.append(command_id)
                        else:
                            self.counters["claims_fenced"] += 1
                    records = command_repo.claim(mine, time.time(), default_ttl_s=s.command_ttl_s)
        except (DatabaseBusy, DatabaseFull, DatabaseGone):
            self.counters["claims_deferred"] += 1
            if feed is not None:
                feed.tell(ClaimDeferred())  # the feed asks again on its next poll
            return
        if records:
            self.counters["commands_claimed"] += len(records)
            self.channel.send(CommandsRequested(tuple(command_state(r, s) for r in records)))

    # -- inspection ----------------------------------------------------------

    def summary(self) -> str:
        if self.stall.stalled:
            return f"DISK FULL for {time.time() - (self.stall.since or time.time()):.0f} s, {len(self.waiting)} batches waiting"
        return f"{self.batches} batches, last commit {self.commit_ms_last:.1f} ms"

    def state(self) -> dict:
        now = time.time()
        return {
            "store": self.stall.snapshot(now) | {"waiting_batches": len(self.waiting),
                                                 "waiting_rows": sum(len(b.rows) for b in self.waiting),
                                                 "disk_free_mb": _mb(free_disk_bytes(self.settings.database))},
            "batches": self.batches,
            "rows_inserted": self.rows_inserted,
            "rows_repeated": self.rows_repeated,
            "commit_ms": {
                "last": round(self.commit_ms_last, 2),
                "max": round(self.commit_ms_max, 2),
                "mean": round(self.commit_ms_total / self.batches, 2) if self.batches else 0.0,
                "histogram": self.commit_hist.snapshot(),
            },
            "stall_ms": {"histogram": self.stall_hist.snapshot()},
            "db_path": describe_location(self.settings.database)[1],
            "db_engine": describe_location(self.settings.database)[0],
        }
