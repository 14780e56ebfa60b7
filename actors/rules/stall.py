"""When the database cannot be written because the disk is full, or (on
PostgreSQL) because its server cannot be reached.

A full disk is back-pressure, not a crash: nothing that was not stored is
acknowledged, the broker keeps the rest, and the writer tries again with a
growing pause until space returns. This rule decides when to retry and when
to say so in the log (once when it starts, then once a minute with counts,
and once when it ends), taking the time as an argument.
"""

from __future__ import annotations

from dataclasses import dataclass

OK = "ok"
DISK_FULL = "disk_full"
UNREACHABLE = "database_unreachable"  # PostgreSQL restarting, or the network cut the connection

_WHAT = {DISK_FULL: "the disk holding the database is full", UNREACHABLE: "the database server cannot be reached"}
_STILL = {DISK_FULL: "the disk holding the database is still full",
          UNREACHABLE: "the database server still cannot be reached"}
_UNTIL = {DISK_FULL: "there is room again", UNREACHABLE: "it answers again"}


@dataclass
class StallReport:
    retry_at: float
    log: str | None  # a line to log now, if any


class Stall:
    def __init__(self, first_retry_s: float = 0.5, max_retry_s: float = 15.0, log_every_s: float = 60.0) -> None:
        self.first_retry_s = first_retry_s
        self.max_retry_s = max_retry_s
        self.log_every_s = log_every_s
        self.state = OK
        self.since: float | None = None
        self.failures = 0  # failed attempts in this stall
        self.reason = ""
        self.stalls = 0  # stalls so far
        self.retry_at: float | None = None
        self._delay = first_retry_s
        self._logged_at: float | None = None
        self._failures_logged = 0

    @property
    def stalled(self) -> bool:
        return self.state != OK

    def failed(self, now: float, reason: str, waiting_batches: int, state: str = DISK_FULL) -> StallReport:
        """A write failed at `now` for want of room (DISK_FULL) or of the
        server (UNREACHABLE): when to try again, what to log."""
        log = None
        if not self.stalled:
            self.state, self.since, self.failures, self._delay = state, now, 0, self.first_retry_s
            self.stalls += 1
            self._logged_at, self._failures_logged = now, 0
            log = (f"{_WHAT[state]} ({reason}): nothing more is acknowledged until "
                   f"{_UNTIL[state]}; retrying")
        else:
            self.state = state
            self._delay = min(self._delay * 2.0, self.max_retry_s)
            if self._logged_at is not None and now - self._logged_at >= self.log_every_s:
                stalled_s = now - (self.since if self.since is not None else now)
                log = (f"{_STILL[state]} after {stalled_s:.0f} s: "
                       f"{self.failures - self._failures_logged + 1} more failed attempts, "
                       f"{waiting_batches} batches waiting ({reason})")
                self._logged_at, self._failures_logged = now, self.failures + 1
        self.failures += 1
        self.reason = reason
        self.retry_at = now + self._delay
        return StallReport(self.retry_at, log)

    def recovered(self, now: float) -> str | None:
        """A write went through: the stall (if any) is over."""
        if not self.stalled:
            return None
        line = (f"the database is writable again after {now - (self.since or now):.1f} s and "
                f"{self.failures} failed attempts: catching up")
        self.state, self.since, self.retry_at, self.reason = OK, None, None, ""
        self.failures, self._delay = 0, self.first_retry_s
        return line

    def snapshot(self, now: float) -> dict:
        return {
            "state": self.state,
            "stalled_for_s": None if self.since is None else round(now - self.since, 1),
            "failed_attempts": self.failures,
            "retry_in_s": None if self.retry_at is None else round(max(self.retry_at - now, 0.0), 2),
            "reason": self.reason or None,
            "stalls": self.stalls,
        }
