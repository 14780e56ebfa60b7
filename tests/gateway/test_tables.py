"""Aligned tables, value formatting and the duration/time parsers."""

from __future__ import annotations

import time

import click
import pytest

from gateway import tables
from gateway.commands.common import TIME_BOUND, parse_duration, parse_time


def test_columns_align_numbers_right_text_left():
    text = tables.table(["NAME", "COUNT", "NOTE"], [["a", 5, "x"], ["longer", 1234, None], ["b", None, "yy"]])
    assert text.splitlines() == [
        "NAME    COUNT  NOTE",
        "a           5  x",
        "longer   1234  -",
        "b           -  yy",
    ]


def test_explicit_right_columns_and_empty_cells_of_group_rows():
    text = tables.table(["A", "B"], [["core process", ""], ["  x", "1"]], right=(1,))
    assert text.splitlines() == ["A             B", "core process", "  x           1"]


def test_cells():
    assert tables.cell(None) == "-"
    assert tables.cell(True) == "yes"
    assert tables.cell(2.0) == "2"
    assert tables.cell(2.5) == "2.5"
    assert tables.cell(1 / 3) == "0.333333"
    assert tables.cell(b"\x0a\xff") == "0aff"
    assert tables.number(12345678.0) == "12345678"


def test_pairs_align_and_nest():
    text = tables.pairs([("a", 1), ("longer", None), ("group", [("x", "y"), ("zz", 2)])])
    assert text.splitlines() == ["a       1", "longer  -", "group", "  x   y", "  zz  2"]


def test_times():
    assert tables.timestamp(0) == "1970-01-01 00:00:00Z"
    assert tables.timestamp_ms(1.25) == "1970-01-01 00:00:01.250Z"
    assert tables.timestamp(None) == "-"
    assert [tables.seconds(v) for v in (0.25, 5, 12.5, 250, 7300, 200000, -3)] == [
        "250ms", "5s", "12.5s", "4m10s", "2h01m", "2d07h", "-3s"]
    assert tables.ago(100, now=130) == "30s ago"
    assert tables.ago(130, now=100) == "in 30s"
    assert tables.counts({"b": 2, "a": 1}) == "a 1, b 2"
    assert tables.counts({}) == "none"


@pytest.mark.parametrize("text, seconds", [
    ("90", 90), ("90s", 90), ("10m", 600), ("1h30m", 5400), ("7d", 604800), ("2w", 1209600), ("500ms", 0.5),
    ("1.5h", 5400), (" 10 m ", 600),
])
def test_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "ten", "10x", "m10", "-5", "10m-", "7 days"])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_times_as_bounds():
    assert parse_time("2025-01-08T10:30:00Z") == 1736332200
    assert parse_time("2025-01-08T12:30:00+02:00") == 1736332200
    assert parse_time("2025-01-08") == 1736294400
    assert TIME_BOUND.convert("10m", None, None) == pytest.approx(time.time() - 600, abs=2)
    assert TIME_BOUND.convert("2025-01-08T10:30:00Z", None, None) == 1736332200
    with pytest.raises(click.BadParameter):
        TIME_BOUND.convert("last tuesday", None, None)
