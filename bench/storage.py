"""Telemetry insert throughput: `python -m bench.storage [--rows N]`.

Measures storage.telemetry.insert_rows the way the DbWriter uses it: one
transaction per 2000-row batch, WAL, the unique dedup index and the
(device_uuid, ts) index, on a fresh file in a temporary directory. Cases:
synchronous NORMAL and FULL; half of each batch repeats rows already
stored (a broker redelivering after a crash); and, for scale, peewee's
insert_many on a smaller sample (what FIELD-NOTES warned about).
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

from storage import telemetry
from storage.db import close_database, database, open_database, write_transaction
from storage.models import Telemetry

BATCH = 2000
DEVICES = 50
READINGS_PER_MESSAGE = 3


def rows(n: int, start: int = 0) -> Iterator[tuple]:
    """`n` realistic rows: 50 devices round robin, 3 readings a message."""
    t0 = 1_750_000_000.0
    for i in range(start, start + n):
        message, idx = divmod(i, READINGS_PER_MESSAGE)
        device, seq = message % DEVICES, message // DEVICES
        ts = t0 + message * 0.01
        yield (f"esp32-relay-{device:02d}", 17, seq, idx, ts, ts + 0.002, "analog", f"sensor_{idx}",
               20.0 + (i % 97) * 0.5, "C", None, None)


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


def run(name: str, synchronous: str, batches: Callable[[int], Iterator[list[tuple]]], total: int) -> tuple:
    with tempfile.TemporaryDirectory() as tmp:
        open_database(os.path.join(tmp, "bench.db"), synchronous=synchronous)
        try:
            work = list(batches(total))  # built before timing: measure storage only
            offered = sum(len(b) for b in work)
            t = time.perf_counter()
            inserted = sum(telemetry.insert_rows(database, b) for b in work)
            elapsed = time.perf_counter() - t
        finally:
            close_database()
    return name, synchronous, offered, inserted, elapsed


def run_peewee(total: int) -> tuple:
    """The same rows through insert_many(...).on_conflict_ignore(), 100 a statement."""
    fields = [getattr(Telemetry, c) for c in telemetry.TELEMETRY_COLUMNS]
    with tempfile.TemporaryDirectory() as tmp:
        open_database(os.path.join(tmp, "bench.db"))
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
    parser.add_argument("--can-messages", type=int, default=10_000,
                        help="telemetry messages of 8 CAN frames for the CAN decoding case (0: skip it)")
    args = parser.parse_args()
    results = [
        run("executemany, all new", "NORMAL", batches_new, args.rows),
        run("executemany, all new", "FULL", batches_new, args.rows),
        run("executemany, half repeats", "NORMAL", batches_half_repeats, args.rows),
        run_peewee(max(args.rows // 10, BATCH)),
    ]
    print(f"telemetry insert, {BATCH}-row batches, WAL, unique (device_uuid, boot_id, seq, idx) + (device_uuid, ts) index")
    print(f"{'case':<32} {'sync':<7} {'offered':>9} {'inserted':>9} {'seconds':>8} {'offered/s':>10} {'inserted/s':>10}")
    for name, sync, offered, inserted, elapsed in results:
        print(f"{name:<32} {sync:<7} {offered:>9} {inserted:>9} {elapsed:>8.2f} "
              f"{offered / elapsed:>10,.0f} {inserted / elapsed:>10,.0f}")
    if args.can_messages:
        from bench import can_decode

        print()
        can_decode.run(messages=args.can_messages)


if __name__ == "__main__":
    main()
