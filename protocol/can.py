"""CAN signals: definitions and the bit-level decoder (pure).

A `SignalDef` is one signal as the Config App's `can_signals` table holds
it (PROTOCOL.md, "The Config App's database"): the signal starts in byte
`start_bit // 8`; `big_endian` reads its bytes most significant first,
`little_endian` (or nothing) least significant first, as the Config App's
own CAN page encodes frames. That page only writes byte-aligned signals of
up to 16 bits; for the rest the rule is the same one carried on: the
signal's bytes run from `start_bit // 8` for `ceil((start_bit % 8 + length)
/ 8)` bytes, form one integer in the signal's byte order, and the value is
that integer shifted right by `start_bit % 8`, masked to `length` bits (for
a little-endian signal this is exactly DBC's Intel layout).

Frame decoders share one small interface, `decode(data) -> (results,
short)`: `SignalSet` (protocol/can_compile.py) for the Config App's
definitions of one CAN id, and
`protocol.dbc.DbcFrame` for a message of a DBC file. A `CanCatalog` maps
CAN ids to frame decoders, for every device and per device type, and is
immutable: a change of definitions is a new catalog, swapped in whole, so
no frame is ever decoded with half a change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Mapping, NamedTuple, Protocol, Sequence

from protocol.can_compile import SignalSet  # the compiled decoder (re-exported)

# A classic CAN frame holds 8 data bytes, CAN FD 64: no signal can lie past that.
MAX_FRAME_BYTES = 64
MAX_FRAME_BITS = MAX_FRAME_BYTES * 8
# An integer signal wider than this is not something a CAN bus carries.
MAX_INT_BITS = 64

SIGNED_TYPES = frozenset({"signed", "int", "integer", "sint", "int8", "int16", "int32", "int64"})
FLOAT_TYPES = frozenset({"float", "double", "float32", "float64", "real"})
CONFIG_APP = "config_app"


class BadDefinition(ValueError):
    """A definition that cannot be used; the message names it and says why."""


class FrameError(ValueError):
    """A frame its decoder cannot make sense of (a DBC multiplexer value the
    file does not define): counted, the frame stored raw."""


class Result(NamedTuple):
    """One decoded signal of one frame. Decoders may give plain tuples in
    this order (SignalSet does: a NamedTuple costs a call per signal)."""

    name: str
    value: float | None
    unit: str | None
    in_range: bool


class FrameDecoder(Protocol):
    """SignalSet and protocol.dbc.DbcFrame. SignalSet also has `emitter`,
    the fast path the store uses."""

    can_id: int

    def decode(self, data: bytes) -> tuple[list[Result], list[str]]:
        """The signals the frame holds, and the names of those it is too short for."""


@dataclass(frozen=True)
class Definition:
    """A signal in force, for listing (`gateway can signals`)."""

    name: str
    can_id: int
    start_bit: int
    length: int
    byte_order: str
    kind: str
    scale: float
    offset: float
    unit: str | None
    minimum: float | None
    maximum: float | None
    origin: str  # "config_app" or the DBC file
    device_type: str | None = None  # None: every device
    note: str = ""


def parse_can_id(value: Any) -> int:
    """A CAN id as the Config App and devices write it: text in hex, with or
    without `0x` (CAN ids are hex by convention, as in candump), or an
    integer. Raises ValueError."""
    if isinstance(value, bool):
        raise ValueError(f"not a CAN id: {value!r}")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str):
        text = value.strip()
        if text[:2] in ("0x", "0X"):
            text = text[2:]
        try:
            if not text or text[0] in "+-" or "_" in text or text != text.strip():
                raise ValueError
            number = int(text, 16)
        except ValueError:
            raise ValueError(f"not a CAN id: {value!r} (hex text, like 0x100)") from None
    else:
        raise ValueError(f"not a CAN id: {value!r}")
    if not 0 <= number <= 0x1FFFFFFF:
        raise ValueError(f"CAN id {value!r} is past 29 bits")
    return number


def can_id_text(can_id: int) -> str:
    """The form rows carry in `tag`: `0x100`."""
    return f"0x{can_id:X}"


@dataclass(frozen=True, slots=True)
class SignalDef:
    name: str
    can_id: int
    start_bit: int
    length: int
    big_endian: bool = False
    kind: str = "unsigned"  # unsigned | signed | float
    scale: float = 1.0
    offset: float = 0.0
    unit: str | None = None
    minimum: float | None = None
    maximum: float | None = None

    def __post_init__(self) -> None:
        problem = self.problem()
        if problem:
            raise BadDefinition(f"CAN signal {self.name!r} ({can_id_text(self.can_id)}): {problem}")

    def problem(self) -> str | None:
        if self.length <= 0:
            return f"length_bits {self.length}: must be at least 1"
        if self.start_bit < 0:
            return f"start_bit {self.start_bit}: must be 0 or more"
        if self.start_bit >= MAX_FRAME_BITS:
            return f"start_bit {self.start_bit} is past the end of any CAN frame ({MAX_FRAME_BITS} bits)"
        if self.start_bit + self.length > MAX_FRAME_BITS:
            return (f"bits {self.start_bit}..{self.start_bit + self.length - 1} run past the end of any CAN "
                    f"frame ({MAX_FRAME_BITS} bits)")
        if self.kind == "float":
            if self.length not in (32, 64):
                return f"a float signal must be 32 or 64 bits long, not {self.length}"
            if self.start_bit % 8:
                return f"a float signal must start on a byte (start_bit {self.start_bit})"
        elif self.length > MAX_INT_BITS:
            return f"length_bits {self.length}: an integer signal is at most {MAX_INT_BITS} bits"
        if not (math.isfinite(self.scale) and math.isfinite(self.offset)):
            return "scale_factor and offset must be finite numbers"
        return None

    @property
    def byte_order(self) -> str:
        return "big_endian" if self.big_endian else "little_endian"

    def definition(self, origin: str = CONFIG_APP) -> Definition:
        return Definition(self.name, self.can_id, self.start_bit, self.length, self.byte_order, self.kind,
                          self.scale, self.offset, self.unit, self.minimum, self.maximum, origin)


def _number(row: Mapping, key: str, default: float | None) -> float | None:
    value = row.get(key)
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise ValueError(f"{key} {value!r} is not a number")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{key} {value!r} is not a number") from None


def _integer(row: Mapping, key: str) -> int:
    value = row.get(key)
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{key} {value!r} is not a whole number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{key} {value!r} is not a whole number") from None
    if not number.is_integer():
        raise ValueError(f"{key} {value!r} is not a whole number")
    return int(number)


def config_app_signal(row: Mapping) -> SignalDef:
    """One `can_signals` row (a mapping of its columns) -> SignalDef.
    Raises BadDefinition with one line naming the signal and the problem."""
    name = row.get("signal_name")
    label = f"CAN signal {name!r} (can_signals id {row.get('id')})"
    try:
        if not isinstance(name, str) or not name.strip():
            raise ValueError("signal_name is empty")
        can_id = parse_can_id(row.get("can_id"))
        start_bit = _integer(row, "start_bit")
        length = _integer(row, "length_bits")
        order = row.get("byte_order")
        order = order.strip().lower() if isinstance(order, str) else order
        if order in (None, "", "little_endian"):
            big_endian = False
        elif order == "big_endian":
            big_endian = True
        else:
            raise ValueError(f"unknown byte_order {row.get('byte_order')!r} (big_endian, little_endian or empty)")
        data_type = row.get("data_type")
        data_type = data_type.strip().lower() if isinstance(data_type, str) else ""
        kind = "signed" if data_type in SIGNED_TYPES else "float" if data_type in FLOAT_TYPES else "unsigned"
        # (`or 0.0` only tells the type checker: with a number as default, None never comes.)
        scale = _number(row, "scale_factor", 1.0) or 0.0
        offset = _number(row, "offset", 0.0) or 0.0
        minimum = _number(row, "min_value", None)
        maximum = _number(row, "max_value", None)
        unit = row.get("unit")
        unit = str(unit) if unit not in (None, "") else None
    except ValueError as exc:
        raise BadDefinition(f"{label}: {exc}") from None
    try:
        return SignalDef(name.strip(), can_id, start_bit, length, big_endian, kind, scale, offset, unit,
                         minimum, maximum)
    except BadDefinition as exc:
        raise BadDefinition(f"{label}: {str(exc).split(': ', 1)[1]}") from None


def in_range(value: float | None, minimum: float | None, maximum: float | None) -> bool:
    if value is None or value != value:
        return True  # no value, nothing to judge
    return (minimum is None or value >= minimum) and (maximum is None or value <= maximum)


@dataclass(frozen=True)
class CanCatalog:
    """CAN id -> frame decoders, for every device (`common`) and per device
    type (`typed`: a type's table already holds the common decoders)."""

    common: Mapping[int, tuple[Any, ...]] = field(default_factory=dict)
    typed: Mapping[str, Mapping[int, tuple[Any, ...]]] = field(default_factory=dict)
    definitions: tuple[Definition, ...] = ()
    problems: tuple[str, ...] = ()  # one line each: bad definitions, clashes, unreadable files

    def table(self, device_type: str | None) -> Mapping[int, tuple[Any, ...]]:
        if device_type is not None and self.typed:
            return self.typed.get(device_type, self.common)
        return self.common

    def __len__(self) -> int:
        return len(self.definitions)

    def decode(self, can_id: int, data: bytes,
               device_type: str | None = None) -> tuple[list[Result], list[str], list[str]]:
        """Every signal the frame holds, for one frame by hand: the results,
        the signals it is too short for, and what could not be decoded."""
        results: list[Result] = []
        short: list[str] = []
        errors: list[str] = []
        for decoder in self.table(device_type).get(can_id, ()):
            try:
                got, missing = decoder.decode(data)
            except FrameError as exc:
                errors.append(str(exc))
                continue
            results.extend(Result(*r) for r in got)
            short.extend(missing)
        return results, short, errors


class DbcSource(Protocol):
    """What a loaded DBC file offers the catalog (protocol.dbc.DbcFile)."""

    origin: str
    device_type: str | None
    frames: Mapping[int, Any]
    definitions: tuple[Definition, ...]


def build_catalog(rows: Iterable[Mapping] | None, dbc_files: Sequence[DbcSource] = (),
                  problems: Iterable[str] = ()) -> CanCatalog:
    """The catalog from the Config App's `can_signals` rows (only `is_active`
    ones; None: no such table) and loaded DBC files. A bad row is left out
    with one line in `problems`; a signal a DBC file defines too takes the
    DBC's definition (for the devices that file is for), with one line."""
    lines = list(problems)
    config: list[SignalDef] = []
    for row in rows or ():
        active = row.get("is_active")
        if active is not None and not (active is True or active in (1, "1", "true", "True")):
            continue
        try:
            config.append(config_app_signal(row))
        except BadDefinition as exc:
            lines.append(f"skipped {exc}")
    common_dbc = [f for f in dbc_files if f.device_type is None]
    types = sorted({f.device_type for f in dbc_files if f.device_type is not None})

    def table(dbcs: list) -> tuple[dict[int, tuple[Any, ...]], list[SignalDef], dict[str, str]]:
        by_dbc: dict[str, str] = {}
        for f in dbcs:
            for d in f.definitions:
                by_dbc.setdefault(d.name, f.origin)
        kept = [s for s in config if s.name not in by_dbc]
        frames: dict[int, list[Any]] = {}
        grouped: dict[int, list[SignalDef]] = {}
        for s in kept:
            grouped.setdefault(s.can_id, []).append(s)
        for can_id, signals in grouped.items():
            frames.setdefault(can_id, []).append(SignalSet(can_id, signals))
        for f in dbcs:
            for can_id, frame in f.frames.items():
                frames.setdefault(can_id, []).append(frame)
        clashes = {s.name: by_dbc[s.name] for s in config if s.name in by_dbc}
        return {k: tuple(v) for k, v in frames.items()}, kept, clashes

    common, kept, clashes = table(common_dbc)
    for name, origin in sorted(clashes.items()):
        lines.append(f"CAN signal {name!r} is defined in the Config App's can_signals and in {origin}: "
                     f"the DBC's definition is used")
    typed: dict[str, dict[int, tuple[Any, ...]]] = {}
    typed_definitions: list[Definition] = []
    overridden: dict[str, list[str]] = {}  # Config App signal -> device types a DBC file takes it for
    for device_type in types:
        own = [f for f in dbc_files if f.device_type == device_type]
        typed[device_type], _, clashes_t = table(common_dbc + own)
        for name, origin in sorted(clashes_t.items()):
            if name not in clashes:
                overridden.setdefault(name, []).append(device_type)
                lines.append(f"CAN signal {name!r} is defined in the Config App's can_signals and in {origin}: "
                             f"the DBC's definition is used for {device_type} devices")
        for f in own:
            typed_definitions.extend(f.definitions)
    definitions = []
    for s in kept:
        d = s.definition()
        if s.name in overridden:
            d = replace(d, note=f"not for {', '.join(overridden[s.name])} devices (a DBC file defines it)")
        definitions.append(d)
    for f in common_dbc:
        definitions.extend(f.definitions)
    definitions.extend(typed_definitions)
    return CanCatalog(common, typed, tuple(definitions), tuple(lines))
