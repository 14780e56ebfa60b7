"""Small validation helpers shared by both dialects.

Every helper raises `Rejected(SCHEMA, "<path>.<key>: expected ..., got ...")`
for a value of the wrong type, so a dialect module never spells out its own
error messages and every detail reads the same way. A field whose value is
null counts as absent: devices write `"error_message": null` for "none".
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping
from typing import Any, Literal, overload

from protocol.values import SCHEMA, Rejected

# Deeper nesting than this is a device bug, and walking it recursively could
# hit Python's recursion limit (orjson accepts 1024 levels).
MAX_DEPTH = 16

# What a number written as text looks like. float() alone would also take
# "1_000", "infinity" and "nan", which no device means as a reading.
_NUMBER_TEXT = re.compile(r"\s*[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?\s*")

_MISSING = object()


def number_or_tag(value: Any) -> tuple[float | None, str | None]:
    """Map a telemetry leaf onto (value, tag).

    Booleans are stored as 1 and 0; numbers as themselves; text that reads as
    a finite number becomes that number; other text goes to tag with value
    NULL. NaN and infinities are not numbers (SQLite and JSON cannot hold
    them), so they become (None, their text). Anything that is not a scalar
    (null, arrays, maps, bytes) gives (None, None): nothing to store, and the
    caller decides whether that is an error or a row to skip.
    """
    if isinstance(value, bool):
        return (1.0 if value else 0.0), None
    if isinstance(value, (int, float)):
        try:
            number = float(value)
        except OverflowError:  # an integer too large for a float
            return None, str(value)
        if math.isfinite(number):
            return number, None
        return None, str(value)
    if isinstance(value, str):
        if _NUMBER_TEXT.fullmatch(value):
            number = float(value)
            if math.isfinite(number):
                return number, None
        return None, value
    return None, None


def flatten(obj: Mapping, prefix: str = "", *, path: str = "") -> Iterator[tuple[str, Any]]:
    """Yield (dotted_key, leaf) for every non-map value of a nested map, in
    the map's own order (so the row order is the same on every redelivery).

    Keys must be text or integers (MessagePack allows any key; integer keys
    such as relay channels are written in decimal); otherwise, or beyond
    MAX_DEPTH levels, Rejected(SCHEMA) naming `path` (e.g. "status").
    """
    yield from _flatten(obj, prefix, path, 0)


def _flatten(obj: Mapping, prefix: str, path: str, depth: int) -> Iterator[tuple[str, Any]]:
    where = join(path, prefix) or "payload"
    if depth >= MAX_DEPTH:
        raise Rejected(SCHEMA, f"{where}: nested deeper than {MAX_DEPTH} levels")
    for key, value in obj.items():
        name = join(prefix, key_text(key, where))
        if isinstance(value, Mapping):
            yield from _flatten(value, name, path, depth + 1)
        else:
            yield name, value


def key_text(key: Any, path: str) -> str:
    """A map key as a metric name: text as given, integers in decimal."""
    if isinstance(key, str):
        if not key:
            raise Rejected(SCHEMA, f"{path}: empty key")
        return key
    if isinstance(key, int) and not isinstance(key, bool):
        return str(key)
    raise Rejected(SCHEMA, f"{path}: keys must be text, got {describe(key)}")


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def describe(value: Any) -> str:
    """A short description of a value for an error detail: its JSON type
    and, for scalars, the value itself (cut short)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean " + ("true" if value else "false")
    if isinstance(value, (int, float)):
        text = repr(value)
        return "number " + (text if len(text) <= 40 else text[:40] + "...")
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:40] + "..."
        return "text " + json.dumps(shown, ensure_ascii=False)  # quoted, control characters escaped
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, (bytes, bytearray)):
        return f"bytes (length {len(value)})"
    return type(value).__name__


def fail(path: str, expected: str, value: Any) -> Rejected:
    return Rejected(SCHEMA, f"{path}: expected {expected}, got {describe(value)}")


def _get(obj: Mapping, key: str, path: str, required: bool) -> Any:
    value = obj.get(key)
    if value is None:
        if required:
            raise Rejected(SCHEMA, f"{join(path, key)}: required")
        return _MISSING
    return value


