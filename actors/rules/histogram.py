"""A latency histogram with fixed buckets, for counters that must be
compared between two readings (the benchmark diffs them; metrics export
them as they are). Pure: no clock, no threads."""

from __future__ import annotations

from bisect import bisect_left

# Upper bounds (ms) of the buckets; one more bucket holds everything above.
# 20 ms is one of them: the commit stall target (issue 11) reads off it.
COMMIT_BOUNDS_MS: tuple[float, ...] = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)


class Histogram:
    def __init__(self, bounds: tuple[float, ...] = COMMIT_BOUNDS_MS) -> None:
        if list(bounds) != sorted(set(bounds)):
            raise ValueError("histogram bounds must be strictly increasing")
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bound's bucket (value <= bound).
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def snapshot(self) -> dict:
        return {"le": list(self.bounds), "counts": list(self.counts), "sum": round(self.sum, 3)}


def quantile_bound(snapshot: dict, q: float, since: dict | None = None) -> float | None:
    """The upper bound of the bucket holding the q-th quantile (0 < q <= 1)
    of what was observed after `since` (an earlier snapshot of the same
    histogram); inf if it lies above the last bound, None if nothing was."""
    counts = list(snapshot["counts"])
    if since is not None:
        counts = [a - b for a, b in zip(counts, since["counts"], strict=True)]
    total = sum(counts)
    if total <= 0:
        return None
    rank, seen = q * total, 0
    for i, n in enumerate(counts):
        seen += n
        if seen >= rank:
            return float(snapshot["le"][i]) if i < len(snapshot["le"]) else float("inf")
    return float("inf")
