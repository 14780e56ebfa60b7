"""Scheduler: one timer heap for every deadline in a process.

No thread per timer: one small waiting thread sleeps until the earliest
deadline and nudges the actor, which tells each due owner `Deadline(key)`.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from actors.base import GatewayActor
from actors.messages import Deadline, Schedule
from actors.rules.timers import TimerHeap


logger = logging.getLogger("autocore.scheduler")

MAX_WAIT_S = 3600.0


@dataclass(frozen=True)
class _Fire:
    pass


class Scheduler(GatewayActor):
    name = "Scheduler"

    def __init__(self, process: str = "core") -> None:
        super().__init__()
        self.process = process
        self._heap = TimerHeap()
        self._cond = threading.Condition()
        self._next_at: float | None = None
        self._fire_pending = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.lateness_max_s = 0.0

    def on_start(self) -> None:
        self._thread = threading.Thread(target=self._wait_loop, name=f"scheduler-{self.process}", daemon=True)
        self._thread.start()

    def on_stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()

    def _wait_loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopping:
                    at = self._next_at
                    if at is not None and not self._fire_pending:
                        delay = at - time.time()
                        if delay <= 0:
                            break
                        # Bounded: a far deadline is simply looked at again
                        # (threading refuses waits past about 292 years).
                        self._cond.wait(min(delay, MAX_WAIT_S))
                    else:
                        self._cond.wait()
                if self._stopping:
                    return
                self._fire_pending = True
            self.actor_ref.tell(_Fire())

    def _rearm(self) -> None:
        with self._cond:
            self._next_at = self._heap.next_at()
            self._fire_pending = False
            self._cond.notify()

    def handle(self, message: Any) -> Any:
        if isinstance(message, Schedule):
            self._heap.schedule(message.key, message.at, message.target)
            self._rearm()
        elif isinstance(message, _Fire):
            now = time.time()
            for key, at, target in self._heap.pop_due(now):
                self.lateness_max_s = max(self.lateness_max_s, now - at)
                self.counters["fired"] += 1
                try:
                    target.tell(Deadline(key, at))
                except Exception:  # the owner stopped meanwhile
                    self.counters["owner_gone"] += 1
            self._rearm()
        else:
            # Only Schedule is ever sent here: anything else is a bug in the
            # sender (a deadline it expects would never fire), so it is said
            # loudly and counted, but does not stop every other timer.
            self.counters["unknown_messages"] += 1
            logger.error("the %s Scheduler got a message it does not handle: %r", self.process, message)

    def summary(self) -> str:
        return f"{len(self._heap)} timers"

    def state(self) -> dict:
        return {"timers": len(self._heap), "next_in_s": None if self._next_at is None else round(self._next_at - time.time(), 3),
                "lateness_max_s": round(self.lateness_max_s, 4)}
