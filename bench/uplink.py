"""Scenarios 9 and 9b, the fleet uplink (issue 14): a vehicle's Mosquitto
and gateway, a second Mosquitto as the fleet broker, and a collector on
the fleet side (this process; tests/integration/uplink_support.py) that
keeps every row once by (vehicle, db, lane, id) and counts repeats.

9, `uplink`:
* Unpaced replay: the backlog (`uplink_rows`) is committed while the fleet
  broker is down; the gateway then starts with the fleet broker up and no
  pacing: rows/s from "uplink connected" to the last row at the fleet, and
  its ratio to the local ingest rate of the same rows (the gateway draining
  them from its broker into the database, as in scenario 1).
* Paced replay after an outage, the issue's test at its size (20k rows;
  `replay_after_outage` of tests/integration/uplink_runs.py, the code the
  test runs): the gateway up and connected, the fleet broker stopped,
  `uplink_paced_rows` pile up in the database, the broker back; the replay
  at `uplink_rate` rows/s measured at the fleet (rows 10 %..100 % over
  their time) and the latency of fresh telemetry (20 messages/s stamped
  with their send time) reaching the fleet during it.

9b, `uplink_kill`: the issue's `kill -9` test at its size
(`kill_9_while_uplinking`): 50k rows stream in while the gateway is killed
and restarted 20 times at random moments; the seconds from the first
message to every row at the fleet, and the repeats the fleet's key dropped.

Every part checks the fleet's rows against the database (none missing,
none unknown, no message under two ids): a violation fails the scenario.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from typing import Any

from bench.procs import BenchBroker, wait_until
from tests.integration.uplink_runs import FleetCheck, check_exactly_once, kill_9_while_uplinking, replay_after_outage
from tests.integration.uplink_support import FleetCollector
from tests.support.broker import Broker

VEHICLE = "bench-car"


def _fleet_broker(ctx: Any, name: str, keeps_sessions: bool = False) -> Broker:
    """Not started. `keeps_sessions`: the suite's broker, whose sessions
    outlive a stop (persistence on), for a fleet broker that goes away."""
    b = Broker(ctx.root / name) if keeps_sessions else BenchBroker(ctx.root / name)
    ctx._brokers.append(b)
    return b


def _uplink_settings(fleet: Broker, rate: float) -> dict:
    return {"uplink_url": f"mqtt://127.0.0.1:{fleet.port}", "vehicle_id": VEHICLE, "uplink_rate": rate,
            "uplink_reconnect_max_s": 1, "uplink_batch_rows": 500, "uplink_poll_ms": 50}


def _query(conn: sqlite3.Connection):
    return lambda sql: conn.execute(sql).fetchall()


def _fail_unless_once(what: str, check: FleetCheck) -> None:
    if check.violations:
        raise RuntimeError(f"{what}: the fleet does not have every row exactly once: {check}")


def _pile_up(ctx: Any, broker: Any, gw: Any, rows: int, stem: str) -> tuple[int, dict]:
    """`rows` telemetry rows (3 a message) queued for the stopped gateway,
    then drained into its database: (rows stored, the drain's figures)."""
    from bench.scenarios import drain_gateway, publish_backlog

    messages = max(1, rows // 3)
    sizes = dataclasses.replace(ctx.sizes, backlog=messages, backlog_devices=min(ctx.sizes.backlog_devices, messages))
    _, published = publish_backlog(broker.port, sizes, stem, boot_id=1)
    drained = drain_gateway(ctx, gw, published, published * 3, broker.proc.pid)
    return published * 3, drained


def _unpaced_replay(ctx: Any, gw: Any, fleet: Broker, total: int) -> dict:
    """Start the fleet broker and the collector, then the gateway: the
    replay, timed at the fleet."""
    from bench.scenarios import reader

    fleet.start()
    collector = FleetCollector(fleet.port, client_id="bench-fleet-collector").start()
    try:
        gw.start()
        connected_at = gw.line_time("uplink connected", 60)
        wait_until(lambda: collector.count("telemetry") >= total, 600, interval=0.02, what=f"{total} rows at the fleet",
                   progress=lambda: collector.count("telemetry"))
        conn = reader(gw.db_path)
        try:
            check = check_exactly_once(collector, _query(conn))
        finally:
            conn.close()
        times = sorted(t for t, _ in collector.arrivals("telemetry"))
    finally:
        collector.stop()
    gw.stop()
    _fail_unless_once("uplink, unpaced replay", check)
    return {"connected_at": connected_at, "times": times, "check": check}


def uplink(ctx: Any) -> Any:
    from bench.scenarios import Metric, Outcome, ms, percentile, reader

    s = ctx.sizes
    broker = ctx.broker()

    # -- unpaced replay of a backlog -------------------------------------------------
    fleet = _fleet_broker(ctx, "fleet1")
    gw = ctx.gateway(broker, **_uplink_settings(fleet, 0))
    gw.start()
    gw.stop()  # its persistent session with the vehicle's broker
    ctx.log(f"uplink: piling up {s.uplink_rows} rows while the fleet broker is down")
    stored, drained = _pile_up(ctx, broker, gw, s.uplink_rows, "bench-uplink")
    gw.stop()
    ctx.log("uplink: fleet broker up, unpaced replay")
    a = _unpaced_replay(ctx, gw, fleet, stored)
    replay_s = a["times"][-1] - a["connected_at"]
    replay_rate = stored / replay_s
    local_rate = drained["rows_per_s"]

    # -- the fleet broker away while rows pile up, then a paced replay ---------------------
    rate = float(s.uplink_rate)
    fleet2 = _fleet_broker(ctx, "fleet2", keeps_sessions=True).start()
    collector = FleetCollector(fleet2.port, client_id="bench-fleet-collector").start()
    gw2 = ctx.gateway(broker, **_uplink_settings(fleet2, rate)).start()
    ctx.log(f"uplink: fleet broker away while {s.uplink_paced_rows} rows pile up, then a replay paced at "
            f"{rate:.0f} rows/s")
    conn = reader(gw2.db_path)
    try:
        b = replay_after_outage(gw2, broker.port, fleet2, collector, _query(conn), s.uplink_paced_rows, rate,
                                slack=3.0)
    finally:
        conn.close()
        collector.stop()
    gw2.stop()
    assert b.check is not None
    _fail_unless_once("uplink, paced replay", b.check)
    if not b.fresh_latencies or len(b.fresh_latencies) != b.fresh_stored:
        raise RuntimeError(f"uplink: {len(b.fresh_latencies)} fresh rows at the fleet, {b.fresh_stored} stored")
    note = f"{stored} rows, local ingest {local_rate:.0f} rows/s"
    return Outcome([
        Metric("9 uplink", "replay rows/s, unpaced", round(replay_rate), "rows/s", better="higher", note=note),
        Metric("9 uplink", "replay / local ingest", round(replay_rate / local_rate, 3), "x", better="higher"),
        Metric("9 uplink", "paced replay, off the rate by", round(b.off_rate_pct, 1), "%", 10.0, 5.0,
               note=f"{b.measured:.0f} rows/s measured, {rate:.0f} configured, {b.rows} rows piled up"),
        Metric("9 uplink", "fresh -> fleet during a paced replay, p99", ms(b.fresh_p99), "ms", 1000.0, 250.0,
               note=f"{len(b.fresh_latencies)} fresh rows"),
        Metric("9 uplink", "rows not exactly once at the fleet", a["check"].violations + b.check.violations, "rows",
               0.0, 0.0, note=f"{a['check'].stored + b.check.stored} rows checked"),
    ], {"unpaced": {"rows": stored, "seconds": round(replay_s, 3), "rows_per_s": round(replay_rate),
                    "local_ingest_rows_per_s": local_rate, "fleet": dataclasses.asdict(a["check"])},
        "paced": {"rows": b.rows, "configured_rows_per_s": rate, "measured_rows_per_s": round(b.measured),
                  "fresh_rows": len(b.fresh_latencies), "fresh_p50_ms": ms(percentile(b.fresh_latencies, 50)),
                  "fresh_p99_ms": ms(b.fresh_p99), "fleet": dataclasses.asdict(b.check)}})


def kill_sizes(sizes: Any) -> tuple[int, int]:
    """(rows, kills): the issue's 50k and 20 in a full run; 8k and 4 with
    --quick; 1.5k and 1 with --smoke."""
    from bench.scenarios import QUICK, SMOKE

    return (1_500, 1) if sizes == SMOKE else (8_000, 4) if sizes == QUICK else (50_000, 20)


def uplink_kill(ctx: Any) -> Any:
    from bench.scenarios import Metric, Outcome, reader

    rows, kills = kill_sizes(ctx.sizes)
    broker = ctx.broker()
    fleet = _fleet_broker(ctx, "fleet").start()
    collector = FleetCollector(fleet.port, client_id="bench-fleet-collector").start()
    gw = ctx.gateway(broker, **{**_uplink_settings(fleet, 0), "uplink_batch_rows": 200}).start()
    ctx.log(f"uplink_kill: {rows} rows through {kills} kill -9 of the gateway")
    conn = reader(gw.db_path)
    try:
        run = kill_9_while_uplinking(gw, broker.port, collector, _query(conn), rows, kills, slack=5.0)
    finally:
        conn.close()
        collector.stop()
    gw.stop()
    _fail_unless_once("uplink_kill", run.check)
    return Outcome([
        Metric("9b uplink kill -9", "rows not exactly once at the fleet", run.check.violations, "rows", 0.0, 0.0,
               note=f"{rows} rows, {kills} kills"),
        Metric("9b uplink kill -9", "first row published -> all at the fleet", round(run.seconds, 1), "s",
               note=f"{run.check.repeats} repeated deliveries dropped by the fleet's key"),
    ], {"rows": rows, "kills": kills, "seconds": round(run.seconds, 2), "fleet": dataclasses.asdict(run.check)})
