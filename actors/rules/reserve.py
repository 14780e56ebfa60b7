"""The free-space reserve on the database's file system.

The database file never shrinks, but rows deleted from it leave free pages
that new rows fill before the file grows. So what the gateway may still
write without taking disk space from anyone is the disk's free space plus
those free pages. While that is below the reserve (`AUTOCORE_DB_RESERVE_MB`),
the oldest telemetry is pruned, a batch at a time, until it is not: the
database stops growing before the disk fills, and the Config App, which
shares the disk, keeps room to write. Pure: the caller measures.
"""

from __future__ import annotations

from dataclasses import dataclass

MB = 1024 * 1024


@dataclass(frozen=True)
class ReserveCheck:
    deficit: int  # bytes to free inside the database (0: nothing to do)
    started: bool  # this check begins a shortage (log it, record an event)
    ended: bool  # this check ends one


class Reserve:
    def __init__(self, reserve_bytes: int) -> None:
        self.reserve_bytes = reserve_bytes
        self.short_since: float | None = None
        self.shortages = 0
        self.pruned = 0  # rows pruned for the reserve, in all
        self.pruned_this_shortage = 0
        self.disk_free: int | None = None
        self.reusable: int | None = None

    @property
    def enabled(self) -> bool:
        return self.reserve_bytes > 0

    def check(self, now: float, disk_free: int, reusable: int) -> ReserveCheck:
        self.disk_free, self.reusable = disk_free, reusable
        deficit = max(self.reserve_bytes - (disk_free + reusable), 0) if self.enabled else 0
        started = ended = False
        if deficit and self.short_since is None:
            self.short_since, started = now, True
            self.shortages += 1
            self.pruned_this_shortage = 0
        elif not deficit and self.short_since is not None:
            self.short_since, ended = None, True
        return ReserveCheck(deficit, started, ended)

    def pruned_rows(self, n: int) -> None:
        self.pruned += n
        self.pruned_this_shortage += n

    def snapshot(self, now: float) -> dict:
        return {
            "reserve_mb": round(self.reserve_bytes / MB, 1),
            "disk_free_mb": None if self.disk_free is None else round(self.disk_free / MB, 1),
            "reusable_in_db_mb": None if self.reusable is None else round(self.reusable / MB, 1),
            "short_for_s": None if self.short_since is None else round(now - self.short_since, 1),
            "shortages": self.shortages,
            "pruned_for_reserve": self.pruned,
        }
