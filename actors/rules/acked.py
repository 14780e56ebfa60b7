"""Which row ids the fleet broker has acknowledged (issue 14).

The uplink's cursor: an interval set of acknowledged ids. PUBACKs may come
back out of order (several batches in flight) and the lanes send different
parts of the table, so "everything up to N" alone cannot say what is done;
`low_watermark` is the id below which everything is, and `gaps` lists what
is not, so a restart resends exactly what was never acknowledged. The
intervals merge as they touch, so in steady state there are only a few of
them (one per lane); `to_pairs`/`from_pairs` persist them. Pure.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Iterable, Iterator


class AckedRanges:
    def __init__(self, pairs: Iterable[tuple[int, int]] = ()) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        for first, last in pairs:
            self.add(first, last)

    def add(self, first: int, last: int) -> None:
        """Ids first..last (inclusive) are acknowledged."""
        if first > last:
            raise ValueError(f"empty range {first}..{last}")
        starts, ends = self._starts, self._ends
        # Every interval that overlaps or touches [first, last] merges with it.
        lo = bisect_right(ends, first - 2)  # first interval ending at or after first-1
        hi = bisect_right(starts, last + 1)  # past the last interval starting at or before last+1
        if lo < hi:
            first = min(first, starts[lo])
            last = max(last, ends[hi - 1])
        starts[lo:hi] = [first]
        ends[lo:hi] = [last]

    def __contains__(self, rid: int) -> bool:
        i = bisect_right(self._starts, rid) - 1
        return i >= 0 and rid <= self._ends[i]

    def low_watermark(self, floor: int = 0) -> int:
        """The largest id W such that every id in floor+1..W is acknowledged
        (`floor` if floor+1 is not)."""
        i = bisect_right(self._starts, floor + 1) - 1
        if i >= 0 and self._ends[i] >= floor + 1:
            return self._ends[i]
        return floor

    def gaps(self, after: int, upto: int) -> Iterator[tuple[int, int]]:
        """The ranges of after+1..upto not acknowledged, in order."""
        nxt = after + 1
        i = max(0, bisect_right(self._ends, after))
        while nxt <= upto:
            if i < len(self._starts) and self._starts[i] <= nxt:
                nxt = max(nxt, self._ends[i] + 1)
                i += 1
                continue
            end = upto if i >= len(self._starts) else min(upto, self._starts[i] - 1)
            yield nxt, end
            nxt = end + 1

    def forget_below(self, rid: int) -> None:
        """Drop what lies below `rid` (rows pruned from the table): keeps
        the set small without changing what counts as done at or above it."""
        while self._starts and self._ends[0] < rid:
            del self._starts[0], self._ends[0]
        if self._starts and self._starts[0] < rid:
            self._starts[0] = rid

    def to_pairs(self) -> list[tuple[int, int]]:
        return list(zip(self._starts, self._ends))

    @classmethod
    def from_pairs(cls, pairs: Iterable[Iterable[int]]) -> "AckedRanges":
        return cls((int(a), int(b)) for a, b in pairs)

    def __len__(self) -> int:
        return len(self._starts)

    def __repr__(self) -> str:
        return f"AckedRanges({self.to_pairs()!r})"
