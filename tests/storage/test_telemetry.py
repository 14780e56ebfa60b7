"""Telemetry: stored once per (device_uuid, boot_id, seq, idx), queries,
retention."""

from __future__ import annotations

import pytest

from storage import prune, telemetry
from storage.db import write_transaction
from storage.telemetry import TELEMETRY_COLUMNS


def row(device="d1", boot=1, seq=1, idx=0, ts=100.0, metric="m", value=1.0, source="sensor", raw=None):
    return (device, boot, seq, idx, ts, ts + 0.5, source, metric, value, "C", None, raw)


def test_columns_are_the_contract_order():
    assert TELEMETRY_COLUMNS == (
        "device_uuid", "boot_id", "seq", "idx", "ts", "received_at",
        "source", "metric", "value", "unit", "tag", "raw",
    )


def test_a_repeated_message_is_stored_once(db):
    message = [row(idx=i) for i in range(3)]
    assert telemetry.insert_rows(db, message) == 3
    assert telemetry.insert_rows(db, message) == 0  # redelivered
    assert telemetry.insert_rows(db, message + message) == 0
    assert telemetry.count("d1") == 3


def test_repeats_within_one_batch_are_stored_once(db):
    assert telemetry.insert_rows(db, [row(), row(), row(idx=1), row()]) == 2


def test_what_makes_a_row_distinct(db):
    rows = [row(), row(device="d2"), row(boot=2), row(seq=2), row(idx=1)]
    assert telemetry.insert_rows(db, rows) == 5


def test_rows_without_seq_are_never_deduplicated(db):
    r = row(seq=None, boot=None, idx=0)
    assert telemetry.insert_rows(db, [r, r]) == 2
    assert telemetry.insert_rows(db, [r]) == 1
    assert telemetry.count("d1") == 3


def test_mixed_batch_counts_only_new_rows(db):
    telemetry.insert_rows(db, [row(seq=1), row(seq=2)])
    assert telemetry.insert_rows(db, [row(seq=1), row(seq=3), row(seq=None), row(seq=2)]) == 2


def test_empty_batch(db):
    assert telemetry.insert_rows(db, []) == 0


def test_values_round_trip(db):
    telemetry.insert_rows(db, [
        ("d1", 7, 9, 0, 100.0, 100.5, "can_raw", "0x123", None, None, "0x123", b"\x0a\x1b\x2c"),
        ("d1", 7, 9, 1, 101.0, 101.5, "analog", "fuel", 67.8, "%", None, None),
    ])
    raw, fuel = sorted(telemetry.query("d1"), key=lambda r: r.idx)
    assert (raw.source, raw.metric, raw.value, raw.tag, raw.raw) == ("can_raw", "0x123", None, "0x123", b"\x0a\x1b\x2c")
    assert (fuel.value, fuel.unit, fuel.received_at, fuel.boot_id, fuel.seq) == (67.8, "%", 101.5, 7, 9)


def test_insert_joins_an_enclosing_batch_transaction(db):
    # The DbWriter wraps a whole batch; a failure later in it undoes the rows.
    with pytest.raises(RuntimeError):
        with write_transaction():
            assert telemetry.insert_rows(db, [row(seq=1), row(seq=2)]) == 2
            raise RuntimeError("later step of the batch failed")
    assert telemetry.count() == 0
    with write_transaction():
        telemetry.insert_rows(db, [row(seq=1)])
        telemetry.insert_rows(db, [row(seq=1), row(seq=2)])
    assert telemetry.count() == 2


def test_query_filters_and_order(db):
    telemetry.insert_rows(db, [
        row(seq=1, ts=100.0, metric="rpm", source="can"),
        row(seq=2, ts=300.0, metric="rpm", source="can"),
        row(seq=3, ts=200.0, metric="fuel", source="analog"),
        row(device="d2", seq=1, ts=250.0, metric="rpm", source="can"),
    ])
    assert [r.ts for r in telemetry.query("d1")] == [300.0, 200.0, 100.0]  # newest first
    assert [r.ts for r in telemetry.query("d1", metric="rpm")] == [300.0, 100.0]
    assert [r.ts for r in telemetry.query("d1", source="analog")] == [200.0]
    assert [r.ts for r in telemetry.query("d1", since=200.0)] == [300.0, 200.0]
    assert [r.ts for r in telemetry.query("d1", since=100.0, until=300.0)] == [200.0, 100.0]
    assert [r.ts for r in telemetry.query("d1", limit=1)] == [300.0]
    assert telemetry.query("nobody") == []


