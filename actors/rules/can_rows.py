"""Raw CAN frame rows -> signal rows (the TelemetryBatcher's rule, no threads).

Rows come as TelemetryRows (protocol/values.py), the rows of one
message together with `idx` 0, 1, 2, ... (actors/router.py). For each
`can_raw` row whose CAN id has definitions, every signal the frame holds
becomes a row: source `can`, metric the signal name, value = raw × scale +
offset, the unit, tag the CAN id as `0x100`, the frame's times. Those rows
take `idx` values after the message's last, in frame order, then signal
order: the same message and the same definitions give the same identities,
so a redelivered message is still ignored as a repeat.

With `keep_raw` off, a frame's raw row is left out once at least one of
its signals was decoded; a frame nothing decodes keeps its raw row, so no
frame is ever lost. Nothing about CAN data raises: a frame a decoder
chokes on is counted and kept raw.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any, Callable, Sequence

from protocol.can import CanCatalog, can_id_text, parse_can_id

logger = logging.getLogger("autocore.can")

RAW = "can_raw"
DECODED = "can"
SOURCE, METRIC, IDX, RAW_BYTES = 6, 7, 3, 11
# The row a signal becomes (a plain tuple in TelemetryRow's order: generated
# code appends it, and a tuple literal there is what keeps CAN decoding
# inside its budget), as a template SignalSet compiles its emitter from:
# names are the emitter's arguments, 1-tuples constants.
ROW = ("uuid", "boot_id", "seq", "idx", "ts", "received_at", (DECODED,), "name", "value", "unit", "tag", (None,))
# Frame id texts seen (as devices write them) -> decoders, per table; bounded.
ID_CACHE_MAX = 4096
# Per-signal counters kept at most (the rest are summed under "other").
MAX_NAMED = 500


class CanRows:
    def __init__(self, catalog: CanCatalog | None = None, keep_raw: bool = True) -> None:
        self.catalog = catalog or CanCatalog()
        self._compiled: dict[int, dict] = {}
        self.keep_raw = keep_raw
        self.frames_seen = 0
        self.frames_decoded = 0
        self.frames_no_definition = 0
        self.frames_failed = 0
        self.frames_bad_id = 0
        self.signals_decoded = 0
        self.raw_dropped = 0
        self.out_of_range: Counter[str] = Counter()
        self.too_short: Counter[str] = Counter()
        self._failures_logged: set[str] = set()

    def set_catalog(self, catalog: CanCatalog) -> None:
        """Takes effect between two calls of `apply`, never inside one."""
        self.catalog = catalog
        self._compiled = {}

    def _table(self, table: Any) -> dict:
        """Frame id text as devices write it -> (tag, ((emitter or None,
        signals it emits, decoder), ...)) for one table of the catalog,
        filled as ids are seen (an id without definitions maps to no
        decoders), cleared past ID_CACHE_MAX ids. One lookup a frame."""
        got = self._compiled.get(id(table))
        if got is None:
            got = self._compiled[id(table)] = {}
        return got

    def _entry(self, table: Any, known: dict, text: Any) -> tuple:
        """(tag, the one emitter or None, the signals it emits, decoders) of
        a frame id text; the emitter is set when the id's only decoder is a
        SignalSet (the Config App's signals: the common case, one call)."""
        can_id, tag = self._can_id(text)
        decoders = tuple(table.get(can_id, ())) if can_id is not None else ()
        only = decoders[0] if len(decoders) == 1 and hasattr(decoders[0], "emitter") else None
        entry = (tag, only.emitter(ROW) if only is not None else None, len(only.meta) if only is not None else 0,
                 tuple((d.emitter(ROW), len(d.meta), d) if hasattr(d, "emitter") else (None, 0, d)
                       for d in decoders))
        if isinstance(text, (str, int)):
            if len(known) >= ID_CACHE_MAX:
                known.clear()
            known[text] = entry
        return entry

    def apply(self, rows: Sequence[tuple], device_type: Callable[[str], str | None] | None = None) -> Sequence[tuple]:
        """`rows` with the signal rows added (the same object when there is
        no frame to decode). Written for speed: it runs on every batch."""
        catalog = self.catalog
        if not catalog.common and not catalog.typed:
            for r in rows:
                if r[SOURCE] == RAW:
                    self.frames_seen += 1
                    self.frames_no_definition += 1
            return rows
        for r in rows:
            if r[SOURCE] == RAW:
                break
        else:
            return rows
        out: list[tuple] = []
        n = len(rows)
        start = 0
        while start < n:
            # One message: adjacent rows of one device, idx growing.
            prev = rows[start]
            has_raw = prev[SOURCE] == RAW
            uuid = prev[0]
            last = prev[IDX]
            end = start + 1
            while end < n:
                r = rows[end]
                idx = r[IDX]
                # (each message's idx starts at 0: a row whose idx does not
                # grow starts the next message, whatever its identity)
                if idx is None or last is None or idx <= last or r[0] != uuid:
                    break
                if r[SOURCE] == RAW:
                    has_raw = True
                last = idx
                end += 1
            if has_raw:
                # idx grows within a message: the last row holds the highest.
                table = catalog.table(device_type(uuid) if device_type is not None and catalog.typed else None)
                self._message(rows, start, end, (last or 0) + 1, table, out)
            else:
                out.extend(rows[start:end])
            start = end
        return out

    def _message(self, rows: Sequence[tuple], start: int, end: int, next_idx: int, table: Any, out: list) -> None:
        known = self._table(table)
        keep_raw = self.keep_raw
        append = out.append
        seen = no_definition = frames = signals = 0
        first = rows[start]
        uuid, boot_id, seq, received_at = first[0], first[1], first[2], first[5]
        for i in range(start, end):
            r = rows[i]
            if r[SOURCE] != RAW:
                append(r)
                continue
            seen += 1
            entry = known.get(r[METRIC])
            if entry is None:
                entry = self._entry(table, known, r[METRIC])
            tag, only, count, decoders = entry
            if not decoders:
                no_definition += 1
                append(r)
                continue
            data = r[RAW_BYTES]
            if data.__class__ is not bytes:
                data = _as_bytes(data)
            # The raw row goes first when it is kept; signal rows straight after.
            if keep_raw:
                append(r)
            if only is not None:
                bad = only(data, append, next_idx, uuid, boot_id, seq, r[4], received_at, tag)
                if bad is not None:
                    next_idx += count
                    frames += 1
                    signals += count
                    if bad:
                        for name in bad:
                            self._count(self.out_of_range, name)
                    continue
            decoded = self._decoders(decoders, data, append, next_idx, uuid, boot_id, seq, r[4], received_at, tag)
            next_idx += decoded
            if not decoded:
                if not keep_raw:
                    append(r)  # nothing decoded: the frame stays, raw
                continue
            frames += 1
            signals += decoded
        self.frames_seen += seen
        self.frames_no_definition += no_definition
        self.frames_decoded += frames
        self.signals_decoded += signals
        if not keep_raw:
            self.raw_dropped += frames

    def _decoders(self, decoders: tuple, data: bytes, append: Callable, idx: int, uuid: Any, boot_id: Any,
                  seq: Any, ts: Any, received_at: Any, tag: Any) -> int:
        """The general case of one frame: every decoder of its CAN id (DBC
        messages, several sets, a frame too short for an emitter); appends
        the signal rows from `idx` on and returns how many."""
        start = idx
        for emit, count, decoder in decoders:
            if emit is not None:
                bad = emit(data, append, idx, uuid, boot_id, seq, ts, received_at, tag)
                if bad is not None:
                    idx += count
                    for name in bad:
                        self._count(self.out_of_range, name)
                    continue
            try:
                results, short = decoder.decode(data)
            except Exception as exc:  # a cantools DecodeError (unknown multiplexer value), ...
                self._failed(tag, exc)
                continue
            for name in short:
                self._count(self.too_short, name)
            for name, value, unit, ok in results:
                append((uuid, boot_id, seq, idx, ts, received_at, DECODED, name, value, unit, tag, None))
                idx += 1
                if not ok:
                    self._count(self.out_of_range, name)
        return idx - start

    def _can_id(self, text: Any) -> tuple[int | None, str | None]:
        """(CAN id, its tag text) of a frame id as the device wrote it."""
        try:
            can_id: int | None = parse_can_id(text)
        except ValueError:
            can_id = None
            self.frames_bad_id += 1
        return can_id, can_id_text(can_id) if can_id is not None else None

    def _failed(self, tag: str | None, exc: Exception) -> None:
        self.frames_failed += 1
        key = f"{tag}:{type(exc).__name__}"
        if key not in self._failures_logged and len(self._failures_logged) < MAX_NAMED:
            self._failures_logged.add(key)
            logger.warning("a CAN frame %s could not be decoded (%s: %s); its raw row is kept. "
                           "Logged once per CAN id and error type", tag, type(exc).__name__, str(exc)[:200])

    @staticmethod
    def _count(counter: Counter, name: str) -> None:
        if name in counter or len(counter) < MAX_NAMED:
            counter[name] += 1
        else:
            counter["(other)"] += 1

    def state(self) -> dict:
        return {
            "definitions": len(self.catalog),
            "keep_raw": self.keep_raw,
            "frames_seen": self.frames_seen,
            "frames_decoded": self.frames_decoded,
            "signals_decoded": self.signals_decoded,
            "frames_no_definition": self.frames_no_definition,
            "frames_failed": self.frames_failed,
            "frames_bad_id": self.frames_bad_id,
            "raw_rows_left_out": self.raw_dropped,
            "signals_out_of_range": sum(self.out_of_range.values()),
            "out_of_range": dict(self.out_of_range.most_common(20)),
            "signals_too_short": sum(self.too_short.values()),
            "too_short": dict(self.too_short.most_common(20)),
        }


def _as_bytes(data: Any) -> bytes:
    """Frame data that is not bytes (hex text of a row that never went
    through the processor, a memoryview, nothing): bytes, or empty."""
    if isinstance(data, str):
        try:
            return bytes.fromhex(data)
        except ValueError:
            return b""
    try:
        return bytes(data) if data is not None else b""
    except (TypeError, ValueError):
        return b""
