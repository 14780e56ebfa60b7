"""What every simulated device shares: a periodic timer, a random walk for
plausible readings, and the interface the runner drives.

A device is a plain object with no I/O and no clock of its own: the runner
passes the time (epoch seconds) into every call and publishes what the call
returns, so the behaviour is tested without a broker, threads or sleeps.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

from protocol.values import Publication

Later = Callable[[float], list[Publication]]


@dataclass
class Every:
    """A period that fires at `next_at`, `next_at + period`, ... A device that
    fell behind (a stall, a long offline spell) skips the missed periods
    instead of sending them in a burst."""

    period: float
    next_at: float

    def due(self, now: float) -> bool:
        if now < self.next_at:
            return False
        self.next_at += self.period
        if self.next_at <= now:
            self.next_at = now + self.period
        return True

    def restart(self, now: float, first: float | None = None) -> None:
        self.next_at = now + (self.period if first is None else first)


@dataclass
class Walk:
    """A value that drifts around `centre` within [low, high]."""

    centre: float
    spread: float
    low: float
    high: float
    value: float = field(default=float("nan"))

    def step(self, rng: random.Random, digits: int = 2) -> float:
        if self.value != self.value:  # NaN: first step
            self.value = self.centre
        pull = (self.centre - self.value) * 0.1
        self.value = min(self.high, max(self.low, self.value + pull + rng.uniform(-self.spread, self.spread)))
        return round(self.value, digits)


class SimDevice:
    """One simulated board. Subclasses fill in the protocol.

    The runner calls `connected` when the device's MQTT connection is up
    (its subscriptions are in place), `disconnected` when it goes down,
    `reboot` for a new boot, `handle` for every message on a topic it
    subscribed to, and `tick` whenever `next_due()` has come. Each returns
    the publications to make; `will()` is the Last Will for the next
    connection (None: the device sets none).
    """

    kind = "generic"
    dialect = "v1"

    def __init__(self, uuid: str, rng: random.Random, now: float) -> None:
        self.uuid = uuid
        self.rng = rng
        self.online = False
        self.boot_at = now
        self.counters: Counter[str] = Counter()
        self.wants_reboot = False  # a command asked for a reboot; the runner carries it out
        self._later: list[tuple[float, int, Later]] = []
        self._later_seq = itertools.count()

    # -- the runner's interface ------------------------------------------

    def will(self) -> Publication | None:
        return None

    def subscriptions(self) -> list[tuple[str, int]]:
        return []

    def connected(self, now: float) -> list[Publication]:
        self.online = True
        return []

    def disconnected(self, now: float) -> None:
        self.online = False

    def reboot(self, now: float) -> None:
        self.boot_at = now
        self._later.clear()
        self.wants_reboot = False
        self.counters["boots"] += 1

    def handle(self, topic: str, payload: bytes, now: float) -> list[Publication]:
        return []

    def tick(self, now: float) -> list[Publication]:
        out: list[Publication] = []
        while self._later and self._later[0][0] <= now:
            _, _, action = heapq.heappop(self._later)
            out += action(now)
        return out

    def next_due(self) -> float | None:
        return self._later[0][0] if self._later else None

    # -- helpers -----------------------------------------------------------

    def later(self, at: float, action: Later) -> None:
        """Run `action(now)` at `at` (from `tick`); what it returns is published."""
        heapq.heappush(self._later, (at, next(self._later_seq), action))

    def uptime(self, now: float) -> float:
        return max(0.0, now - self.boot_at)


def earliest(*times: float | None) -> float | None:
    known = [t for t in times if t is not None]
    return min(known) if known else None


def publish_if_online(device: SimDevice, publications: list[Publication], what: str) -> list[Publication]:
    """A device with no connection publishes nothing (it buffers nothing
    either); what it would have sent is counted."""
    if device.online:
        return publications
    device.counters[f"not_sent_offline.{what}"] += len(publications)
    return []


def as_text(value: Any) -> str | None:
    return value if isinstance(value, str) else None
