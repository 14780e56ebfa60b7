"""Telemetry insert throughput: `python -m bench.storage [--rows N] [--engine E]`.

Measures storage.telemetry.insert_rows the way the DbWriter uses it: one
transaction per 2000-row batch, the unique dedup index and the
(device_uuid, ts) index, on a fresh database. Both engines:

* SQLite (WAL, a fresh file in a temporary directory): synchronous NORMAL
  and FULL; half of each batch repeats rows already stored (a broker
  redelivering after a crash); and, for scale, peewee's insert_many on a
  smaller sample (what FIELD-NOTES warned about).
* PostgreSQL (a throw-away cluster of its own, initdb in a temporary
  directory, fsync on): the gateway's path (COPY into a staging table,
  INSERT ... SELECT ... ON CONFLICT DO NOTHING) with all new, half and all
  repeated rows, and for scale the plain executemany of the same INSERT
  ... ON CONFLICT DO NOTHING it replaced.

Then CAN decoding on the telemetry path at 8 frames a message
(bench/can_decode.py): frames/s decoded and what it costs the path.

The machines are noisy: compare the rows of one run, not runs.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from typing import Callable, Iterator

from peewee import chunked

from protocol.values import TelemetryRow, new_row
from storage import migrations, telemetry
from storage.db import close_database, database, open_database, write_transaction
from storage.models import Telemetry

BATCH = 2000
DEVICES = 50
READINGS_PER_MESSAGE = 3


def rows(n: int, start: int = 0) -> Iterator[TelemetryRow]:
    """`n` realistic rows: 50 devices round robin, 3 readings a message;
    TelemetryRows, as the gateway's core builds them."""
    t0 = 1_750_000_000.0
    for i in range(start, start + n):
        message, idx = divmod(i, READINGS_PER_MESSAGE)
        device, seq = message % DEVICES, message // DEVICES
        ts = t0 + message * 0.01
        yield new_row((f"esp32-relay-{device:02d}", 17, seq, idx, ts, ts + 0.002, "analog", f"sensor_{idx}",
                       20.0 + (i % 97) * 0.5, "C", None, None))


def batches_new(total: int) -> Iterator[list[tuple]]:
    for start in range(0, total, BATCH):
        yield list(rows(min(BATCH, total - start), start))


def batches_half_repeats(total: int) -> Iterator[list[tuple]]:
    """Each batch: 1000 new rows and 1000 rows of the previous batch."""
    half = BATCH // 2
    previous = list(rows(half, 0))
    fresh_start = half
    offered = 0
    while offered < total:
        fresh = list(rows(half, fresh_start))
        fresh_start += half
        yield previous + fresh
        offered += BATCH
        previous = fresh


def batches_all_repeats(total: int) -> Iterator[list[tuple]]:
    """The same batch again and again (its first offering is stored before timing)."""
    first = list(rows(BATCH))
    for _ in range(0, total, BATCH):
        yield first


def run(name: str, synchronous: str, batches: Callable[[int], Iterator[list[tuple]]], total: int) -> tuple:
    with tempfile.TemporaryDirectory() as tmp:
        return _timed(name, synchronous, os.path.join(tmp, "bench.db"), batches, total, synchronous=synchronous)


def _timed(name: str, label: str, location: str, batches: Callable[[int], Iterator[list[tuple]]], total: int,
           **options) -> tuple:
    open_database(location, **options)
    migrations.migrate()
    try:
        work = list(batches(total))  # built before timing: measure storage only
        if batches is batches_all_repeats:
            telemetry.insert_rows(database, work[0])
        offered = sum(len(b) for b in work)
        t = time.perf_counter()
        inserted = sum(telemetry.insert_rows(database, b) for b in work)
        elapsed = time.perf_counter() - t
    finally:
        close_database()
    return name, label, offered, inserted, elapsed


