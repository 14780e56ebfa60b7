"""When the telemetry buffer goes to the writer.

While the writer is idle, a batch of at least `small_rows` rows goes at
once; a smaller one waits until `min_interval_s` has passed since the
previous batch (`AUTOCORE_BATCH_SMALL_ROWS`, 64, and
`AUTOCORE_BATCH_MIN_INTERVAL_MS`, 50), and never longer than
`max_age_s`. That bounds what a tiny commit costs
the disk (issue 11): every commit writes whole pages into the write-ahead
log (the table's last page, each device's index pages, the commit frame),
so a commit of one message writes about as much as a commit of ten.
Measured (`make bench`, live, 100 devices, 3 readings a message): at 100
messages/s, commits of about one message wrote 6.1 kB per reading, batches
of 50 ms 2.5 kB; at 1,000/s, 4.8 kB against 3.7-3.9 kB; a busy gateway's
batches are large anyway. The wait costs a quiet gateway up to
`min_interval_s` of latency, never a loaded one.

While the writer is busy, rows collect into full batches (highest
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
    min_interval_s: float = 0.0
    small_rows: int = 0  # a batch of fewer rows waits for min_interval_s (0: every batch does)

    def should_flush(self, now: float, rows: int, items: int, oldest_at: float | None, in_writer: int,
                     last_flush_at: float | None = None) -> bool:
        if items == 0:
            return False
        if in_writer == 0:
            # (a microsecond's slack: woken at exactly last + interval, the
            # float difference may fall a hair short, and nothing would wake
            # an idle writer's batcher again)
            # (nothing waits past max_age_s either: the interval never
            # holds a row longer than the age rule promises)
            return (rows >= self.batch_rows or (self.small_rows and rows >= self.small_rows)
                    or last_flush_at is None or now - last_flush_at >= self.min_interval_s - 1e-6
                    or (oldest_at is not None and now - oldest_at >= self.max_age_s - 1e-6))
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