@pytest.mark.sqlite_only  # SQLite's query planner (EXPLAIN QUERY PLAN)
def test_query_uses_the_device_time_index(db):
    plan = " ".join(
        str(r[-1]) for r in db.execute_sql(
            "EXPLAIN QUERY PLAN SELECT * FROM telemetry WHERE device_uuid = ? AND ts >= ? ORDER BY ts DESC, id DESC LIMIT 10",
            ("d1", 0.0),
        )
    )
    assert "telemetry_device_uuid_ts" in plan and "TEMP B-TREE" not in plan


def test_prune_older_than(db):
    rows = [row(seq=i, ts=float(i)) for i in range(1, 101)]
    # A replayed old reading that arrived late (high id, old ts).
    rows.append(row(device="late", seq=1, ts=5.0))
    telemetry.insert_rows(db, rows)
    assert prune.prune_older_than(50.0, batch=7) == 49 + 1
    remaining = telemetry.query("d1", limit=1000)
    assert min(r.ts for r in remaining) == 50.0 and len(remaining) == 51
    assert telemetry.query("late") == []
    assert prune.prune_older_than(50.0) == 0


@pytest.mark.sqlite_only  # the size limit counts SQLite pages (AUTOCORE_DB_MAX_MB is SQLite's)
def test_prune_to_size_removes_oldest_until_small_enough(db):
    for b in range(10):
        telemetry.insert_rows(db, [row(seq=b * 2000 + i, ts=float(b * 2000 + i), raw=b"x" * 100) for i in range(2000)])
    full = prune.used_bytes()
    target = full // 2
    deleted = prune.prune_to_size(target, batch=1000)
    assert 0 < deleted < 20000
    assert prune.used_bytes() <= target
    # The oldest went first.
    oldest = min(r.ts for r in telemetry.query("d1", limit=20000))
    assert oldest == float(deleted)
    assert prune.prune_to_size(target) == 0


@pytest.mark.sqlite_only  # the size limit counts SQLite pages (AUTOCORE_DB_MAX_MB is SQLite's)
def test_prune_to_size_with_nothing_left_to_prune_stops(db):
    telemetry.insert_rows(db, [row(seq=i) for i in range(10)])
    assert prune.prune_to_size(1) == 10
    assert telemetry.count() == 0


@pytest.mark.sqlite_only  # the size limit counts SQLite pages (AUTOCORE_DB_MAX_MB is SQLite's)
def test_prune_to_size_max_rows(db):
    telemetry.insert_rows(db, [row(seq=i) for i in range(100)])
    assert prune.prune_to_size(1, batch=30, max_rows=50) == 50


def test_rows_get_ids_in_the_order_given(db):
    # Retention relies on ids growing with arrival (received_at).
    telemetry.insert_rows(db, [row(seq=s) for s in (5, 3, 9, 1)])
    telemetry.insert_rows(db, [row(seq=s) for s in (3, 2, 8)])  # 3 repeats: skipped
    ids_and_seqs = [(r.id, r.seq) for r in telemetry.query("d1", limit=10)]
    assert [seq for _, seq in sorted(ids_and_seqs)] == [5, 3, 9, 1, 2, 8]


def test_rows_after_walks_a_devices_new_rows_in_stored_order(db):
    # What `gateway telemetry --follow` reads, on either engine.
    telemetry.insert_rows(db, [row(seq=1), row(device="d2", seq=1), row(seq=2, metric="x")])
    first = telemetry.last_id()
    telemetry.insert_rows(db, [row(seq=3), row(seq=4, metric="x", ts=50.0), row(device="d2", seq=2)])
    assert [r.seq for r in telemetry.rows_after(0, "d1")] == [1, 2, 3, 4]
    assert [r.seq for r in telemetry.rows_after(first, "d1")] == [3, 4]
    assert [r.seq for r in telemetry.rows_after(0, "d1", metric="x")] == [2, 4]
    assert [r.seq for r in telemetry.rows_after(0, "d1", since=60.0)] == [1, 2, 3]
    assert [r.seq for r in telemetry.rows_after(0, "d1", limit=2)] == [1, 2]
    assert telemetry.last_id() == first + 3
