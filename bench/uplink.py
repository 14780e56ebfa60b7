"""Scenario 9, the fleet uplink (issue 14): a vehicle's Mosquitto and
gateway, a second Mosquitto as the fleet broker, and a collector on the
fleet side (this process) that keeps every row once by (db, lane, id).

* Unpaced replay: the backlog (`uplink_rows`) is committed while the fleet
  broker is down; the gateway then starts with the fleet broker up and no
  pacing: rows/s from "uplink connected" to the last row at the fleet, and
  its ratio to the local ingest rate of the same rows (the gateway draining
  them from its broker into the database, as in scenario 1).
* Paced replay: `uplink_paced_rows` committed while the fleet broker is
  down, replayed at `uplink_rate` rows/s; the rate measured at the fleet
  (rows 10 %..100 % over their time) and the latency of fresh telemetry
  (20 messages/s stamped with their send time) reaching the fleet during it.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bench.procs import BenchBroker, wait_until
from protocol.uplink import decode_batch

VEHICLE = "bench-car"


class Collector:
    def __init__(self, port: int) -> None:
        self.lock = threading.Lock()
        self.first_seen: dict[tuple[str, int], tuple[float, dict]] = {}
        self.copies = 0
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-fleet-collector",
                                  protocol=mqtt.MQTTv5)
        self.client.on_connect = lambda c, u, f, r, p: c.subscribe("fleet/+/data", qos=1)
        self.client.on_message = self._on_message
        self.subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        props.ReceiveMaximum = 65535
        self.client.connect("127.0.0.1", port, clean_start=False, properties=props)
        self.client.loop_start()
        if not self.subscribed.wait(10):
            raise RuntimeError("the fleet collector did not subscribe")

    def _on_message(self, c: Any, u: Any, msg: Any) -> None:
        now = time.time()
        b = decode_batch(msg.payload)
        with self.lock:
            for row in b.rows:
                self.copies += 1
                self.first_seen.setdefault((b.lane, row["id"]), (now, row))

    def telemetry(self) -> list[tuple[float, dict]]:
        with self.lock:
            return [v for (lane, _), v in self.first_seen.items() if lane == "telemetry"]

    def count(self) -> int:
        with self.lock:
            return sum(1 for (lane, _) in self.first_seen if lane == "telemetry")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class FreshPublisher(threading.Thread):
    def __init__(self, port: int, uuid: str, rate: float) -> None:
        super().__init__(daemon=True)
        self.uuid, self.interval = uuid, 1.0 / rate
        self.halt = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{uuid}-pub", protocol=mqtt.MQTTv5)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def run(self) -> None:
        seq = 0
        while not self.halt.wait(self.interval):
            seq += 1
            self.client.publish(f"autocore/devices/{self.uuid}/telemetry", json.dumps(
                {"seq": seq, "boot_id": 1, "timestamp": time.time(), "analog_sensors": {"speed": seq}}), qos=1)

    def stop(self) -> None:
        self.halt.set()
        self.join(5)
        self.client.disconnect()
        self.client.loop_stop()


def _fleet_broker(ctx: Any, name: str) -> BenchBroker:
    b = BenchBroker(ctx.root / name)  # not started: its port is known, nothing listens yet
    ctx._brokers.append(b)
    return b


def _uplink_settings(fleet: BenchBroker, rate: float) -> dict:
    return {"uplink_url": f"mqtt://127.0.0.1:{fleet.port}", "vehicle_id": VEHICLE, "uplink_rate": rate,
            "uplink_reconnect_max_s": 1, "uplink_batch_rows": 500, "uplink_poll_ms": 50}


def _pile_up(ctx: Any, broker: Any, gw: Any, rows: int, stem: str) -> tuple[int, dict]:
    """`rows` telemetry rows (3 a message) queued for the stopped gateway,
    then drained into its database: (rows stored, the drain's figures)."""
    from bench.scenarios import drain_gateway, publish_backlog

    messages = max(1, rows // 3)
    sizes = dataclasses.replace(ctx.sizes, backlog=messages, backlog_devices=min(ctx.sizes.backlog_devices, messages))
    _, published = publish_backlog(broker.port, sizes, stem, boot_id=1)
    drained = drain_gateway(ctx, gw, published, published * 3, broker.proc.pid)
    return published * 3, drained


def _replay(ctx: Any, gw: Any, fleet: BenchBroker, total: int, fresh_rate: float = 0.0,
            vehicle_port: int | None = None) -> dict:
    """Start the fleet broker and the collector, then the gateway: the
    replay, timed at the fleet."""
    fleet.start()
    collector = Collector(fleet.port)
    fresh: FreshPublisher | None = None
    try:
        gw.start()
        connected_at = gw.line_time("uplink connected", 60)
        if fresh_rate and vehicle_port is not None:
            wait_until(lambda: collector.count() >= total // 10, 120, interval=0.02, what="the replay under way")
            fresh = FreshPublisher(vehicle_port, "bench-fresh", fresh_rate)
            fresh.start()
        wait_until(lambda: collector.count() >= total, 600, interval=0.02, what=f"{total} rows at the fleet",
                   progress=collector.count)
        if fresh is not None:
            fresh.stop()
            # the last fresh rows: wait until the fleet has as many as the database
            from bench.scenarios import one, reader

            conn = reader(gw.db_path)
            try:
                wait_until(lambda: collector.count() >= one(conn, "SELECT COUNT(*) FROM telemetry"), 30,
                           interval=0.02, what="the fresh rows at the fleet")
            finally:
                conn.close()
        rows = collector.telemetry()
        copies = collector.copies
    finally:
        if fresh is not None and fresh.is_alive():
            fresh.stop()
        collector.close()
    gw.stop()
    backlog_times = sorted(t for t, r in rows if r["device_uuid"] != "bench-fresh")
    fresh_lat = sorted(t - r["ts"] for t, r in rows if r["device_uuid"] == "bench-fresh")
    return {"connected_at": connected_at, "backlog_times": backlog_times, "fresh_latencies": fresh_lat,
            "rows_at_fleet": len(rows), "row_copies_received": copies}


def uplink(ctx: Any) -> Any:
    from bench.scenarios import Metric, Outcome, ms, percentile

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
    a = _replay(ctx, gw, fleet, stored)
    if len(a["backlog_times"]) != stored:
        raise RuntimeError(f"uplink: {len(a['backlog_times'])} rows at the fleet, expected {stored}")
    replay_s = a["backlog_times"][-1] - a["connected_at"]
    replay_rate = stored / replay_s
    local_rate = drained["rows_per_s"]

    # -- paced replay, fresh data through it -------------------------------------------
    rate = float(s.uplink_rate)
    fleet2 = _fleet_broker(ctx, "fleet2")
    gw2 = ctx.gateway(broker, **_uplink_settings(fleet2, rate))
    gw2.start()
    gw2.stop()
    ctx.log(f"uplink: piling up {s.uplink_paced_rows} rows, then a replay paced at {rate:.0f} rows/s")
    stored2, _ = _pile_up(ctx, broker, gw2, s.uplink_paced_rows, "bench-uplink-paced")
    gw2.stop()
    b = _replay(ctx, gw2, fleet2, stored2, fresh_rate=20.0, vehicle_port=broker.port)
    times = b["backlog_times"]
    start = len(times) // 10
    measured = (len(times) - 1 - start) / (times[-1] - times[start])
    error_pct = 100.0 * abs(measured - rate) / rate
    fresh_p99 = percentile(b["fresh_latencies"], 99)
    note = f"{stored} rows, local ingest {local_rate:.0f} rows/s"
    return Outcome([
        Metric("9 uplink", "replay rows/s, unpaced", round(replay_rate), "rows/s", better="higher", note=note),
        Metric("9 uplink", "replay / local ingest", round(replay_rate / local_rate, 3), "x", better="higher"),
        Metric("9 uplink", "paced replay, off the rate by", round(error_pct, 1), "%", 10.0, 5.0,
               note=f"{measured:.0f} rows/s measured, {rate:.0f} configured, {stored2} rows"),
        Metric("9 uplink", "fresh -> fleet during a paced replay, p99", ms(fresh_p99), "ms", 1000.0, 250.0,
               note=f"{len(b['fresh_latencies'])} fresh rows"),
    ], {"unpaced": {"rows": stored, "seconds": round(replay_s, 3), "rows_per_s": round(replay_rate),
                    "local_ingest_rows_per_s": local_rate, "row_copies_received": a["row_copies_received"]},
        "paced": {"rows": stored2, "configured_rows_per_s": rate, "measured_rows_per_s": round(measured),
                  "fresh_rows": len(b["fresh_latencies"]), "fresh_p50_ms": ms(percentile(b["fresh_latencies"], 50)),
                  "fresh_p99_ms": ms(fresh_p99), "row_copies_received": b["row_copies_received"]}})
