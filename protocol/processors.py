"""Telemetry processors: payload sections -> `Reading` rows.

Each Telemetry section has its own processor, registered by name with
`@register("name")`; a new section type is one new function here. Rows come
out in a fixed order — the sections in registration order, then the
top-level numbers, each in payload order — because a row's place in its
message becomes `idx`, part of the key that stores a redelivery only once.

Two rules for values:
* inside a section every leaf is a reading: numbers as themselves, booleans
  1 and 0, text that is not a number goes to `tag` with value NULL, null
  means "no reading" (no row); an array where a value belongs is refused;
* in the free-form places (top-level Telemetry fields, Status reports, the
  extra fields of a relay) only numbers and booleans are readings and
  anything else is an unknown field, ignored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from protocol import schema
from protocol.schema import MAX_DEPTH, as_number, fail, join, key_text, number_or_tag
from protocol.timestamps import parse_timestamp
from protocol.values import SCHEMA, Reading, RelayState, Rejected

Processor = Callable[[Any, str], Iterator[Reading]]

SECTIONS: dict[str, Processor] = {}

# Top-level fields that say which message this is, not what was measured.
IDENTITY_FIELDS = frozenset({"seq", "boot_id", "timestamp", "uuid", "protocol_version"})

# A classic CAN frame holds 8 data bytes, CAN FD 64.
MAX_CAN_DATA = 64


def register(name: str) -> Callable[[Processor], Processor]:
    def add(processor: Processor) -> Processor:
        SECTIONS[name] = processor
        return processor

    return add


def telemetry_readings(obj: Mapping, path: str = "telemetry") -> list[Reading]:
    rows: list[Reading] = []
    for name, processor in SECTIONS.items():
        section = obj.get(name)
        if section is not None:
            rows.extend(processor(section, join(path, name)))
    rows.extend(_top_level_numbers(obj, "system", skip=IDENTITY_FIELDS.union(SECTIONS)))
    return rows


def status_readings(obj: Mapping, path: str = "status") -> list[Reading]:
    """The numeric fields of a periodic Status report (nested maps flattened
    with dots), source `status`."""
    rows = []
    fields = {k: v for k, v in obj.items() if k not in IDENTITY_FIELDS}
    for name, leaf in schema.flatten(fields, path=path):
        if _is_number(leaf):
            rows.append(Reading("status", name, number_or_tag(leaf)[0]))
    return rows


# -- sections -----------------------------------------------------------------


@register("can_data")
def can_data(section: Any, path: str) -> Iterator[Reading]:
    """`{"signals": {name: {"value", "unit", "can_id"} | value}}` -> source
    `can`, metric the signal name, tag the can_id (a text value takes the
    tag instead: the value is the reading, the can_id only where it came from)."""
    section = _map(section, path)
    signals = schema.get_map(section, "signals", path) or {}
    for key, signal in signals.items():
        name = key_text(key, join(path, "signals"))
        where = join(join(path, "signals"), name)
        unit = can_id = None
        value_path = where
        if isinstance(signal, Mapping):
            if "value" not in signal:
                raise Rejected(SCHEMA, f"{where}.value: required")
            unit = schema.get_str(signal, "unit", where)
            can_id = _can_id(signal.get("can_id"), join(where, "can_id"), required=False)
            signal, value_path = signal["value"], join(where, "value")
        if signal is not None:
            value, tag = _scalar(signal, value_path)
            yield Reading("can", name, value, unit, tag if tag is not None else can_id)


@register("analog_sensors")
def analog_sensors(section: Any, path: str) -> Iterator[Reading]:
    return _map_section("analog", _map(section, path), path)


@register("system_status")
def system_status(section: Any, path: str) -> Iterator[Reading]:
    return _map_section("system", _map(section, path), path)


# Fields a GPS fix always has as numbers: text there is a device bug, not a tag.
GPS_NUMBERS: dict[str, tuple[float | None, float | None]] = {
    "latitude": (-90.0, 90.0),
    "longitude": (-180.0, 180.0),
    "altitude": (None, None),
    "speed": (None, None),
    "heading": (None, None),
    "satellites": (0.0, None),
    "accuracy": (0.0, None),
}


@register("gps")
def gps(section: Any, path: str) -> Iterator[Reading]:
    """One row per field, source `gps`, metric the field name."""
    section = _map(section, path)
    for key in section:
        if key in GPS_NUMBERS and section[key] is not None:
            low, high = GPS_NUMBERS[key]
            yield Reading("gps", key, as_number(section[key], join(path, key), low, high))
        else:
            yield from _map_section("gps", {key: section[key]}, path)


@register("readings")
def readings(section: Any, path: str) -> Iterator[Reading]:
    """`[{"source", "metric", "value", "unit", "tag", "timestamp"}]`: each its
    own row, source default `sensor`. A null value is kept as a row: the
    device listed the reading on purpose (its tag may say why)."""
    for i, item in enumerate(_list(section, path)):
        where = f"{path}[{i}]"
        item = _map(item, where)
        source = schema.get_str(item, "source", where, default="sensor")
        metric = schema.get_str(item, "metric", where, required=True)
        if "value" not in item:
            raise Rejected(SCHEMA, f"{where}.value: required")
        value, tag = _scalar(item["value"], join(where, "value"))
        unit = schema.get_str(item, "unit", where)
        explicit_tag = schema.get_str(item, "tag", where)
        ts = parse_timestamp(item.get("timestamp"), join(where, "timestamp"))
        yield Reading(source, metric, value, unit, tag if tag is not None else explicit_tag, None, ts)


@register("can_frames")
def can_frames(section: Any, path: str) -> Iterator[Reading]:
    """`[{"id", "data", "timestamp"}]` -> source `can_raw`, metric the frame
    id, raw the data bytes (hex text, MessagePack bytes or a list of bytes)."""
    for i, item in enumerate(_list(section, path)):
        where = f"{path}[{i}]"
        item = _map(item, where)
        frame_id = _can_id(item.get("id"), join(where, "id"), required=True)
        assert frame_id is not None  # required: _can_id raised otherwise
        raw = _frame_data(item.get("data"), join(where, "data"))
        ts = parse_timestamp(item.get("timestamp"), join(where, "timestamp"))
        yield Reading("can_raw", frame_id, None, raw=raw, ts=ts)


# -- relay status ---------------------------------------------------------------

RELAY_NUMBERS = ("current", "voltage", "temperature", "switch_count")


def relay_readings(obj: Mapping, path: str = "relay_status") -> tuple[list[Reading], list[RelayState]]:
    """RelayStatus -> rows `relay.<id>.<field>` (state first as 1/0, then the
    relay's numeric fields in payload order) and each relay's state; then the
    message's own numbers (`power_consumption`, ...) as `relay.<field>`."""
    rows: list[Reading] = []
    states: list[RelayState] = []
    seen: set[int] = set()
    for i, item in enumerate(schema.get_list(obj, "relays", path) or ()):
        where = f"{path}.relays[{i}]"
        item = _map(item, where)
        relay_id = schema.get_int(item, "relay_id", where, required=True, minimum=0)
        if relay_id in seen:
            raise Rejected(SCHEMA, f"{where}.relay_id: relay {relay_id} is listed twice")
        seen.add(relay_id)
        state = _relay_state(item.get("state"), join(where, "state"))
        if state is not None:
            states.append(RelayState(relay_id, state))
            rows.append(Reading("relay", f"relay.{relay_id}.state", 1.0 if state else 0.0))
        for key, value in item.items():
            if key in ("relay_id", "state") or value is None:
                continue
            if key in RELAY_NUMBERS:
                rows.append(Reading("relay", f"relay.{relay_id}.{key}", as_number(value, join(where, key))))
            elif _is_number(value):
                rows.append(Reading("relay", f"relay.{relay_id}.{key}", number_or_tag(value)[0]))
    for row in _top_level_numbers(obj, "relay", skip=IDENTITY_FIELDS | {"relays"}):
        rows.append(Reading("relay", f"relay.{row.metric}", row.value))
    return rows, states


# -- helpers ----------------------------------------------------------------------


def _map_section(source: str, section: Mapping, path: str, depth: int = 0) -> Iterator[Reading]:
    """Leaves of a map section; a nested map with a `value` key is one
    reading with its `unit`, any other nested map is flattened with dots."""
    if depth >= MAX_DEPTH:
        raise Rejected(SCHEMA, f"{path}: nested deeper than {MAX_DEPTH} levels")
    for key, value in section.items():
        name = key_text(key, path)
        where = join(path, name)
        if isinstance(value, Mapping) and "value" in value:
            row = _leaf(source, name, value["value"], where, schema.get_str(value, "unit", where))
            if row is not None:
                yield row
        elif isinstance(value, Mapping):
            for row in _map_section(source, value, where, depth + 1):
                yield Reading(source, f"{name}.{row.metric}", row.value, row.unit, row.tag)
        else:
            row = _leaf(source, name, value, where, None)
            if row is not None:
                yield row


def _leaf(source: str, metric: str, value: Any, path: str, unit: str | None) -> Reading | None:
    if value is None:
        return None
    number, tag = _scalar(value, path)
    return Reading(source, metric, number, unit, tag)


def _scalar(value: Any, path: str) -> tuple[float | None, str | None]:
    """number_or_tag for a value that must be a scalar (or null)."""
    if value is not None and not isinstance(value, (bool, int, float, str)):
        raise fail(path, "number, boolean or text", value)
    return number_or_tag(value)


def _top_level_numbers(obj: Mapping, source: str, skip: Any) -> Iterator[Reading]:
    for key, value in obj.items():
        if key not in skip and _is_number(value):
            number, _ = number_or_tag(value)
            if number is not None:  # NaN from MessagePack: no reading
                yield Reading(source, key, number)


def _is_number(value: Any) -> bool:
    return isinstance(value, (bool, int, float)) and number_or_tag(value)[0] is not None


def _relay_state(value: Any, path: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise fail(path, "boolean", value)


def _can_id(value: Any, path: str, required: bool) -> str | None:
    """A CAN id as text: text as given ("0x200"), an integer in hex."""
    if value is None:
        if required:
            raise Rejected(SCHEMA, f"{path}: required")
        return None
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return f"0x{value:X}"
    raise fail(path, "CAN id (text like \"0x200\" or an integer)", value)


def _frame_data(value: Any, path: str) -> bytes:
    if value is None:
        raise Rejected(SCHEMA, f"{path}: required")
    if isinstance(value, (bytes, bytearray)):
        data = bytes(value)
    elif isinstance(value, str):
        text = value[2:] if value[:2] in ("0x", "0X") else value
        try:
            data = bytes.fromhex(text)
        except ValueError:
            raise fail(path, "hex text of whole bytes", value) from None
    elif isinstance(value, list) and all(isinstance(b, int) and not isinstance(b, bool) and 0 <= b <= 255 for b in value):
        data = bytes(value)
    else:
        raise fail(path, "hex text, bytes or a list of byte values", value)
    if len(data) > MAX_CAN_DATA:
        raise Rejected(SCHEMA, f"{path}: {len(data)} bytes, more than a CAN frame holds ({MAX_CAN_DATA})")
    return data


def _map(value: Any, path: str) -> Mapping:
    if not isinstance(value, Mapping):
        raise fail(path, "object", value)
    return value


def _list(value: Any, path: str) -> list:
    if not isinstance(value, list):
        raise fail(path, "array", value)
    return value

