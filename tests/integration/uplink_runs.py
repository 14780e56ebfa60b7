"""The issue's two long uplink runs (issue 14), one code for both callers:
tests/integration/test_uplink.py runs them at `make test` sizes (the full
ones with AUTOCORE_TEST_UPLINK_FULL=1) and asserts on what they return;
bench/uplink.py runs them at full size in `make bench` (small with
--quick, tiny with --smoke) and reports the same figures.

* `kill_9_while_uplinking`: rows stream into the gateway while it is
  killed (`kill -9` of all three processes) and restarted `kills` times at
  random moments; every row must reach the fleet exactly once.
* `replay_after_outage`: the fleet broker stops, a backlog piles up in the
  gateway's database, the broker comes back; the replay's pace measured at
  the fleet, and fresh telemetry published during it timed to the fleet.

Either waits for its conditions with a deadline and raises AssertionError
when one is not met; the exactly-once check is a figure (`FleetCheck`)
each caller judges.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from gateway import control
from tests.integration.helpers import Stream
from tests.integration.uplink_support import FleetCollector, FreshPublisher
from tests.support.broker import wait_until

Query = Callable[[str], list]  # SQL -> rows, on the gateway's database
PER_DEVICE = 10_000  # one device's whole burst allowance (AUTOCORE_DEVICE_BURST)


@dataclass
class FleetCheck:
    """The fleet's telemetry against the gateway's: exactly once is
    `violations == 0`."""

    stored: int  # rows in the gateway's database
    at_fleet: int  # distinct rows at the fleet
    missing: int  # stored, never at the fleet
    unknown: int  # at the fleet, not stored (a row invented or renumbered)
    doubled: int  # one reading (device, boot, seq, idx) at the fleet under two ids
    repeats: int  # deliveries of a row already there, dropped by the fleet's key

    @property
    def violations(self) -> int:
        return self.missing + self.unknown + self.doubled


def check_exactly_once(collector: FleetCollector, query: Query) -> FleetCheck:
    stored = {r[0] for r in query("SELECT id FROM telemetry")}
    fleet = collector.ids("telemetry")
    rows = collector.lane_rows("telemetry")
    readings = {(r["device_uuid"], r["boot_id"], r["seq"], r["idx"]) for r in rows}
    return FleetCheck(len(stored), len(fleet), len(stored - fleet), len(fleet - stored), len(rows) - len(readings),
                      collector.repeats("telemetry"))


def stored_count(query: Query) -> int:
    return query("SELECT COUNT(*) FROM telemetry")[0][0]


def streams(port: int, stem: str, total: int, **pacing: Any) -> list[Stream]:
    """`total` one-row messages from as few devices as stay within the burst."""
    n = -(-total // PER_DEVICE)
    return [Stream(port, f"{stem}-{k}", total // n + (1 if k < total % n else 0), **pacing).start() for k in range(n)]


def uplink_view(gw: Any) -> dict:
    return control.request(str(gw.socket_path), "uplink")["uplink"]


def percentile(values: list[float], q: float) -> float:
    """Nearest rank (q in 0..100)."""
    ordered = sorted(values)
    return ordered[max(1, min(len(ordered), -(-int(q * len(ordered)) // 100))) - 1]


# -- kill -9 while rows go up ----------------------------------------------------


@dataclass
class KillRun:
    rows: int
    kills: int
    seconds: float  # the first message published -> every row at the fleet
    check: FleetCheck


def kill_9_while_uplinking(gw: Any, port: int, collector: FleetCollector, query: Query, total: int, kills: int,
                           *, seed: int = 14, slack: float = 1.0,
                           after_kill: Callable[[], Any] | None = None) -> KillRun:
    """`gw` (a started GatewayProcess with the uplink on) is killed `kills`
    times, each after a random 0.3-1.2 s, while `total` rows stream in.
    `after_kill` runs between each kill and the restart (a power cut's
    loss of the unsynced writes)."""
    started = time.monotonic()
    running = streams(port, "dev-k9", total, pause_every=500, pause_s=0.05)
    rng = random.Random(seed)
    for _ in range(kills):
        time.sleep(rng.uniform(0.3, 1.2))  # let it run a random while, then cut it anywhere
        gw.kill()
        if after_kill is not None:
            after_kill()
        gw.start()
    for stream in running:
        stream.wait(60 * slack)
    wait_until(lambda: stored_count(query) == total, 40 * slack, what="every message stored",
               progress=lambda: stored_count(query))
    stored = {r[0] for r in query("SELECT id FROM telemetry")}
    wait_until(lambda: collector.ids("telemetry") >= stored, 40 * slack, what="every row at the fleet",
               progress=lambda: f"{len(collector.ids('telemetry'))} of {len(stored)}")
    seconds = time.monotonic() - started
    return KillRun(total, kills, seconds, check_exactly_once(collector, query))


# -- the fleet broker away, then back -------------------------------------------------


@dataclass
class ReplayRun:
    rows: int  # the backlog
    rate: float  # configured, rows/s
    measured: float  # at the fleet, rows 10 %..100 % of the backlog over their time
    fresh_sent: int  # acknowledged by the vehicle's broker
    fresh_stored: int
    fresh_latencies: list[float] = field(default_factory=list)  # send -> first at the fleet, s
    check: FleetCheck | None = None

    @property
    def off_rate_pct(self) -> float:
        return 100.0 * abs(self.measured - self.rate) / self.rate

    @property
    def fresh_p99(self) -> float:
        return percentile(self.fresh_latencies, 99)


def replay_after_outage(gw: Any, port: int, fleet: Any, collector: FleetCollector, query: Query, backlog: int,
                        rate: float, *, fresh_rate: float = 20.0, slack: float = 1.0) -> ReplayRun:
    """`gw` runs with the uplink paced at `rate`; `fleet` (a Broker that
    keeps its sessions across a stop) is stopped while `backlog` rows pile
    up, then started again."""
    wait_until(lambda: uplink_view(gw).get("connected"), 10, what="uplink connected")
    fleet.stop()
    for pile in streams(port, "dev-pile", backlog):
        pile.wait(60 * slack)
    wait_until(lambda: stored_count(query) == backlog, 60 * slack, what="the backlog stored")
    u = wait_until(lambda: (lambda u: u if u["rows_pending"] >= backlog else None)(uplink_view(gw)), 5,
                   what="the backlog pending")
    assert not u["connected"] and u["oldest_pending_age_s"] is not None, u
    fleet.start()
    wait_until(collector.subscribed.is_set, 10, what="the collector back")
    wait_until(lambda: collector.count("telemetry") >= backlog // 10, 20 * slack, what="the replay under way")
    fresh = FreshPublisher(port, "dev-fresh", rate=fresh_rate).start()
    try:
        wait_until(lambda: collector.count("telemetry") >= backlog, 30 * slack + 2 * backlog / rate,
                   what="the backlog at the fleet", progress=lambda: collector.count("telemetry"))
    finally:
        sent = fresh.stop()
    # The last fresh messages may still be on their way to the database: the
    # check below compares the fleet with every stored row, so it must not
    # start before each acknowledged fresh message is stored.
    fresh_query = "SELECT COUNT(*) FROM telemetry WHERE device_uuid = 'dev-fresh'"
    wait_until(lambda: query(fresh_query)[0][0] >= sent, 20 * slack, what="every fresh message stored")
    wait_until(lambda: collector.ids("telemetry") >= {r[0] for r in query("SELECT id FROM telemetry")}, 20,
               what="every row at the fleet")
    arrivals = collector.arrivals("telemetry")
    pile = sorted(t for t, r in arrivals if r["device_uuid"].startswith("dev-pile"))
    start = len(pile) // 10
    measured = (len(pile) - 1 - start) / (pile[-1] - pile[start])
    fresh_stored = query("SELECT COUNT(*) FROM telemetry WHERE device_uuid = 'dev-fresh'")[0][0]
    return ReplayRun(backlog, rate, measured, sent, fresh_stored,
                     [t - r["ts"] for t, r in arrivals if r["device_uuid"] == "dev-fresh"],
                     check_exactly_once(collector, query))
