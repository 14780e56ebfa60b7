"""One heap of deadlines, one per key (a later `schedule` replaces the earlier)."""

from __future__ import annotations

import heapq
import itertools
from typing import Any, Hashable


class TimerHeap:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Hashable]] = []
        self._live: dict[Hashable, tuple[float, int, Any]] = {}  # key -> (at, serial, payload)
        self._serial = itertools.count()

    def __len__(self) -> int:
        return len(self._live)

    def schedule(self, key: Hashable, at: float, payload: Any = None) -> None:
        serial = next(self._serial)
        self._live[key] = (at, serial, payload)
        heapq.heappush(self._heap, (at, serial, key))
        if len(self._heap) > 4 * len(self._live) + 64:
            self._compact()

    def cancel(self, key: Hashable) -> None:
        self._live.pop(key, None)

    def next_at(self) -> float | None:
        while self._heap:
            at, serial, key = self._heap[0]
            live = self._live.get(key)
            if live is not None and live[1] == serial:
                return at
            heapq.heappop(self._heap)  # replaced or cancelled
        return None

    def pop_due(self, now: float) -> list[tuple[Hashable, float, Any]]:
        due = []
        while self._heap and self._heap[0][0] <= now:
            at, serial, key = heapq.heappop(self._heap)
            live = self._live.get(key)
            if live is not None and live[1] == serial:
                del self._live[key]
                due.append((key, at, live[2]))
        return due

    def _compact(self) -> None:
        self._heap = [(at, serial, key) for key, (at, serial, _) in self._live.items()]
        heapq.heapify(self._heap)