# Required, or with a text default: never None (what the type checker is told).
@overload
def get_str(obj: Mapping, key: str, path: str, required: Literal[True], default: str | None = None) -> str: ...
@overload
def get_str(obj: Mapping, key: str, path: str, required: bool = False, *, default: str) -> str: ...
@overload
def get_str(obj: Mapping, key: str, path: str, required: bool = False, default: str | None = None) -> str | None: ...


def get_str(obj: Mapping, key: str, path: str, required: bool = False, default: str | None = None) -> str | None:
    """Text, non-empty."""
    value = _get(obj, key, path, required)
    if value is _MISSING:
        return default
    if not isinstance(value, str):
        raise fail(join(path, key), "text", value)
    if not value:
        raise Rejected(SCHEMA, f"{join(path, key)}: must not be empty")
    return value


def as_number(value: Any, path: str, minimum: float | None = None, maximum: float | None = None) -> float:
    """A finite number (not a boolean), optionally within [minimum, maximum]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise fail(path, "number", value)
    try:
        number = float(value)
    except OverflowError:
        raise fail(path, "a number that fits a double", value) from None
    if not math.isfinite(number):
        raise fail(path, "a finite number", value)
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        raise fail(path, "number " + _range(minimum, maximum), value)
    return number


def get_number(
    obj: Mapping,
    key: str,
    path: str,
    required: bool = False,
    default: float | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    positive: bool = False,
) -> float | None:
    """A finite number; `positive` demands > 0."""
    value = _get(obj, key, path, required)
    if value is _MISSING:
        return default
    number = as_number(value, join(path, key), minimum, maximum)
    if positive and number <= 0:
        raise fail(join(path, key), "number greater than 0", value)
    return number


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # what an SQLite INTEGER holds


def as_int(value: Any, path: str, minimum: int | None = None) -> int:
    """An integer SQLite can store; a float with no fraction (17.0) counts as one."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise fail(path, "integer", value)
    if not INT64_MIN <= value <= INT64_MAX:
        raise fail(path, "integer of at most 64 bits", value)
    if minimum is not None and value < minimum:
        raise fail(path, f"integer >= {minimum}", value)
    return value


@overload
def get_int(obj: Mapping, key: str, path: str, required: Literal[True], default: int | None = None,
            minimum: int | None = None) -> int: ...
@overload
def get_int(obj: Mapping, key: str, path: str, required: bool = False, *, default: int,
            minimum: int | None = None) -> int: ...
@overload
def get_int(obj: Mapping, key: str, path: str, required: bool = False, default: int | None = None,
            minimum: int | None = None) -> int | None: ...


def get_int(
    obj: Mapping, key: str, path: str, required: bool = False, default: int | None = None, minimum: int | None = None
) -> int | None:
    value = _get(obj, key, path, required)
    if value is _MISSING:
        return default
    return as_int(value, join(path, key), minimum)


def get_bool(obj: Mapping, key: str, path: str, required: bool = False, default: bool | None = None) -> bool | None:
    value = _get(obj, key, path, required)
    if value is _MISSING:
        return default
    if not isinstance(value, bool):
        raise fail(join(path, key), "boolean", value)
    return value


def get_list(obj: Mapping, key: str, path: str, required: bool = False) -> list | None:
    value = _get(obj, key, path, required)
    if value is _MISSING:
        return None
    if not isinstance(value, list):
        raise fail(join(path, key), "array", value)
    return value


def get_map(obj: Mapping, key: str, path: str, required: bool = False) -> Mapping | None:
    value = _get(obj, key, path, required)
    if value is _MISSING:
        return None
    if not isinstance(value, Mapping):
        raise fail(join(path, key), "object", value)
    return value


def _range(minimum: float | None, maximum: float | None) -> str:
    def n(bound: float) -> str:
        return str(int(bound)) if float(bound).is_integer() else str(bound)

    if minimum is not None and maximum is not None:
        return f"between {n(minimum)} and {n(maximum)}"
    if minimum is not None:
        return f">= {n(minimum)}"
    if maximum is not None:
        return f"<= {n(maximum)}"
    return "of any size"  # not reached: a bound was broken
