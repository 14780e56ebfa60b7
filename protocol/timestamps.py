"""Device times: ISO 8601 text or epoch seconds, and the clock rule.

A car rarely reaches an NTP server, so device clocks lie. A time before
2020-01-01 (never synced, or seconds since boot) or more than the allowed
skew after `received_at` is replaced by `received_at` and counted.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any

from protocol.values import SCHEMA, Rejected

EARLIEST_TRUSTED = 1577836800.0  # 2020-01-01T00:00:00Z


def parse_timestamp(value: Any, path: str = "timestamp") -> float | None:
    """Epoch seconds from ISO 8601 text or a number; None when absent."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise Rejected(SCHEMA, f"{path}: expected ISO 8601 text or epoch seconds, got boolean")
    if isinstance(value, (int, float)):
        seconds = float(value)
        if not math.isfinite(seconds):
            raise Rejected(SCHEMA, f"{path}: expected a finite number of seconds, got {value!r}")
        return seconds
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise Rejected(SCHEMA, f"{path}: expected ISO 8601 text or epoch seconds, got {value!r}") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        try:
            return parsed.timestamp()
        except (OverflowError, ValueError):
            raise Rejected(SCHEMA, f"{path}: time out of range: {value!r}") from None
    raise Rejected(SCHEMA, f"{path}: expected ISO 8601 text or epoch seconds, got {type(value).__name__}")


def effective_ts(device_ts: float | None, received_at: float, skew_s: float) -> tuple[float, bool]:
    """The time to store and whether the device's clock was overruled.

    No device time: `received_at`, not counted. A time before 2020 or more
    than `skew_s` after `received_at`: `received_at`, counted. Earlier
    times are kept (a device may replay readings it buffered offline).
    """
    if device_ts is None:
        return received_at, False
    if device_ts < EARLIEST_TRUSTED or device_ts > received_at + skew_s:
        return received_at, True
    return device_ts, False


def iso(ts: float) -> str:
    """ISO 8601 UTC text for a time the gateway sends."""
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
