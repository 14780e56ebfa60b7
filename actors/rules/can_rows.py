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
# Frame id texts seen (as devices write them) -> CAN id; bounded.
ID_CACHE_MAX = 4096
# Per-signal counters kept at most (the rest are summed under "other").
MAX_NAMED = 500


class CanRows:
    def __init__(self, catalog: CanCatalog | None = None, keep_raw: bool = True) -> None:
        self.catalog = catalog or CanCatalog()
        self._compiled: dict[int, dict] = {}
        self.keep_raw = keep_raw
        self._ids: dict[Any, tuple[int | None, str | None]] = {}
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
        """CAN id -> ((emitter or None, decoder), ...) of one table of the
        catalog, made once per catalog."""
        got = self._compiled.get(id(table))
        if got is None:
            got = {}
            for can_id, decoders in table.items():
                got[can_id] = tuple((d.emitter(ROW) if hasattr(d, "emitter") else None, d) for d in decoders)
            self._compiled[id(table)] = got
        return got

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
            end = start + 1
            while end < n:
                r = rows[end]
                # (each message's idx starts at 0: a row whose idx does not
                # grow starts the next message, whatever its identity)
                if r[IDX] is None or prev[IDX] is None or r[IDX] <= prev[IDX] or r[0] != prev[0]:
                    break
                if r[SOURCE] == RAW:
                    has_raw = True
                prev = r
                end += 1
            if has_raw:
                # idx grows within a message: the last row holds the highest.
                table = catalog.table(device_type(prev[0]) if device_type is not None and catalog.typed else None)
                self._message(rows, start, end, (prev[IDX] or 0) + 1, self._table(table), out)
            else:
                out.extend(rows[start:end])
            start = end
        return out

    def _message(self, rows: Sequence[tuple], start: int, end: int, next_idx: int, table: Any, out: list) -> None:
        ids = self._ids
        keep_raw = self.keep_raw
        append = out.append
        seen = no_definition = frames = signals = 0
        for i in range(start, end):
            r = rows[i]
            if r[SOURCE] != RAW:
                append(r)
                continue
            seen += 1
            known = ids.get(r[METRIC])
            if known is None:
                known = self._can_id(r[METRIC])
            decoders = table.get(known[0]) if known[0] is not None else None
            if not decoders:
                no_definition += 1
                append(r)
                continue
            data = r[RAW_BYTES]
            if not isinstance(data, bytes):
                data = _as_bytes(data)
            tag = known[1]
            uuid, boot_id, seq, ts, received_at = r[0], r[1], r[2], r[4], r[5]
            # The raw row goes first when it is kept; signal rows straight after.
            if keep_raw:
                append(r)
            mark = len(out)
            for emit, decoder in decoders:
                if emit is not None:  # the Config App's signals: rows straight from generated code
                    got = emit(data, append, next_idx, uuid, boot_id, seq, ts, received_at, tag)
                    if got is not None:
                        next_idx += got[0]
                        for name in got[1]:
                            self._count(self.out_of_range, name)
                        continue
                try:
                    results, short = decoder.decode(data)
                except Exception as exc:  # a cantools DecodeError (unknown multiplexer value), ...
                    self._failed(tag, exc)
                    continue
                if short:
                    for name in short:
                        self._count(self.too_short, name)
                for name, value, unit, ok in results:
                    append((uuid, boot_id, seq, next_idx, ts, received_at, DECODED, name, value, unit, tag, None))
                    next_idx += 1
                    if not ok:
                        self._count(self.out_of_range, name)
            decoded = len(out) - mark
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

    def _can_id(self, text: Any) -> tuple[int | None, str | None]:
        """(CAN id, its tag text) of a frame id as the device wrote it, cached."""
        try:
            can_id: int | None = parse_can_id(text)
        except ValueError:
            can_id = None
            self.frames_bad_id += 1
        known = (can_id, can_id_text(can_id) if can_id is not None else None)
        if isinstance(text, (str, int)):
            if len(self._ids) >= ID_CACHE_MAX:
                self._ids.clear()
            self._ids[text] = known
        return known

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
