"""The Config App's signals of one CAN id, compiled (pure).

Split from protocol/can.py, which holds the definitions and the catalog:
this is the part that runs for every frame, so it generates one Python
function per CAN id (see `SignalSet`). The generated source holds only
numbers and names checked here; every value from a definition reaches it
as a closure variable.
"""

from __future__ import annotations

import keyword
import math
import struct
from typing import Any, Literal, Sequence, TYPE_CHECKING

if TYPE_CHECKING:
    from protocol.can import SignalDef

class SignalSet:
    """The Config App's signals of one CAN id, compiled for speed.

    It runs for every frame on the telemetry path, so the common case (a
    frame long enough for every signal) is one function generated for this
    set of signals: the frame read with one `struct` call when every signal
    is a whole byte-aligned field, else as one integer per byte order with
    a constant shift and mask per signal; scale, offset and range folded in.
    A shorter frame goes through the plain loop, which names what it is too
    short for. Both give (name, value, unit, in_range) tuples."""

    __slots__ = ("can_id", "signals", "meta", "_plan", "_need", "_values", "_emitters")

    def __init__(self, can_id: int, signals: Sequence[SignalDef]) -> None:
        self.can_id = can_id
        self.signals = tuple(signals)
        plan = []
        for s in self.signals:
            first = s.start_bit // 8
            shift = s.start_bit % 8
            end = first + (shift + s.length + 7) // 8
            order: Literal["big", "little"] = "big" if s.big_endian else "little"
            unpack = None
            if s.kind == "float":
                unpack = struct.Struct(("!" if s.big_endian else "<") + ("f" if s.length == 32 else "d")).unpack
            sign_bit = 1 << (s.length - 1) if s.kind == "signed" else 0
            plan.append((s.name, first, end, order, shift, (1 << s.length) - 1, sign_bit, unpack, s.scale,
                         s.offset, s.unit, s.minimum, s.maximum))
        self._plan = tuple(plan)
        self._need = max((p[2] for p in plan), default=0)
        self.meta = tuple((p[0], p[10]) for p in plan)  # (name, unit) of each signal, in order
        self._values = _compile(self._plan, self._need)
        self._emitters: dict[tuple, Any] = {}

    def emitter(self, row: Sequence[Any]) -> Any:
        """The fastest path, for a caller that turns signals into rows of its
        own shape: `row` names each field, `"idx"`, `"name"`, `"value"`,
        `"unit"`, a 1-tuple for a constant, any other text for a value the
        caller passes. The function returned takes (data, append, idx, the
        named values in `row` order); for a frame long enough for every
        signal it appends one row per signal (idx, idx + 1, ...: `len(meta)`
        of them) and returns the names out of range (a tuple, empty when
        all are in range); for a shorter frame it returns None and appends
        nothing (then `decode` says what the frame holds)."""
        key = tuple(row)
        emit = self._emitters.get(key)
        if emit is None:
            for part in _given(key):
                if not part.isidentifier() or keyword.iskeyword(part) or part.startswith("_") \
                        or part in ("data", "append"):
                    raise ValueError(f"row field {part!r} is not a name the emitter can take")
            emit = self._emitters[key] = _compile(self._plan, self._need, key)
        return emit

    def decode(self, data: bytes) -> tuple[list[tuple], Sequence[str]]:
        if len(data) >= self._need:
            values, bad = self._values(data)
            return [(name, value, unit, name not in bad) for (name, unit), value in zip(self.meta, values)], ()
        results: list[tuple] = []
        short: list[str] = []
        size = len(data)
        for name, first, end, order, shift, mask, sign_bit, unpack, scale, offset, unit, lo, hi in self._plan:
            if end > size:
                short.append(name)
                continue
            if unpack is not None:
                raw = unpack(data[first:end])[0]
                if raw != raw or raw in (math.inf, -math.inf):
                    results.append((name, None, unit, True))
                    continue
            else:
                raw = (int.from_bytes(data[first:end], order) >> shift) & mask
                if sign_bit and raw & sign_bit:
                    raw -= sign_bit << 1
            value = raw * scale + offset
            results.append((name, value, unit, (lo is None or value >= lo) and (hi is None or value <= hi)))
        return results, short


_ROW_PARTS = ("idx", "name", "value", "unit")


def _given(row: Sequence[Any]) -> list[str]:
    """The values a row template takes from its caller, in order."""
    return [p for p in row if isinstance(p, str) and p not in _ROW_PARTS]


# struct codes of whole standard-width fields: (bits, kind) -> code
_STRUCT_CODES = {(8, "unsigned"): "B", (8, "signed"): "b", (16, "unsigned"): "H", (16, "signed"): "h",
                 (32, "unsigned"): "I", (32, "signed"): "i", (64, "unsigned"): "Q", (64, "signed"): "q",
                 (32, "float"): "f", (64, "float"): "d"}


