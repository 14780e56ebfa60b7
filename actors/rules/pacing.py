"""Pacing and back-off of the fleet uplink (issue 14). Pure: the time is an
argument, randomness is injected."""

from __future__ import annotations

import random
from typing import Callable


class TokenBucket:
    """`rate` tokens a second, at most `burst` saved up."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("rate and burst must be greater than 0")
        self.rate, self.burst = float(rate), float(burst)
        self.tokens = float(burst)
        self.at = now

    def _refill(self, now: float) -> None:
        if now > self.at:
            self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
            self.at = now

    def wait(self, now: float, amount: float = 1.0) -> float:
        """Seconds until `amount` tokens are there (0: now). An amount above
        the burst waits until the bucket is full, then may go (and leaves a
        debt), so a large item is slowed, never stuck."""
        self._refill(now)
        need = min(amount, self.burst)
        # (A hair short counts as there: a wait below a nanosecond would not
        # move a float clock forward, and a caller would spin on it.)
        return 0.0 if self.tokens >= need - 1e-9 else (need - self.tokens) / self.rate

    def take(self, now: float, amount: float = 1.0) -> None:
        self._refill(now)
        self.tokens -= amount


class Pacer:
    """Items (rows, or messages) a second and bytes a second at once (either
    may be None: no limit). A send may take many items at once: it goes when
    one is there and leaves the rest as a debt, so the average keeps to the
    rate whatever the batch size."""

    def __init__(self, messages_per_s: float | None, bytes_per_s: float | None, now: float,
                 burst_s: float = 1.0) -> None:
        self.messages = TokenBucket(messages_per_s, max(1.0, messages_per_s * burst_s), now) if messages_per_s else None
        self.bytes = TokenBucket(bytes_per_s, max(1.0, bytes_per_s * burst_s), now) if bytes_per_s else None

    def wait(self, now: float, size: int) -> float:
        return max(self.messages.wait(now) if self.messages else 0.0,
                   self.bytes.wait(now, size) if self.bytes else 0.0)

    def take(self, now: float, size: int, items: int = 1) -> None:
        if self.messages:
            self.messages.take(now, items)
        if self.bytes:
            self.bytes.take(now, size)


class Backoff:
    """Reconnect delays: doubling from `first_s` up to `max_s`, each with
    ±`jitter` of itself at random, so a fleet that lost its broker at once
    does not come back at once."""

    def __init__(self, first_s: float = 1.0, max_s: float = 60.0, jitter: float = 0.5,
                 rand: Callable[[], float] = random.random) -> None:
        if not 0 < first_s <= max_s or not 0 <= jitter < 1:
            raise ValueError("need 0 < first_s <= max_s and 0 <= jitter < 1")
        self.first_s, self.max_s, self.jitter, self.rand = first_s, max_s, jitter, rand
        self.attempts = 0

    def next_delay(self) -> float:
        base = min(self.max_s, self.first_s * (2 ** min(self.attempts, 30)))
        self.attempts += 1
        return base * (1.0 + self.jitter * (2.0 * self.rand() - 1.0))

    def reset(self) -> None:
        self.attempts = 0
