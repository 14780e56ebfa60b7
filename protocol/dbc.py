"""DBC files -> frame decoders, through cantools.

cantools knows what a hand-written decoder would get wrong: multiplexed
signals, DBC's Motorola bit numbering, signedness and IEEE floats. This
module takes a file's text (reading the file is storage's business) and
wraps each message in a `DbcFrame`, which decodes like `SignalSet` does
(protocol/can.py). Still pure: no I/O, no threads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import cantools

from protocol.can import Definition, FrameError, Result, in_range


class BadDbc(ValueError):
    """A DBC file cannot be used; the message names it and says why."""


class DbcFrame:
    """One message of a DBC file."""

    __slots__ = ("can_id", "message", "_units", "_limits", "_muxed")

    def __init__(self, message: Any) -> None:
        self.message = message
        self.can_id = message.frame_id
        self._units = {s.name: (s.unit or None) for s in message.signals}
        self._limits = {s.name: (s.minimum, s.maximum) for s in message.signals}
        self._muxed = any(s.multiplexer_ids for s in message.signals)

    def decode(self, data: bytes) -> tuple[list[Result], list[str]]:
        short_frame = len(data) < self.message.length
        try:
            decoded = self.message.decode(data, decode_choices=False, scaling=True, allow_truncated=short_frame,
                                          allow_excess=True)
        except Exception as exc:  # cantools' DecodeError: e.g. a multiplexer value the file does not define
            raise FrameError(f"message {self.message.name}: {exc}") from None
        results = []
        for name, value in decoded.items():
            value = float(value)
            if value != value:
                value = None
            lo, hi = self._limits[name]
            results.append(Result(name, value, self._units[name], in_range(value, lo, hi)))
        short = self._missing(decoded) if short_frame else []
        return results, short

    def _missing(self, decoded: Mapping[str, Any]) -> list[str]:
        """The signals the frame should have held but was too short for (a
        multiplexed signal only when its multiplexer value was there and
        selects it)."""
        missing = []
        for s in self.message.signals:
            if s.name in decoded:
                continue
            if s.multiplexer_ids:
                selector = decoded.get(s.multiplexer_signal)
                if selector is None or int(selector) not in s.multiplexer_ids:
                    continue
            missing.append(s.name)
        return missing


@dataclass(frozen=True)
class DbcFile:
    origin: str  # the file, as configured
    device_type: str | None  # None: for every device
    frames: Mapping[int, DbcFrame]
    definitions: tuple[Definition, ...]


def load_dbc_text(text: str, origin: str, device_type: str | None = None) -> DbcFile:
    """Parse a DBC file's text. Raises BadDbc naming the file."""
    try:
        db = cantools.database.load_string(text, database_format="dbc", strict=False)
    except Exception as exc:  # cantools raises several types for a bad file
        raise BadDbc(f"DBC file {origin}: {type(exc).__name__}: {str(exc)[:300]}") from None
    frames: dict[int, DbcFrame] = {}
    definitions: list[Definition] = []
    if not isinstance(db, cantools.database.can.Database):  # load_string(database_format="dbc") makes one
        raise BadDbc(f"DBC file {origin}: not a CAN database")
    for message in db.messages:
        frames[message.frame_id] = DbcFrame(message)
        for s in message.signals:
            note = f"message {message.name}"
            if s.is_multiplexer:
                note += ", multiplexer"
            if s.multiplexer_ids:
                note += f", when {s.multiplexer_signal} is {'/'.join(str(i) for i in s.multiplexer_ids)}"
            kind = "float" if s.is_float else "signed" if s.is_signed else "unsigned"
            definitions.append(Definition(
                s.name, message.frame_id, s.start, s.length,
                "big_endian" if s.byte_order == "big_endian" else "little_endian", kind,
                float(s.scale), float(s.offset), s.unit or None, s.minimum, s.maximum, origin, device_type, note))
    return DbcFile(origin, device_type, frames, tuple(definitions))
