"""CAN decoding on the telemetry path (issue 15), part of `make bench-storage`.

A v1 telemetry message with one analog reading and 8 CAN frames (JSON),
50 devices, goes the way the gateway takes it: `decode_message` (decode,
validate, rows; core), `telemetry_rows`, across to the store
(actors/wire.py, 100 messages a time), then in the store the CAN decoder
(actors/rules/can_rows.py, the FuelTech signals as the Config App seeds
them: 18 signals from the 8 frames) and `insert_rows`, 100 messages a
transaction, on a fresh file. Figures:

* frames/s the decoder alone turns into signal rows;
* the path's messages/s without definitions (today: frames stored raw),
  with decoding but the signal rows not stored (the decoder's own cost:
  the 10 % budget), and with the signal rows stored (what the feature
  costs in all, most of it SQLite writing 18 more rows a message).
CPU time a batch, the three modes taking each batch in turn, means over
the batches of three runs (see `path`); once with the garbage collector on
and once off (see `run`).
"""

from __future__ import annotations

import gc
import os
import statistics
import tempfile
import time
from typing import Any, Callable

import orjson

from actors import wire
from actors.messages import TelemetryRows
from actors.rules.routing import telemetry_rows
from actors.rules.can_rows import CanRows
from actors.store import tune_collector
from gateway.settings import Settings
from protocol.can import build_catalog
from protocol.decode import decode_message
from storage import migrations, telemetry
from storage.db import close_database, database, open_database

DEVICES = 50
MESSAGES_PER_TX = 100
FRAMES = (
    ("0x100", "C4095A0000000000"), ("0x200", "6500410000000000"), ("0x300", "82E8030000000000"),
    ("0x400", "2C01C88000000000"), ("0x500", "7D1AD00700000000"), ("0x600", "6400030000000000"),
    ("0x100", "D0075A0000000000"), ("0x200", "6600420000000000"),
)


def fueltech_rows() -> list[dict]:
    # The seed of tests/support/config_app.py, kept here so the benchmark needs no test code.
    seed = (("RPM", "0x100", 0, 16, 0, 8000, 1.0, 0.0), ("TPS", "0x100", 16, 8, 0, 100, 0.392, 0.0),
            ("MAP", "0x200", 0, 16, 0, 250, 1.0, 0.0), ("IAT", "0x200", 16, 8, -40, 120, 1.0, -40.0),
            ("ECT", "0x300", 0, 8, -40, 120, 1.0, -40.0), ("FuelPressure", "0x400", 0, 16, 0, 600, 1.0, 0.0),
            ("Ethanol", "0x400", 16, 8, 0, 100, 0.392, 0.0), ("FuelLevel", "0x400", 24, 8, 0, 100, 0.392, 0.0),
            ("Battery", "0x500", 0, 8, 10, 16, 0.1, 0.0), ("Lambda", "0x300", 8, 16, 0.7, 1.3, 0.001, 0.0),
            ("OilPressure", "0x500", 8, 8, 0, 10, 0.039, 0.0), ("BoostPressure", "0x500", 16, 16, -1, 3, 0.001, -1.0),
            ("Speed", "0x600", 0, 16, 0, 300, 1.0, 0.0), ("Gear", "0x600", 16, 8, 0, 6, 1.0, 0.0))
    return [{"id": i, "signal_name": n, "can_id": c, "start_bit": s, "length_bits": ln, "min_value": lo,
             "max_value": hi, "scale_factor": sc, "offset": off, "unit": "u", "is_active": 1}
            for i, (n, c, s, ln, lo, hi, sc, off) in enumerate(seed, 1)]


def payloads(n: int) -> list[tuple[str, bytes]]:
    out = []
    for i in range(n):
        device, seq = i % DEVICES, i // DEVICES
        body = {"seq": seq, "boot_id": 1, "timestamp": 1_750_000_000.0 + i * 0.01,
                "analog_sensors": {"fuel_level": 50.0 + i % 7},
                "can_frames": [{"id": fid, "data": data} for fid, data in FRAMES]}
        out.append((f"autocore/devices/can-gw-{device:02d}/telemetry", orjson.dumps(body)))
    return out


MODES = ("off", "decode", "store")


