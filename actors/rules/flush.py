"""When the telemetry buffer goes to the writer.

While the writer is idle, anything buffered goes at once (lowest latency at
low rates). While it is busy, rows collect into full batches (highest
throughput under load), but none waits longer than `max_age_s` once the
writer frees up, and at most `max_queued` batches wait at the writer.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FlushPolicy:
    batch_rows: int
    max_age_s: float
    max_queued: int = 1

    def should_flush(self, now: float, rows: int, items: int, oldest_at: float | None, in_writer: int) -> bool:
        if items == 0:
            return False
        if in_writer == 0:
            return True
        if in_writer > self.max_queued:
            return False
        if rows >= self.batch_rows:
            return True
        return oldest_at is not None and now - oldest_at >= self.max_age_s

    def next_check(self, oldest_at: float | None) -> float | None:
        return None if oldest_at is None else oldest_at + self.max_age_s
