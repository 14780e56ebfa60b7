"""What every actor of the gateway has: counters, a rate, and a snapshot."""

from __future__ import annotations

import os
import resource
import time
from collections import Counter
from typing import Any

import pykka

from actors.messages import GetSnapshot


class GatewayActor(pykka.ThreadingActor):
    """A pykka actor that counts what it handles and answers GetSnapshot.

    Subclasses implement `handle(message)` and `state()` (a plain dict of
    their own state, for the Inspector)."""

    name = "actor"
    process = "core"
    # An actor that does not stop in time must not keep the process alive:
    # stopping is bounded (actors/core.py, actors/store.py), runit restarts.
    use_daemon_thread = True

    def __init__(self) -> None:
        super().__init__()
        self.counters: Counter[str] = Counter()
        self.handled = 0
        self.started_at = time.time()
        self._rate_mark = (self.started_at, 0)
        self.restarts = 0

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, GetSnapshot):
            return self.snapshot()
        self.handled += 1
        return self.handle(message)

    def handle(self, message: Any) -> Any:  # pragma: no cover - overridden
        return super().on_receive(message)

    def state(self) -> dict:
        return {}

    def summary(self) -> str:
        return ""

    def mailbox_depth(self) -> int | None:
        """Messages waiting, or None where it cannot be known. pykka's public
        surface promises an inbox with put/get/empty only; the depth comes
        from the `qsize` of the queue a ThreadingActor happens to use, looked
        up rather than assumed, so another pykka inbox yields None (shown as
        unknown), not a crash of the Inspector's snapshot."""
        qsize = getattr(self.actor_inbox, "qsize", None)
        if qsize is None:
            return None
        return qsize()

    def snapshot(self) -> dict:
        now = time.time()
        mark_at, mark_count = self._rate_mark
        rate = (self.handled - mark_count) / (now - mark_at) if now > mark_at else 0.0
        self._rate_mark = (now, self.handled)
        return {
            "name": self.name,
            "process": self.process,
            "mailbox": self.mailbox_depth(),
            "handled": self.handled,
            "rate_per_s": round(rate, 1),
            "restarts": self.restarts,
            "summary": self.summary(),
            "counters": dict(self.counters),
            "state": self.state(),
        }


def rss_mb() -> float:
    """Resident memory of this process in MiB."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1048576.0
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