def path(work: list[tuple[str, bytes]], catalog: Any) -> tuple[dict[str, list[float]], list[float]]:
    """CPU seconds of each batch of `MESSAGES_PER_TX` messages on the path,
    per mode, and the decoder's own stage in mode `decode`. Modes: `off`
    (no decoder: frames stored raw), `decode` (decoded, the signal rows not
    stored: the decoder's own cost) and `store` (decoded and stored).

    The three modes take each batch in turn (in a rotating order), into one
    file, each mode's messages under a boot id of its own so that every row
    is new: whatever the rest of the machine does hits the three modes of a
    batch alike.
    CPU time, not wall time: a stage descheduled by another program's work
    is not charged for it. A batch's total is the whole path (decode and
    validate, rows, the crossing to the store, the decoder, the insert), so
    the collections the decoder's rows set off count wherever they land."""
    clock = time.process_time
    per: dict[str, list[float]] = {m: [] for m in MODES}
    stage: list[float] = []
    can = CanRows(catalog)
    boot = {m: str(i + 1).encode() for i, m in enumerate(MODES)}
    with tempfile.TemporaryDirectory() as tmp:
        open_database(os.path.join(tmp, "bench.db"))
        migrations.migrate()
        try:
            for turn, start in enumerate(range(0, len(work), MESSAGES_PER_TX)):
                batch = work[start:start + MESSAGES_PER_TX]
                for k in range(len(MODES)):
                    mode = MODES[(turn + k) % len(MODES)]
                    payloads = [(topic, body.replace(b'"boot_id":1', b'"boot_id":' + boot[mode]))
                                for topic, body in batch]
                    t0 = clock()
                    rows: list = []
                    for topic, payload in payloads:
                        msg = decode_message(topic, payload, prefix="autocore", max_payload=65536)
                        rows.extend(telemetry_rows(msg, 1_750_000_000.0, 300.0)[0])
                    # core -> store, as the Router sends them (one message per read from the broker)
                    rows = list(wire.decode(wire.encode(TelemetryRows(tuple(rows), ()))).rows)
                    t1 = clock()
                    if mode != "off":
                        decoded = can.apply(rows)
                        if mode == "store":
                            rows = decoded
                    t2 = clock()
                    telemetry.insert_rows(database, rows)
                    t3 = clock()
                    per[mode].append(t3 - t0)
                    if mode == "decode":
                        stage.append(t2 - t1)
                    del rows
                    decoded = None
        finally:
            close_database()
    return per, stage


def decoder_only(work: list[tuple[str, bytes]], repeat: int = 5) -> tuple[float, int]:
    """Frames/s of the decoder over rows already made (CPU time, median of
    `repeat` passes; the first also compiles the generated decoders)."""
    rows = []
    for topic, payload in work:
        rows.extend(telemetry_rows(decode_message(topic, payload, prefix="autocore", max_payload=65536),
                                   1_750_000_000.0, 300.0)[0])
    can = CanRows(build_catalog(fueltech_rows()))
    rates = []
    for _ in range(repeat):
        t = time.process_time()
        for start in range(0, len(rows), MESSAGES_PER_TX * 9):
            can.apply(rows[start:start + MESSAGES_PER_TX * 9])
        rates.append(len(work) * len(FRAMES) / (time.process_time() - t))
    best = statistics.median(rates)
    return best, can.signals_decoded // (repeat * len(work))


def passes(work: list[tuple[str, bytes]], catalog: Any, repeat: int) -> dict[str, float]:
    """Mean CPU seconds of one batch per mode over `repeat` runs of the
    whole work (each on a fresh file), and of the decoder's own stage. The
    mean, not the median: the collector runs in some batches and not in
    others, and what it costs belongs to the figure; the modes taking each
    batch in turn is what keeps the machine's other work out of it."""
    per: dict[str, list[float]] = {m: [] for m in MODES}
    stage: list[float] = []
    for _ in range(repeat):
        got, own = path(work, catalog)
        for m in MODES:
            per[m].extend(got[m])
        stage.extend(own)
    out = {m: statistics.fmean(per[m]) for m in MODES}
    out["can_stage"] = statistics.fmean(stage)
    return out


def run(messages: int = 10_000, repeat: int = 3, echo: Callable[[str], None] = print) -> dict:
    work = payloads(messages)
    frames_s, signals = decoder_only(work)
    catalog = build_catalog(fueltech_rows())
    echo(f"CAN decoding, {len(FRAMES)} frames a message ({signals} signals), {messages} messages, "
         f"CPU time a batch of {MESSAGES_PER_TX}, mean over {repeat} runs' batches")
    echo(f"  decoder alone: {frames_s:>10,.0f} frames/s decoded ({frames_s * signals / len(FRAMES):,.0f} signals/s)")
    figures: dict[str, Any] = {"frames_per_s": frames_s}
    # With the garbage collector as it runs, and without: the signal rows
    # live until the batch is stored, so they set off collections that the
    # rows of today's path (made and dropped before the collector's count
    # adds up) do not, and each collection walks every young row of the
    # batch. The second figure is the decoding itself.
    # "On" is the store process's collector: its first threshold is
    # AUTOCORE_STORE_GC_GEN0 (actors/store.py, tune_collector).
    gen0 = Settings().store_gc_gen0
    for label, collector in ((f"garbage collector on (first threshold {gen0})", True), ("garbage collector off", False)):
        was, thresholds = gc.isenabled(), gc.get_threshold()
        gc.enable() if collector else gc.disable()
        tune_collector(gen0)
        try:
            t = passes(work, catalog, repeat)
        finally:
            gc.enable() if was else gc.disable()
            gc.set_threshold(*thresholds)
        rates = {m: MESSAGES_PER_TX / t[m] for m in MODES}
        cost = 100 * (1 - rates["decode"] / rates["off"])
        echo(f"  {label}:")
        echo(f"    path, no definitions (frames stored raw): {rates['off']:>8,.0f} messages/s")
        echo(f"    path, decoded, signal rows not stored:    {rates['decode']:>8,.0f} messages/s "
             f"(decoding costs {cost:.1f} % of the throughput, budget 10 %; its own stage "
             f"{1e6 * t['can_stage'] / MESSAGES_PER_TX:.0f} us a message)")
        echo(f"    path, decoded and stored:                 {rates['store']:>8,.0f} messages/s "
             f"({100 * (1 - rates['store'] / rates['off']):.1f} % less: {signals} more rows a message to write)")
        figures["gc" if collector else "no_gc"] = {**rates, "cost_percent": cost}
    return figures


if __name__ == "__main__":
    run()