def run_postgres(total: int) -> list[tuple]:
    """The PostgreSQL cases, each on a fresh database of one throw-away cluster."""
    from tests.support.postgres import PgCluster

    cluster = PgCluster(fsync=True).start()
    try:
        results = [
            _timed(name, "fsync", cluster.create_database("bench"), batches, total)
            for name, batches in (("COPY + INSERT SELECT, all new", batches_new),
                                  ("COPY + INSERT SELECT, half rep.", batches_half_repeats),
                                  ("COPY + INSERT SELECT, all rep.", batches_all_repeats))
        ]
        results.append(run_pg_executemany(cluster.create_database("bench"), max(total // 4, BATCH)))
        return results
    finally:
        cluster.stop()


def run_pg_executemany(url: str, total: int) -> tuple:
    """What COPY replaced: executemany of INSERT ... ON CONFLICT DO NOTHING
    in the same 2000-row transactions."""
    cols = telemetry.TELEMETRY_COLUMNS
    sql = (f"INSERT INTO telemetry ({', '.join(cols)}) VALUES ({', '.join(['%s'] * len(cols))})"
           " ON CONFLICT DO NOTHING")
    open_database(url)
    migrations.migrate()
    try:
        work = list(batches_new(total))
        conn = database.connection()
        t = time.perf_counter()
        for batch in work:
            with write_transaction(), conn.cursor() as cur:
                cur.executemany(sql, batch)
        elapsed = time.perf_counter() - t
        inserted = telemetry.count()
    finally:
        close_database()
    return "executemany (reference)", "fsync", total, inserted, elapsed


def run_peewee(total: int) -> tuple:
    """The same rows through insert_many(...).on_conflict_ignore(), 100 a statement."""
    fields = [getattr(Telemetry, c) for c in telemetry.TELEMETRY_COLUMNS]
    with tempfile.TemporaryDirectory() as tmp:
        open_database(os.path.join(tmp, "bench.db"))
        migrations.migrate()
        try:
            work = list(batches_new(total))
            t = time.perf_counter()
            for batch in work:
                with write_transaction():
                    for chunk in chunked(batch, 100):
                        Telemetry.insert_many(chunk, fields=fields).on_conflict_ignore().execute()
            elapsed = time.perf_counter() - t
            inserted = telemetry.count()
        finally:
            close_database()
    return "peewee insert_many (reference)", "NORMAL", total, inserted, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="rows offered per case")
    parser.add_argument("--engine", choices=("both", "sqlite", "postgresql"), default="both",
                        help="which backends to measure (default both)")
    parser.add_argument("--can-messages", type=int, default=10_000,
                        help="telemetry messages of 8 CAN frames for the CAN decoding case (0: skip it)")
    args = parser.parse_args()
    if args.engine in ("both", "sqlite"):
        results = [
            run("executemany, all new", "NORMAL", batches_new, args.rows),
            run("executemany, all new", "FULL", batches_new, args.rows),
            run("executemany, half repeats", "NORMAL", batches_half_repeats, args.rows),
            run_peewee(max(args.rows // 10, BATCH)),
        ]
        report(f"SQLite: telemetry insert, {BATCH}-row batches, WAL, unique (device_uuid, boot_id, seq, idx)"
               " + (device_uuid, ts) index", results)
    if args.engine in ("both", "postgresql"):
        report(f"PostgreSQL: telemetry insert, {BATCH}-row transactions, fsync on, the same indexes",
               run_postgres(args.rows))
    if args.can_messages:
        from bench import can_decode

        print()
        can_decode.run(messages=args.can_messages)


def report(title: str, results: list[tuple]) -> None:
    print(title)
    print(f"{'case':<32} {'sync':<7} {'offered':>9} {'inserted':>9} {'seconds':>8} {'offered/s':>10} {'inserted/s':>10}")
    for name, sync, offered, inserted, elapsed in results:
        print(f"{name:<32} {sync:<7} {offered:>9} {inserted:>9} {elapsed:>8.2f} "
              f"{offered / elapsed:>10,.0f} {inserted / elapsed:>10,.0f}")
    print()


if __name__ == "__main__":
    main()