def _one_struct(plan: Sequence[tuple]) -> tuple[str, list[int]] | None:
    """A struct format reading every signal of the set at once, and the plan
    index of each field in format order; None unless every signal is a
    byte-aligned standard-width field, all of one byte order, none
    overlapping (the FuelTech set is)."""
    fields = []
    orders = set()
    for i, (_, first, end, order, shift, mask, sign_bit, unpack, *_rest) in enumerate(plan):
        kind = "float" if unpack is not None else "signed" if sign_bit else "unsigned"
        code = _STRUCT_CODES.get((mask.bit_length(), kind))
        if shift or code is None or (end - first) * 8 != mask.bit_length():
            return None
        orders.add(order)
        fields.append((first, end, code, i))
    if len(orders) != 1:
        return None
    fields.sort()
    fmt, at = ("<" if orders == {"little"} else ">"), 0
    for first, end, code, _ in fields:
        if first < at:
            return None  # overlapping signals
        fmt += "x" * (first - at) + code
        at = end
    return fmt, [i for *_, i in fields]


def _compile(plan: Sequence[tuple], need: int, row: Sequence[Any] | None = None) -> Any:
    """The generated decoder of a frame at least `need` bytes long: data ->
    ([value, ...], (names out of range, ...)). With a `row` template (see
    `SignalSet.emitter`) it makes the caller's rows itself instead. Every
    constant (names, units, limits, unpackers) reaches it as a closure
    variable, never as source text, so no definition can inject code."""
    consts: list[Any] = []

    def const(value: Any) -> str:
        consts.append(value)
        return f"_k{len(consts) - 1}"

    body: list[str] = []
    packed = _one_struct(plan)
    if packed is not None:
        # Every signal a whole standard-width field: one C call reads them all.
        fmt, order_of = packed
        body.append(f"{', '.join(f'_v{i}' for i in order_of)}, = {const(struct.Struct(fmt).unpack_from)}(data)")
    else:
        if any(p[7] is None and p[3] == "little" for p in plan):
            body.append(f"_L = int.from_bytes(data[:{need}], 'little')")
        if any(p[7] is None and p[3] == "big" for p in plan):
            body.append(f"_B = int.from_bytes(data[:{need}], 'big')")
    items = []
    body.append("_bad = ()")
    for i, (name, first, end, order, shift, mask, sign_bit, unpack, scale, offset, unit, lo, hi) in enumerate(plan):
        v = f"_v{i}"
        scaled = f"{v} * {const(scale)}" + (f" + {const(offset)}" if offset else "")
        if unpack is not None:
            if packed is None:
                body.append(f"{v} = {const(unpack)}(data[{first}:{end}])[0]")
            body.append(f"{v} = {scaled} if {v} - {v} == 0 else None")  # NaN, inf: no value
        else:
            if packed is None:
                if order == "little":
                    body.append(f"{v} = (_L >> {first * 8 + shift}) & {mask}")
                else:
                    body.append(f"{v} = (_B >> {(need - end) * 8 + shift}) & {mask}")
                if sign_bit:
                    body.append(f"if {v} & {sign_bit}: {v} -= {sign_bit << 1}")
            body.append(f"{v} = {scaled}")
        checks = []
        if lo is not None:
            checks.append(f"{v} >= {const(lo)}")
        if hi is not None:
            checks.append(f"{v} <= {const(hi)}")
        if checks:
            ok = " and ".join(checks)
            if unpack is not None:
                ok = f"{v} is None or ({ok})"
            body.append(f"if not ({ok}): _bad += ({const(name)},)")
        items.append(v)
    if row is None:
        body.append(f"return [{', '.join(items)}], _bad")
        params = "data"
    else:
        for j, v in enumerate(items):
            parts = []
            for part in row:
                if part == "idx":
                    parts.append(f"idx + {j}" if j else "idx")
                elif part == "name":
                    parts.append(const(plan[j][0]))
                elif part == "value":
                    parts.append(v)
                elif part == "unit":
                    parts.append(const(plan[j][10]))
                elif isinstance(part, str):
                    parts.append(part)  # a parameter of the emitter
                else:
                    parts.append(const(part[0]))  # a constant, as a 1-tuple
            body.append(f"append(({', '.join(parts)}))")
        body.append("return _bad")
        body.insert(0, f"if len(data) < {int(need)}: return None")
        params = ", ".join(["data", "append", "idx", *_given(row)])
    names = ", ".join(f"_k{i}" for i in range(len(consts)))
    source = (f"def make({names}):\n    def full({params}):\n"
              + "".join(f"        {line}\n" for line in body) + "    return full\n")
    namespace: dict[str, Any] = {}
    exec(compile(source, "<can signals>", "exec"), namespace)  # noqa: S102 - source made above from numbers only
    return namespace["make"](*consts)
