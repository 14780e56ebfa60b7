"""When the telemetry buffer goes to the writer.

While the writer is idle, what is buffered goes at once, but no sooner than
`min_interval_s` after the previous batch (`AUTOCORE_BATCH_MIN_INTERVAL_MS`,
default 0): a bound on commits per second. Measured (make bench, live, 100
devices): it does not buy what it was meant to. At 1k messages/s, 20 ms
batches (65 readings a commit) wrote 4.2 kB per reading against 4.3 kB at
11 readings a commit, for +25 ms of latency: each device's readings land in
their own index pages, so the pages a commit writes grow with the readings
it holds. Hence off by default. While the writer is busy, rows collect into full batches
(highest throughput under load), but none waits longer than `max_age_s`
once the writer frees up, and at most `max_queued` batches wait at the
writer.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FlushPolicy:
    batch_rows: int
    max_age_s: float
    max_queued: int = 1
    min_interval_s: float = 0.0

    def should_flush(self, now: float, rows: int, items: int, oldest_at: float | None, in_writer: int,
                     last_flush_at: float | None = None) -> bool:
        if items == 0:
            return False
        if in_writer == 0:
            # (a microsecond's slack: woken at exactly last + interval, the
            # float difference may fall a hair short, and nothing would wake
            # an idle writer's batcher again)
            return (rows >= self.batch_rows or last_flush_at is None
                    or now - last_flush_at >= self.min_interval_s - 1e-6)
        if in_writer > self.max_queued:
            return False
        if rows >= self.batch_rows:
            return True
        return oldest_at is not None and now - oldest_at >= self.max_age_s

    def next_check(self, oldest_at: float | None, last_flush_at: float | None = None,
                   in_writer: int = 0) -> float | None:
        if oldest_at is None:
            return None
        at = oldest_at + self.max_age_s
        if in_writer == 0 and last_flush_at is not None:
            at = min(at, max(last_flush_at + self.min_interval_s, oldest_at))
        return at
