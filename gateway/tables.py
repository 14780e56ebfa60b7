"""Aligned plain-text tables and the small formatters the CLI shows values with.

Plain ASCII, no colour, no box drawing: these are read over a serial
console or ssh in a car as often as in a terminal emulator. Numbers are
right-aligned, text left-aligned; a missing value shows as `-`.
"""

from __future__ import annotations

import math
import time
from typing import Any, Iterable, Sequence

MISSING = "-"
GAP = "  "


def cell(value: Any) -> str:
    """A value as a table cell: None is `-`, floats lose needless digits."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return number(value)
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
    return str(value)


def number(value: float | int | None, digits: int = 6) -> str:
    if value is None:
        return MISSING
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if math.isnan(value) or math.isinf(value):
        return str(value)
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.{digits}g}"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, right: Iterable[int] | None = None) -> str:
    """The rows under their headers, each column as wide as its widest cell.

    Columns whose values are all numbers (or missing) are right-aligned,
    unless `right` names the right-aligned columns explicitly. A cell that
    is the empty string stays empty (group rows of a tree)."""
    rows = [list(r) for r in rows]
    ncols = len(headers)
    if right is None:
        right_set = {
            i for i in range(ncols)
            if any(_is_number(r[i]) for r in rows if i < len(r))
            and all(r[i] is None or r[i] == "" or _is_number(r[i]) for r in rows if i < len(r))
        }
    else:
        right_set = set(right)
    text_rows = [[cell(v) for v in r] + [""] * (ncols - len(r)) for r in rows]
    widths = [max([len(headers[i])] + [len(r[i]) for r in text_rows]) for i in range(ncols)]
    lines = []
    for r in [list(headers), *text_rows]:
        parts = []
        for i, text in enumerate(r[:ncols]):
            if i == ncols - 1 and i not in right_set:
                parts.append(text)  # no padding after the last column
            elif i in right_set:
                parts.append(text.rjust(widths[i]))
            else:
                parts.append(text.ljust(widths[i]))
        lines.append(GAP.join(parts).rstrip())
    return "\n".join(lines)


def pairs(items: Iterable[tuple[str, Any]], indent: int = 0) -> str:
    """`key  value` lines with the values aligned. A value that is a list
    of pairs is a nested block, indented under its key."""
    items = list(items)
    width = max((len(k) for k, _ in items), default=0)
    lines = []
    pad = " " * indent
    for key, value in items:
        if isinstance(value, list):
            lines.append(f"{pad}{key}")
            if value:
                lines.append(pairs(value, indent + 2))
        else:
            lines.append(f"{pad}{key.ljust(width)}{GAP}{cell(value)}".rstrip())
    return "\n".join(lines)


def counts(mapping: dict[str, Any] | None, empty: str = "none") -> str:
    """{"bad_json": 3, "too_large": 1} -> "bad_json 3, too_large 1"."""
    if not mapping:
        return empty
    return ", ".join(f"{k} {cell(v)}" for k, v in sorted(mapping.items()))


# -- times ------------------------------------------------------------------


def timestamp(epoch: float | None) -> str:
    """Seconds since the epoch as UTC, `2025-01-08 10:30:00Z` (the vehicle's
    clock and the operator's laptop rarely agree on a time zone)."""
    if epoch is None:
        return MISSING
    try:
        return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(epoch))
    except (OverflowError, OSError, ValueError):
        return str(epoch)


def timestamp_ms(epoch: float | None) -> str:
    if epoch is None:
        return MISSING
    try:
        base = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch))
    except (OverflowError, OSError, ValueError):
        return str(epoch)
    return f"{base}.{int((epoch % 1) * 1000):03d}Z"


def seconds(value: float | None) -> str:
    """A span of time: `850ms`, `12.5s`, `4m10s`, `3h05m`, `2d04h`."""
    if value is None:
        return MISSING
    neg = value < 0
    v = abs(value)
    if v < 1:
        text = f"{v * 1000:.0f}ms"
    elif v < 60:
        text = f"{v:.1f}s".replace(".0s", "s")
    elif v < 3600:
        text = f"{int(v // 60)}m{int(v % 60):02d}s"
    elif v < 86400:
        text = f"{int(v // 3600)}h{int(v % 3600 // 60):02d}m"
    else:
        text = f"{int(v // 86400)}d{int(v % 86400 // 3600):02d}h"
    return "-" + text if neg else text


def ago(epoch: float | None, now: float | None = None) -> str:
    """`12s ago`, `in 3s` for a time ahead of us."""
    if epoch is None:
        return MISSING
    now = time.time() if now is None else now
    delta = now - epoch
    if delta >= 0:
        return f"{seconds(delta)} ago"
    return f"in {seconds(-delta)}"
