from __future__ import annotations

import pytest

from protocol.schema import (
    MAX_DEPTH,
    flatten,
    get_bool,
    get_int,
    get_list,
    get_map,
    get_number,
    get_str,
    number_or_tag,
)
from protocol.values import SCHEMA, Rejected


@pytest.mark.parametrize(
    "value, expected",
    [
        (True, (1.0, None)),
        (False, (0.0, None)),
        (3, (3.0, None)),
        (-2.5, (-2.5, None)),
        ("12.5", (12.5, None)),
        ("-3", (-3.0, None)),
        (" 7 ", (7.0, None)),
        ("1e3", (1000.0, None)),
        ("abc", (None, "abc")),
        ("", (None, "")),
        ("nan", (None, "nan")),
        ("inf", (None, "inf")),
        ("1_000", (None, "1_000")),
        ("0x10", (None, "0x10")),
        ("1e999", (None, "1e999")),
        (float("nan"), (None, "nan")),
        (float("inf"), (None, "inf")),
        (10**400, (None, str(10**400))),
        (None, (None, None)),
        ([1], (None, None)),
        ({"a": 1}, (None, None)),
        (b"\x01", (None, None)),
    ],
)
def test_number_or_tag(value, expected):
    assert number_or_tag(value) == expected


def test_flatten_keeps_order_and_dots():
    obj = {"a": 1, "b": {"c": 2, "d": {"e": "x"}}, "f": [1], 3: True}
    assert list(flatten(obj)) == [("a", 1), ("b.c", 2), ("b.d.e", "x"), ("f", [1]), ("3", True)]
    assert list(flatten({"x": 1}, "system")) == [("system.x", 1)]


def test_flatten_refuses_bad_keys_and_depth():
    with pytest.raises(Rejected) as caught:
        list(flatten({b"k": 1}))
    assert caught.value.reason == SCHEMA
    deep: dict = {"v": 1}
    for _ in range(MAX_DEPTH + 1):
        deep = {"n": deep}
    with pytest.raises(Rejected) as caught:
        list(flatten(deep))
    assert "nested deeper" in caught.value.detail


def _detail(call):
    with pytest.raises(Rejected) as caught:
        call()
    assert caught.value.reason == SCHEMA
    return caught.value.detail


def test_getters_accept_and_default():
    obj = {"s": "x", "n": 2.5, "i": 17.0, "b": False, "l": [], "m": {}, "z": None}
    assert get_str(obj, "s", "p") == "x"
    assert get_str(obj, "z", "p", default="d") == "d"
    assert get_number(obj, "n", "p") == 2.5
    assert get_int(obj, "i", "p") == 17
    assert get_bool(obj, "b", "p") is False
    assert get_list(obj, "l", "p") == []
    assert get_map(obj, "m", "p") == {}
    assert get_map(obj, "missing", "p") is None


def test_getter_details():
    obj = {"s": 5, "n": "abc", "i": 1.5, "b": "yes", "l": {}, "m": [], "neg": -1, "e": "", "lat": 91}
    assert _detail(lambda: get_str(obj, "s", "announce")) == "announce.s: expected text, got number 5"
    assert _detail(lambda: get_number(obj, "n", "telemetry.gps")) == \
        'telemetry.gps.n: expected number, got text "abc"'
    assert _detail(lambda: get_int(obj, "i", "p")) == "p.i: expected integer, got number 1.5"
    assert _detail(lambda: get_int(obj, "neg", "p", minimum=0)) == "p.neg: expected integer >= 0, got number -1"
    assert _detail(lambda: get_bool(obj, "b", "p")) == 'p.b: expected boolean, got text "yes"'
    assert _detail(lambda: get_list(obj, "l", "p")) == "p.l: expected array, got object"
    assert _detail(lambda: get_map(obj, "m", "p")) == "p.m: expected object, got array"
    assert _detail(lambda: get_str(obj, "e", "p")) == "p.e: must not be empty"
    assert _detail(lambda: get_str(obj, "missing", "p", required=True)) == "p.missing: required"
    assert _detail(lambda: get_number(obj, "lat", "g", minimum=-90, maximum=90)) == \
        "g.lat: expected number between -90 and 90, got number 91"
    assert _detail(lambda: get_number({"x": 0}, "x", "p", positive=True)) == \
        "p.x: expected number greater than 0, got number 0"
