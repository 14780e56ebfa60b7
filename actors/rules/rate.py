"""Per-device token buckets: `rate` messages per second, up to `burst` saved.

The burst is large (10,000 by default) so the backlog a broker replays after
an outage passes, while a device stuck in a loop is held to the rate.
"""

from __future__ import annotations

from collections import OrderedDict


class RateLimiter:
    def __init__(self, rate: float, burst: float, max_devices: int = 100_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_devices = max_devices
        # uuid -> (tokens, updated_at); least recently used first, so the map stays bounded
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def allow(self, uuid: str, now: float) -> bool:
        tokens, updated = self._buckets.pop(uuid, (self.burst, now))
        tokens = min(self.burst, tokens + (now - updated) * self.rate) if now > updated else tokens
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._buckets[uuid] = (tokens, max(now, updated))
        if len(self._buckets) > self.max_devices:
            self._buckets.popitem(last=False)  # a forgotten device starts again with a full bucket
        return allowed

    def __len__(self) -> int:
        return len(self._buckets)
