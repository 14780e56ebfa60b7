"""Raw CAN frame rows -> signal rows (the TelemetryBatcher's rule, no threads).

Rows come as storage.telemetry.TELEMETRY_COLUMNS tuples, the rows of one
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
# Frame id texts seen (as devices write them) -> CAN id; bounded.
ID_CACHE_MAX = 4096
# Per-signal counters kept at most (the rest are summed under "other").
MAX_NAMED = 500


class CanRows:
    def __init__(self, catalog: CanCatalog | None = None, keep_raw: bool = True) -> None:
        self.catalog = catalog or CanCatalog()
        self.keep_raw = keep_raw
        self._ids: dict[str, int | None] = {}
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

    def apply(self, rows: Sequence[tuple], device_type: Callable[[str], str | None] | None = None) -> Sequence[tuple]:
        """`rows` with the signal rows added (the same object when there is
        no frame to decode)."""
        if not self.catalog.common and not self.catalog.typed:
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
        start = 0
        n = len(rows)
        while start < n:
            end = start + 1
            while end < n and _same_message(rows[end - 1], rows[end]):
                end += 1
            self._message(rows, start, end, out, device_type)
            start = end
        return out

    def _message(self, rows: Sequence[tuple], start: int, end: int, out: list, device_type: Any) -> None:
        message = rows[start:end]
        if not any(r[SOURCE] == RAW for r in message):
            out.extend(message)
            return
        next_idx = max((r[IDX] for r in message if r[IDX] is not None), default=-1) + 1
        first = message[0]
        table = self.catalog.table(device_type(first[0]) if device_type is not None and self.catalog.typed else None)
        for r in message:
            if r[SOURCE] != RAW:
                out.append(r)
                continue
            self.frames_seen += 1
            can_id = self._can_id(r[METRIC])
            decoders = table.get(can_id) if can_id is not None else None
            if not decoders:
                self.frames_no_definition += 1
                out.append(r)
                continue
            data = r[RAW_BYTES]
            if isinstance(data, str):  # hex text (a row that never went through the processor)
                try:
                    data = bytes.fromhex(data)
                except ValueError:
                    data = b""
            signals: list[tuple] = []
            tag = can_id_text(can_id)
            for decoder in decoders:
                try:
                    results, short = decoder.decode(data or b"")
                except Exception as exc:  # a cantools DecodeError (unknown multiplexer value), ...
                    self._failed(tag, exc)
                    continue
                for name in short:
                    self._count(self.too_short, name)
                for res in results:
                    signals.append((r[0], r[1], r[2], next_idx, r[4], r[5], DECODED, res.name, res.value, res.unit,
                                    tag, None))
                    next_idx += 1
                    if not res.in_range:
                        self._count(self.out_of_range, res.name)
            if not signals:
                out.append(r)  # nothing decoded: the frame stays, raw
                continue
            self.frames_decoded += 1
            self.signals_decoded += len(signals)
            if self.keep_raw:
                out.append(r)
            else:
                self.raw_dropped += 1
            out.extend(signals)

    def _can_id(self, text: Any) -> int | None:
        try:
            return self._ids[text]
        except (KeyError, TypeError):
            pass
        try:
            can_id: int | None = parse_can_id(text)
        except ValueError:
            can_id = None
            self.frames_bad_id += 1
        if isinstance(text, (str, int)):
            if len(self._ids) >= ID_CACHE_MAX:
                self._ids.clear()
            self._ids[text] = can_id
        return can_id

    def _failed(self, tag: str, exc: Exception) -> None:
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


def _same_message(prev: tuple, row: tuple) -> bool:
    """Rows of one message are adjacent, share the device and identity, and
    their idx grows; a new message starts again at idx 0."""
    return (row[0] == prev[0] and row[1] == prev[1] and row[2] == prev[2]
            and row[IDX] is not None and prev[IDX] is not None and row[IDX] > prev[IDX])
