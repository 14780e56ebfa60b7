"""When the store fsyncs the write-ahead log (group commit).

Everything a commit promises waits for the next fsync that covers it
(storage/durability.py). One fsync per commit would wear the flash and
cap the rate at what the card can sync; so they are grouped: at most one
every `interval_s` (about 17 a second by default, whatever the rate; with
SQLite's own syncs in its checkpoints, about 20 in all), sooner
once `max_bytes` have been written since the last one, and at once for
what is `urgent` (a command waiting to be published: rare, and a person
is waiting). Pure: the time and the bytes written come as arguments.
"""

from __future__ import annotations


class GroupCommit:
    def __init__(self, interval_s: float, max_bytes: int) -> None:
        if interval_s < 0:
            raise ValueError(f"interval_s must be 0 or more, got {interval_s}")
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be greater than 0, got {max_bytes}")
        self.interval_s = interval_s
        self.max_bytes = max_bytes
        self.last_sync_at = float("-inf")
        self.bytes_at_sync: int | None = None

    def due_at(self, now: float, waiting: bool, urgent: bool, written: int | None) -> float | None:
        """When to sync next: None with nothing waiting, `now` to sync at once.
        `written` is a running count of bytes written (None if unknown)."""
        if not waiting:
            return None
        if urgent or self.interval_s == 0:
            return now
        if written is not None and self.bytes_at_sync is not None and written - self.bytes_at_sync >= self.max_bytes:
            return now
        return max(now, self.last_sync_at + self.interval_s)

    def synced(self, started_at: float, written: int | None) -> None:
        """A sync that started at `started_at` (with `written` bytes by then) is done."""
        self.last_sync_at = started_at
        self.bytes_at_sync = written
