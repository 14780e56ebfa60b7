"""Whether one device is alive, by the rules of PROTOCOL.md "Liveness".

Pure: every method takes the time. A change is returned as a list of
`(event, detail)` pairs; the caller writes them, publishes availability and
asks to be woken at `deadline()`.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.values import DISCOVERED, OFFLINE, ONLINE

__all__ = ["DISCOVERED", "OFFLINE", "ONLINE", "Liveness", "timeout_for"]


@dataclass
class Liveness:
    status: str | None = None  # None: not in the database yet
    boot_id: int | None = None
    last_seen: float | None = None
    timeout_s: float = 15.0
    stale_wills: int = 0

    def seen(self, now: float, boot_id: int | None = None, announce: bool = False) -> list[tuple[str, dict]]:
        """A valid sign of life at `now`, optionally carrying the device's boot.
        Only an announce (sent at every boot) may move the boot backwards (a
        counter that was reset); any other message from an older boot is late."""
        events: list[tuple[str, dict]] = []
        if self.last_seen is None or now > self.last_seen:
            self.last_seen = now
        events.extend(self._boot(boot_id, announce))
        if self.status != ONLINE:
            events.append((ONLINE, {"previous": self.status}))
            self.status = ONLINE
        return events

    def _boot(self, boot_id: int | None, announce: bool = False) -> list[tuple[str, dict]]:
        if boot_id is None or boot_id == self.boot_id:
            return []
        if not announce and self.boot_id is not None and boot_id < self.boot_id:
            return []  # a late message from an earlier boot
        previous, self.boot_id = self.boot_id, boot_id
        if previous is None:
            return []
        return [("reboot", {"previous_boot_id": previous, "boot_id": boot_id})]

    def offline(self, now: float, boot_id: int | None = None, reason: str | None = None) -> list[tuple[str, dict]]:
        """The device's own availability says offline (its Last Will included)."""
        if boot_id is not None and self.boot_id is not None and boot_id < self.boot_id:
            self.stale_wills += 1  # a Will from an earlier connection
            return []
        if self.status == ONLINE and self.last_seen is not None and now < self.last_seen:
            # Something the device sent after this was already handled
            # (telemetry of the same batch goes first): it went offline and
            # came back. Both are history; the verdict stays online.
            return [(OFFLINE, {"reason": reason or "will", "came_back_at": self.last_seen}),
                    (ONLINE, {"previous": OFFLINE})]
        events = self._boot(boot_id)
        if self.status == OFFLINE:
            return events
        self.status = OFFLINE
        detail: dict = {"reason": reason or "will"}
        if boot_id is not None:
            detail["boot_id"] = boot_id
        return events + [(OFFLINE, detail)]

    def deadline(self) -> float | None:
        if self.status != ONLINE or self.last_seen is None:
            return None
        return self.last_seen + self.timeout_s

    def check(self, now: float) -> list[tuple[str, dict]]:
        """Offline once nothing valid came for the timeout."""
        deadline = self.deadline()
        if deadline is None or now < deadline:
            return []
        self.status = OFFLINE
        return [(OFFLINE, {"reason": "timeout", "silent_s": round(now - (self.last_seen or now), 3)})]

    @property
    def online(self) -> bool:
        return self.status == ONLINE


def timeout_for(status_interval: float | None, minimum_s: float) -> float:
    """max(3 x the device's status period, AUTOCORE_DEVICE_TIMEOUT_S)."""
    return max(3.0 * (status_interval or 5.0), minimum_s)
