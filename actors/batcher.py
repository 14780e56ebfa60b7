"""TelemetryBatcher: gathers what core sends into batches for the DbWriter.

While the writer is idle, whatever has arrived goes at once; while it is
busy, rows gather into batches of up to `batch_rows` (FlushPolicy). The
buffer is bounded by the inbound pipeline: core reads no more from the
broker than `max_unacked` messages ahead of what is committed.

Raw CAN frames become signal rows here, as they arrive (actors/rules/
can_rows.py), and not in core: the definitions live in the database, which
only this process reads, so a change reaches the decoder without crossing
the channel, and swapping the catalog between two messages of this actor
means no frame sees half a change; the signal rows join their message's
batch, so they commit in the same transaction as its other rows; and the
work runs beside the DbWriter's SQLite calls (which release the GIL)
rather than on core, the process that reads the broker.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

from actors.base import GatewayActor
from actors.can_feed import CanCatalogChanged
from actors.messages import Deadline, DeviceWrite, Flush, Flushed, Schedule, TelemetryRows, WriteBatch, WriterDone
from actors.rules.can_rows import CanRows
from actors.rules.flush import FlushPolicy
from actors.settings import GatewaySettings
from protocol.values import TelemetryRow

logger = logging.getLogger("autocore.can")


class TelemetryBatcher(GatewayActor):
    name = "TelemetryBatcher"
    process = "store"

    def __init__(self, settings: GatewaySettings, writer: Any, scheduler: Any, channel: Any,
                 device_types: dict[str, str | None] | None = None) -> None:
        super().__init__()
        self.can = CanRows(keep_raw=settings.can_keep_raw)
        self.device_types: dict[str, str | None] = dict(device_types or {})
        self.policy = FlushPolicy(settings.batch_rows, settings.batch_max_age_ms / 1000.0,
                                  min_interval_s=settings.batch_min_interval_ms / 1000.0,
                                  small_rows=settings.batch_small_rows)
        self.last_flush_at: float | None = None
        self.writer = writer
        self.scheduler = scheduler
        self.channel = channel
        self.rows: list[TelemetryRow | tuple] = []  # (CAN signal rows are plain tuples)
        self.writes: list[DeviceWrite] = []
        self.tokens: list[Any] = []
        self.oldest_at: float | None = None
        self.in_writer = 0
        self.urgent = False  # a write holding a command to publish waits for no batch rule
        self.flush_waiters: list[str] = []
        self.largest_batch = 0
        self._wake_at: float | None = None

    def handle(self, message: Any) -> Any:
        now = time.time()
        if isinstance(message, TelemetryRows):
            self.rows.extend(self._decode(message.rows))
            self.tokens.extend(message.tokens)
            self._arrived(now)
        elif isinstance(message, DeviceWrite):
            self._learn_type(message)
            if message.rows:
                rows = self._decode(message.rows)
                if rows is not message.rows:
                    message = dataclasses.replace(message, rows=tuple(rows))
            self.writes.append(message)
            self.tokens.extend(message.tokens)
            self._arrived(now)
            if any(command_id is not None for command_id, _ in message.publish):
                # A command waits for this write to be durable before it goes
                # out: it is not held for the batch's age or interval.
                self.urgent = True
        elif isinstance(message, WriterDone):
            self.in_writer -= 1
            if self.in_writer == 0 and self.flush_waiters and not self._items():
                for reason in self.flush_waiters:
                    self.channel.send(Flushed(reason))
                self.flush_waiters.clear()
        elif isinstance(message, Flush):
            self.flush_waiters.append(message.reason)
            if not self._items() and self.in_writer == 0:
                self.channel.send(Flushed(message.reason))
                self.flush_waiters.clear()
            else:
                self._flush(now, force=True)
            return None
        elif isinstance(message, Deadline):
            self._wake_at = None
        elif isinstance(message, CanCatalogChanged):
            self.can.set_catalog(message.catalog)
            return None
        else:
            return super().handle(message)
        self._maybe_flush(now)
        return None

    def _decode(self, rows: Any) -> Any:
        try:
            return self.can.apply(rows, self.device_types.get)
        except Exception as exc:  # a bug in decoding must not cost the message its rows
            self.counters["can_decode_errors"] += 1
            if self.counters["can_decode_errors"] == 1:
                logger.exception("CAN decoding failed (%s); the frames are stored raw", exc)
            return rows

    def _learn_type(self, write: DeviceWrite) -> None:
        """Per-type DBC files need each device's type: known at start, then
        from what devices announce."""
        facts = write.facts
        if facts is not None and facts.device_type:
            self.device_types[write.uuid] = facts.device_type
        elif write.discovery is not None and write.discovery.device_type and write.uuid not in self.device_types:
            self.device_types[write.uuid] = write.discovery.device_type

    def _items(self) -> int:
        return len(self.rows) + len(self.writes) + len(self.tokens)

    def _arrived(self, now: float) -> None:
        if self.oldest_at is None:
            self.oldest_at = now

    def _maybe_flush(self, now: float) -> None:
        if self.urgent and self.in_writer == 0:
            self._flush(now)
        elif self.policy.should_flush(now, len(self.rows), self._items(), self.oldest_at, self.in_writer,
                                    self.last_flush_at):
            self._flush(now)
        at = self.policy.next_check(self.oldest_at, self.last_flush_at, self.in_writer)
        if self.in_writer > self.policy.max_queued or (at is not None and at <= now):
            return  # WriterDone brings us back; a timer now would only spin
        if at is not None and at != self._wake_at:
            self._wake_at = at
            self.scheduler.tell(Schedule("batcher", at, self.actor_ref))

    def _flush(self, now: float, force: bool = False) -> None:
        """Everything buffered goes as one transaction. A batch may pass
        `batch_rows` by what arrived in one message: splitting it would only
        hold back the acknowledgements of the messages it holds."""
        if not self._items():
            return
        batch = WriteBatch(tuple(self.rows), tuple(self.writes), tuple(self.tokens))
        self.rows, self.writes, self.tokens = [], [], []
        self.urgent = False
        self.oldest_at = None
        self.last_flush_at = now
        self.in_writer += 1
        self.largest_batch = max(self.largest_batch, len(batch.rows))
        self.counters["batches"] += 1
        self.writer.tell(batch)

    def summary(self) -> str:
        return f"{len(self.rows)} rows buffered, {self.in_writer} at the writer"

    def state(self) -> dict:
        return {
            "buffered_rows": len(self.rows),
            "buffered_writes": len(self.writes),
            "buffered_tokens": len(self.tokens),
            "at_writer": self.in_writer,
            "batch_rows": self.policy.batch_rows,
            "max_age_ms": round(self.policy.max_age_s * 1000),
            "min_interval_ms": round(self.policy.min_interval_s * 1000),
            "small_rows": self.policy.small_rows,
            "largest_batch": self.largest_batch,
            "can": self.can.state(),
        }
