"""msgpack encoding of the messages that cross between core and store.

A registered dataclass travels as a msgpack extension holding its type name
and its fields in declaration order; nested registered dataclasses (a
`CommandSpec` inside a `CommandState`) travel the same way, so the other
side gets back exactly the same type, never a looser dict. So does an enum
of protocol/ held in a field (msgpack would send a StrEnum as bare text:
the other side would compare strings again). A field
holding TelemetryRows travels as one extension of plain arrays and comes
back as TelemetryRows. Arrays come back as tuples, keeping messages immutable.
"""

from __future__ import annotations

import dataclasses
from enum import Enum
from typing import Any, TypeVar

import msgpack

from protocol.lifecycle import CommandStatus
from protocol.values import (
    Availability,
    CommandSpec,
    DeviceFacts,
    Dialect,
    Discovery,
    Encoding,
    Event,
    Kind,
    Publication,
    Reading,
    RelayState,
    Response,
    TelemetryRow,
    new_row,
)

_EXT_DATACLASS = 1
_EXT_SAME_TYPE_TUPLE = 2  # a tuple of one registered type (e.g. a batch's tokens), packed flat
_EXT_ROWS = 3  # a tuple of TelemetryRows
_EXT_ENUM = 4  # a member of one of _ENUMS
_ENUMS: dict[str, type[Enum]] = {cls.__name__: cls for cls in (CommandStatus, Dialect, Encoding, Kind)}
_REGISTRY: dict[str, type] = {}
_FIELDS: dict[type, tuple[str, ...]] = {}

T = TypeVar("T", bound=type)
_ROW_WIDTH = len(TelemetryRow._fields)


class WireError(ValueError):
    """A frame that does not decode into a registered message."""


def wire(cls: T) -> T:
    """Register a frozen dataclass for crossing the process boundary."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls.__name__} is not a dataclass")
    name = cls.__name__
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise TypeError(f"two wire types named {name}")
    _REGISTRY[name] = cls
    _FIELDS[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return cls


for _value_type in (Availability, CommandSpec, DeviceFacts, Discovery, Event, Publication, Reading, RelayState,
                    Response):
    wire(_value_type)


def _default(obj: Any) -> Any:
    cls = type(obj)
    fields = _FIELDS.get(cls)
    if fields is not None:
        body: list[Any] = [cls.__name__]
        for name in fields:
            value = getattr(obj, name)
            if isinstance(value, Enum):
                value = msgpack.ExtType(_EXT_ENUM, _pack((type(value).__name__, value.value)))
            elif type(value) is tuple and value:
                first = type(value[0])
                if first is TelemetryRow:
                    value = msgpack.ExtType(_EXT_ROWS, _pack(value))
                elif len(value) > 1 and first in _FIELDS:
                    value = _same_type_tuple(value)
            body.append(value)
        return msgpack.ExtType(_EXT_DATACLASS, _pack(body))
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"cannot send {cls.__name__} between processes: not registered with @wire")


def _same_type_tuple(items: tuple) -> Any:
    """Thousands of tokens per batch: one extension with every field in a
    row, instead of one extension per item (about 10 x faster both ways)."""
    cls = type(items[0])
    if any(type(item) is not cls for item in items):
        return items
    fields = _FIELDS[cls]
    if any(isinstance(getattr(items[0], name), Enum) for name in fields):
        # Flat values would lose their enum type: one extension per item
        # instead. (The first item stands for all: a type's enum fields,
        # KnownDevice.protocol or CommandState.status, are never None.)
        return items
    flat: list[Any] = [cls.__name__, len(fields)]
    for item in items:
        flat.extend(getattr(item, name) for name in fields)
    return msgpack.ExtType(_EXT_SAME_TYPE_TUPLE, _pack(flat))


def _ext_hook(code: int, data: bytes) -> Any:
    if code == _EXT_ENUM:
        name, value = _unpack(data)
        enum = _ENUMS.get(name)
        if enum is None:
            raise WireError(f"unknown enum {name!r}")
        try:
            return enum(value)
        except ValueError:
            raise WireError(f"{value!r} is not a {name}") from None
    if code == _EXT_ROWS:
        rows = _unpack(data)
        # (map: the check runs in C, a few ns a row, on every batch)
        if type(rows) is not tuple or (rows and (set(map(type, rows)) != {tuple} or set(map(len, rows)) != {_ROW_WIDTH})):
            raise WireError("bad telemetry rows")
        return tuple(map(new_row, rows))
    if code == _EXT_SAME_TYPE_TUPLE:
        flat = _unpack(data)
        cls = _REGISTRY.get(flat[0])
        width = flat[1]
        if cls is None or width != len(_FIELDS[cls]) or (len(flat) - 2) % max(width, 1):
            raise WireError(f"bad packed tuple of {flat[0]!r}")
        return tuple(cls(*flat[i:i + width]) for i in range(2, len(flat), width))
    if code != _EXT_DATACLASS:
        raise WireError(f"unknown extension type {code}")
    body = _unpack(data)
    cls = _REGISTRY.get(body[0])
    if cls is None:
        raise WireError(f"unknown message type {body[0]!r}")
    fields = _FIELDS[cls]
    if len(body) - 1 != len(fields):
        raise WireError(f"{body[0]}: expected {len(fields)} fields, got {len(body) - 1}")
    return cls(*body[1:])


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, default=_default, use_bin_type=True, strict_types=False)


def _unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, ext_hook=_ext_hook, raw=False, use_list=False, strict_map_key=False)


def encode(message: Any) -> bytes:
    if type(message) not in _FIELDS:
        raise TypeError(f"{type(message).__name__} is not a wire message")
    return _pack(message)


def decode(data: bytes) -> Any:
    try:
        message = _unpack(data)
    except WireError:
        raise
    except Exception as exc:  # msgpack raises several unrelated types
        raise WireError(f"undecodable frame: {exc}") from None
    if type(message) not in _FIELDS:
        raise WireError(f"frame holds {type(message).__name__}, not a message")
    return message


def registered() -> dict[str, type]:
    return dict(_REGISTRY)
