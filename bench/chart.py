"""The results chart as a PNG, written with the standard library only.

Why no matplotlib: the chart is a handful of bars and labels, and the
benchmark also runs in CI (`make bench QUICK=1`) and in the test suite from
a venv with only the `test` extra; a plotting stack (matplotlib, numpy,
pillow, fonttools: tens of MiB) on every fresh machine for one picture is
not worth it. This module is a minimal PNG encoder (zlib + crc32), filled
rectangles, and a 5x7 bitmap font (upper case, digits, punctuation).

Layout: one row per metric that has a target. The bar is the figure scaled
so that the gate sits at the middle of the track (black mark) and the aim
at its own mark (blue); the colour is the verdict: green meets the aim,
amber meets only the gate, red misses the gate, grey not judged (quick and
smoke runs). Metrics without a target are listed as text below.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Iterable

# 5x7 glyphs, one 5-bit row each (most significant bit on the left).
_GLYPHS = {
    "0": (0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E), "1": (0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E),
    "2": (0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F), "3": (0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E),
    "4": (0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02), "5": (0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E),
    "6": (0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E), "7": (0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08),
    "8": (0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E), "9": (0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C),
    "A": (0x0E, 0x11, 0x11, 0x11, 0x1F, 0x11, 0x11), "B": (0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E),
    "C": (0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E), "D": (0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C),
    "E": (0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F), "F": (0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10),
    "G": (0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F), "H": (0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11),
    "I": (0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E), "J": (0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C),
    "K": (0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11), "L": (0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F),
    "M": (0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11), "N": (0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11),
    "O": (0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E), "P": (0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10),
    "Q": (0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D), "R": (0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11),
    "S": (0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E), "T": (0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04),
    "U": (0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E), "V": (0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04),
    "W": (0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A), "X": (0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11),
    "Y": (0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04), "Z": (0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F),
    " ": (0, 0, 0, 0, 0, 0, 0), ".": (0, 0, 0, 0, 0, 0x0C, 0x0C), ",": (0, 0, 0, 0, 0x0C, 0x04, 0x08),
    ":": (0, 0x0C, 0x0C, 0, 0x0C, 0x0C, 0), ";": (0, 0x0C, 0x0C, 0, 0x0C, 0x04, 0x08),
    "/": (0, 0x01, 0x02, 0x04, 0x08, 0x10, 0), "%": (0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03),
    "(": (0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02), ")": (0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08),
    "[": (0x0E, 0x08, 0x08, 0x08, 0x08, 0x08, 0x0E), "]": (0x0E, 0x02, 0x02, 0x02, 0x02, 0x02, 0x0E),
    "-": (0, 0, 0, 0x1F, 0, 0, 0), "+": (0, 0x04, 0x04, 0x1F, 0x04, 0x04, 0), "=": (0, 0, 0x1F, 0, 0x1F, 0, 0),
    "<": (0x02, 0x04, 0x08, 0x10, 0x08, 0x04, 0x02), ">": (0x08, 0x04, 0x02, 0x01, 0x02, 0x04, 0x08),
    "_": (0, 0, 0, 0, 0, 0, 0x1F), "*": (0, 0x04, 0x15, 0x0E, 0x15, 0x04, 0), "'": (0x0C, 0x04, 0x08, 0, 0, 0, 0),
    "?": (0x0E, 0x11, 0x01, 0x02, 0x04, 0, 0x04), "#": (0x0A, 0x0A, 0x1F, 0x0A, 0x1F, 0x0A, 0x0A),
    "!": (0x04, 0x04, 0x04, 0x04, 0x04, 0, 0x04), "&": (0x0C, 0x12, 0x14, 0x08, 0x15, 0x12, 0x0D),
}

WHITE = (255, 255, 255)
BLACK = (20, 20, 20)
GREY = (150, 150, 150)
TRACK = (232, 232, 232)
GREEN = (46, 160, 67)
AMBER = (215, 150, 0)
RED = (205, 45, 45)
BLUE = (40, 90, 200)


class Canvas:
    def __init__(self, width: int, height: int, background=WHITE) -> None:
        self.width, self.height = width, height
        self.pixels = bytearray(bytes(background) * (width * height))

    def rect(self, x: int, y: int, w: int, h: int, color) -> None:
        x0, y0 = max(0, x), max(0, y)
        x1, y1 = min(self.width, x + w), min(self.height, y + h)
        if x1 <= x0 or y1 <= y0:
            return
        line = bytes(color) * (x1 - x0)
        for yy in range(y0, y1):
            start = (yy * self.width + x0) * 3
            self.pixels[start:start + len(line)] = line

    def text(self, x: int, y: int, text: str, color=BLACK, scale: int = 2) -> int:
        """Draw `text` (upper-cased; unknown characters as '?'); return its width."""
        cx = x
        for ch in text.upper():
            glyph = _GLYPHS.get(ch, _GLYPHS["?"])
            for row, bits in enumerate(glyph):
                for col in range(5):
                    if bits & (0x10 >> col):
                        self.rect(cx + col * scale, y + row * scale, scale, scale, color)
            cx += 6 * scale
        return cx - x

    def png(self) -> bytes:
        raw = bytearray()
        stride = self.width * 3
        for y in range(self.height):
            raw.append(0)  # filter: none
            raw += self.pixels[y * stride:(y + 1) * stride]

        def chunk(kind: bytes, data: bytes) -> bytes:
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

        header = struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)  # 8-bit RGB
        return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(raw), 9)) + chunk(b"IEND", b"")


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "x":
        return f"{value:.2f} x"
    return f"{value:,.0f} {unit}" if abs(value) >= 100 else f"{value:.3g} {unit}"


def _colour(m, judged: bool):
    if not judged or m.value is None:
        return GREY

    def meets(t: float) -> bool:
        return m.value >= t if m.better == "higher" else m.value <= t

    if m.aim is not None and meets(m.aim):
        return GREEN
    return AMBER if meets(m.gate) else RED


def write_chart(path: Path, metrics: Iterable, title: str, judged: bool, subtitle: str = "") -> None:
    metrics = list(metrics)
    gated = [m for m in metrics if m.gate is not None]
    others = [m for m in metrics if m.gate is None]
    label_w, track_w, value_w = 480, 440, 360
    width = 20 + label_w + track_w + value_w
    row_h, text_h = 36, 22
    height = 80 + row_h * len(gated) + 40 + text_h * len(others) + 20
    c = Canvas(width, height)
    c.text(20, 10, title[:100], BLACK, 2)
    c.text(20, 32, subtitle[:200], BLACK, 1)
    c.text(20, 48, "bar: figure / gate (gate at mid-track, blue mark: aim). green aim met, amber gate met, "
                   "red gate missed, grey not judged"[:150], GREY, 1)
    y = 70
    x0 = 20 + label_w
    for m in gated:
        c.text(20, y + 8, f"{m.scenario} {m.name}"[:39], BLACK, 2)
        c.rect(x0, y + 4, track_w, 22, TRACK)
        half = track_w / 2
        if m.value is not None and m.gate:
            c.rect(x0, y + 6, int(min(track_w, max(2, m.value / m.gate * half))), 18, _colour(m, judged))
        c.rect(x0 + int(half) - 1, y, 3, 30, BLACK)
        if m.aim is not None and m.gate:
            ax = x0 + int(min(track_w - 2, m.aim / m.gate * half))
            c.rect(ax - 1, y, 3, 30, BLUE)
        sign = ">=" if m.better == "higher" else "<="
        c.text(x0 + track_w + 12, y + 8, f"{_fmt(m.value, m.unit)} (gate {sign}{_fmt(m.gate, m.unit)})"[:29], BLACK, 2)
        y += row_h
    y += 20
    if others:
        c.text(20, y, "other figures", GREY, 2)
        y += text_h + 4
    for m in others:
        c.text(20, y, f"{m.scenario} {m.name}: {_fmt(m.value, m.unit)}"[:100], BLACK, 2)
        y += text_h
    path.write_bytes(c.png())
