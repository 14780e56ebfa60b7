"""Scenario 11, scale-out (issue 13): scenario 1's backlog drain by 1, 2 and
3 gateway instances in one share group on one PostgreSQL, against one
instance on SQLite in the same run, and the take-over time after kill -9
of an owner.

Each phase has a fresh Mosquitto (scenario 1's bench broker) and, on
PostgreSQL, a fresh database of one throw-away cluster started for the
scenario (tests/support/postgres.py, fsync on as in `make bench-storage`).
The instances are started once and stopped cleanly, so that each has its
persistent session; the backlog (`backlog` QoS 1 messages, at most 100,000,
of `backlog_devices` devices, `mosquitto_pub -l`: a message counts once the
broker acknowledged it) is then queued, and the broker splits it between
the sessions as it arrives (shared subscriptions alternate strictly, an
offline member's share is queued for it). Then all instances start at once.
Time: from the first instance's `connected to the broker` line until every
row is in the database and every instance says it acknowledged its share
(nothing unacknowledged). The SQLite phase is scenario 1's gateway drain
itself (`drain_gateway`), on the same backlog size.

CPU of every process during each drain (broker, each instance's core and
store, PostgreSQL's server processes) as a share of one core is in the
details and the notes: which process the time goes to.

Take-over: after the 3-instance drain, the owner of the first backlog
device is killed with SIGKILL (launcher, core and store at once). The
lease table is polled every 20 ms: seconds from the kill until another
instance holds that device's bucket, and until others hold every bucket
the dead one held. Expected between 2/3 of a lease and one lease: the
dead instance's last renewal is up to a third of a lease old at the kill,
and the others look again just after its lease runs out, when its heirs
take every bucket it held (actors/rules/ownership.py).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

from bench import load
from bench.procs import BenchBroker, BenchGateway, child_pids, cpu_seconds, wait_until
from bench.scenarios import SMOKE, Context, Metric, Outcome, drain_gateway, publish_backlog
from protocol.buckets import DEFAULT_BUCKETS, bucket_of

SCENARIO = "11 scale-out"
INSTANCES = (1, 2, 3)
LEASE_S = 10.0  # AUTOCORE_LEASE_S's default: the take-over an operator gets
SMOKE_LEASE_S = 3.0
STEM = "bench-scale"
MAX_BACKLOG = 100_000  # half of scenario 1's: four drains a run, and the rate is steady long before


def scaleout(ctx: Context) -> Outcome:
    from tests.support.postgres import PgCluster

    s = ctx.sizes
    lease_s = SMOKE_LEASE_S if s == SMOKE else LEASE_S
    cluster = PgCluster(fsync=True).start()
    try:
        ctx.log("scale-out: one instance on SQLite")
        sqlite = sqlite_phase(ctx)
        phases: dict[int, dict] = {}
        for n in INSTANCES:
            ctx.log(f"scale-out: {n} instance(s) on PostgreSQL")
            phases[n] = pg_phase(ctx, cluster, n, lease_s, take_over=n == INSTANCES[-1])
    finally:
        cluster.stop()
    base = sqlite["messages_per_s"]
    metrics = [Metric(SCENARIO, "1 instance, SQLite, messages/s", base, "msg/s", better="higher",
                      note=f"{sqlite['messages']} msgs; cpu {cpu_note(sqlite['cpu_percent_of_one_core'])}")]
    for n, p in phases.items():
        metrics.append(Metric(SCENARIO, f"{n} instance{'s' if n > 1 else ''}, PostgreSQL, messages/s",
                              p["messages_per_s"], "msg/s", better="higher",
                              note=f"cpu {cpu_note(p['cpu_percent_of_one_core'])}"))
    for n, p in phases.items():
        metrics.append(Metric(SCENARIO, f"{n} on PostgreSQL / 1 on SQLite", round(p["messages_per_s"] / base, 3),
                              "x", better="higher"))
    take = phases[INSTANCES[-1]]["take_over"]
    metrics += [
        Metric(SCENARIO, "take-over after kill -9, the device", take["device_s"], "s",
               note=f"lease {lease_s:g} s"),
        Metric(SCENARIO, "take-over after kill -9, all its buckets", take["all_s"], "s",
               note=f"{take['buckets']} buckets, lease {lease_s:g} s"),
        # What the rules promise: the take-over comes as the dead instance's
        # lease runs out, which is up to a lease after the kill (it may
        # have renewed just before).
        Metric(SCENARIO, "all its buckets, after its lease ran out",
               round(take["all_s"] - take["lease_left_at_kill_s"], 3), "s",
               note=f"{take['lease_left_at_kill_s']:.2f} s of its lease left at the kill"),
    ]
    return Outcome(metrics, {"lease_s": lease_s, "sqlite": sqlite, "postgresql": phases})


def cpu_note(cpu: dict[str, float]) -> str:
    """'broker 12, core 80+75, store 40+38, postgres 55' (% of one core)."""
    groups: dict[str, list[float]] = {}
    for role, value in cpu.items():
        groups.setdefault(role.split(":")[-1], []).append(value)
    return ", ".join(f"{role} {'+'.join(f'{v:.0f}' for v in values)}" for role, values in groups.items())


def sqlite_phase(ctx: Context) -> dict:
    broker = ctx.broker()
    gw = ctx.gateway(broker)
    try:
        gw.start()
        gw.stop()  # its persistent session stays with the broker
        published = queue_backlog(ctx, broker)
        return drain_gateway(ctx, gw, published, published * 3, broker.proc.pid)
    finally:
        gw.terminate_quietly()
        broker.stop()


def pg_phase(ctx: Context, cluster: Any, n: int, lease_s: float, take_over: bool) -> dict:
    broker = ctx.broker()
    url = cluster.create_database("scale")
    gws = [ctx.gateway(broker, db_url=url, share_group="bench", instance_id=f"i{k}", mqtt_client_id="gw",
                       lease_s=lease_s) for k in range(1, n + 1)]
    try:
        start_all(gws)
        for gw in gws:
            gw.stop()  # each keeps its session, and with it its share of what comes
        published = queue_backlog(ctx, broker)
        result = drain_instances(gws, cluster, url, published, published * 3, broker.proc.pid)
        if take_over:
            result["take_over"] = kill_owner(gws, url, lease_s, ctx)
        return result
    finally:
        for gw in gws:
            gw.terminate_quietly()  # before the cluster goes away
        broker.stop()


def start_all(gws: list[BenchGateway]) -> None:
    for gw in gws:
        gw.start(wait_ready=False)
    for gw in gws:
        gw.wait_for_line("ready:", 60)


def queue_backlog(ctx: Context, broker: BenchBroker) -> int:
    s = dataclasses.replace(ctx.sizes, backlog=min(ctx.sizes.backlog, MAX_BACKLOG))
    ctx.log(f"scale-out: publishing {s.backlog} QoS 1 messages for {s.backlog_devices} devices")
    _, published = publish_backlog(broker.port, s, STEM, boot_id=1)
    return published


def postgres_pids(cluster: Any) -> list[int]:
    """The postmaster and its children (backends, writers) now."""
    with open(cluster.root / "data" / "postmaster.pid") as fh:
        postmaster = int(fh.readline())
    return [postmaster, *child_pids(postmaster)]


def cpu_now(pids: dict[str, int], cluster: Any) -> dict[str, float]:
    """CPU seconds so far of each process named in `pids` and, with a
    cluster, of every PostgreSQL server process (keys pg:PID), skipping
    ones that are gone."""
    out: dict[str, float] = {}
    named = [*pids.items(), *((f"pg:{p}", p) for p in (postgres_pids(cluster) if cluster is not None else ()))]
    for key, pid in named:
        try:
            out[key] = cpu_seconds(pid)
        except (FileNotFoundError, ProcessLookupError):
            pass
    return out


def cpu_at_connect(gws: list[BenchGateway], pids: dict[str, int], cluster: Any) -> dict[str, float]:
    """CPU so far of each instance's processes when its `connected to the
    broker` line comes (so their start-up is not counted), of the broker
    and PostgreSQL when the first one's comes."""
    names = {gw.env["AUTOCORE_INSTANCE_ID"]: gw for gw in gws}
    found: dict[str, float] = {}

    def every_instance_seen() -> bool:
        for name, gw in names.items():
            if f"{name}:core" not in found and any("connected to the broker" in line for line in gw.lines):
                mine = {k: p for k, p in pids.items() if k.startswith(f"{name}:")}
                if not found:
                    mine["broker"] = pids["broker"]
                found.update(cpu_now(mine, cluster if not found else None))
        return all(f"{name}:core" in found for name in names)

    wait_until(every_instance_seen, 60, interval=0.01, what="every instance connected to the broker")
    return found


def cpu_share(before: dict[str, float], after: dict[str, float], seconds: float) -> dict[str, float]:
    """% of one core per process over `seconds`; PostgreSQL's processes
    summed (a backend that came meanwhile counts from zero)."""
    pg = sum(v - before.get(k, 0.0) for k, v in after.items() if k.startswith("pg:"))
    share = {k: round(100.0 * (v - before.get(k, 0.0)) / seconds, 1) for k, v in after.items()
             if not k.startswith("pg:")}
    share["postgres"] = round(100.0 * pg / seconds, 1)
    return share


def drain_instances(gws: list[BenchGateway], cluster: Any, url: str, messages: int, rows: int,
                    broker_pid: int, on_started: Callable[[dict[str, int]], None] | None = None) -> dict:
    """Start every stopped instance at once on its queued share; time the
    first connect -> every row stored and every message acknowledged.
    `on_started` gets the pids ({"i1:core": pid, ...}) as soon as they run
    (the profiler attaches there)."""
    import psycopg

    for gw in gws:
        gw.start(wait_ready=False)
    for gw in gws:
        wait_until(lambda: len(gw.children()) == 2, 30, what="the core and store processes")
    pids = {"broker": broker_pid}
    for gw in gws:
        name = gw.env["AUTOCORE_INSTANCE_ID"]
        pids.update({f"{name}:{role}": pid for role, pid in gw.children().items()})
    if on_started is not None:
        on_started(pids)
    cpu0 = cpu_at_connect(gws, pids, cluster)
    connected = [gw.line_time("connected to the broker", 60) for gw in gws]
    t0 = min(connected)
    with psycopg.connect(url, autocommit=True) as conn:
        def stored_max() -> int:
            return conn.execute("SELECT COALESCE(MAX(id), 0) FROM telemetry").fetchone()[0]

        # MAX(id) is a cheap probe (nothing is deleted; a repeat only leaves a gap)
        wait_until(lambda: stored_max() >= rows, 600, interval=0.05, what=f"{rows} telemetry rows",
                   progress=stored_max)
        rows_at = time.time()

        def mqtt_stats() -> list[dict]:
            return [gw.inspect("stats")["stats"]["mqtt"] for gw in gws]

        def acked() -> list[dict] | None:
            stats = mqtt_stats()
            done = (sum(m["counters"].get("acked", 0) for m in stats) >= messages
                    and all(m["unacknowledged"] == 0 for m in stats))
            return stats if done else None

        stats = wait_until(acked, 60, interval=0.05, what=f"{messages} messages acknowledged",
                           progress=lambda: sum(m["counters"].get("acked", 0) for m in mqtt_stats()))
        acked_at = time.time()
        cpu = cpu_share(cpu0, cpu_now(pids, cluster), acked_at - t0)
        stored = conn.execute("SELECT COUNT(*) FROM telemetry").fetchone()[0]
    if stored != rows:
        raise RuntimeError(f"scale-out: {len(gws)} instances stored {stored} rows, expected {rows}")
    elapsed = acked_at - t0
    return {"instances": len(gws), "messages": messages, "rows": stored, "seconds": round(elapsed, 3),
            "messages_per_s": round(messages / elapsed), "rows_per_s": round(stored / elapsed),
            "commit_lag_s": round(rows_at - t0, 3), "connect_spread_s": round(max(connected) - t0, 3),
            "received": [m["received"] for m in stats], "acked": [m["counters"].get("acked") for m in stats],
            "cpu_percent_of_one_core": cpu}


def lease_rows(conn: Any, buckets: list[int]) -> dict[int, tuple[str | None, float]]:
    found = conn.execute("SELECT bucket, owner, expires_at FROM gateway_leases WHERE bucket = ANY(%s)",
                         (buckets,)).fetchall()
    return {b: (owner, expires) for b, owner, expires in found}


def kill_owner(gws: list[BenchGateway], url: str, lease_s: float, ctx: Context) -> dict:
    """kill -9 the owner of the first backlog device; seconds until another
    instance holds its bucket, and every bucket the dead one held."""
    import psycopg

    device = load.uuids(1, STEM)[0]
    bucket = bucket_of(device, DEFAULT_BUCKETS)
    by_name = {gw.env["AUTOCORE_INSTANCE_ID"]: gw for gw in gws}
    with psycopg.connect(url, autocommit=True) as conn:
        def owner() -> str | None:
            owner_, expires = lease_rows(conn, [bucket]).get(bucket, (None, 0.0))
            return owner_ if owner_ and expires > time.time() else None

        victim = wait_until(owner, 3 * lease_s, what=f"an owner of bucket {bucket}")
        held = [b for (b,) in conn.execute("SELECT bucket FROM gateway_leases WHERE owner = %s AND expires_at > %s",
                                           (victim, time.time())).fetchall()]
        expires_at = max(e for _, e in lease_rows(conn, held).values())
        ctx.log(f"scale-out: kill -9 of {victim}, owner of {len(held)} buckets")
        killed_at = time.time()
        by_name[victim].kill()
        taken: dict[int, float] = {}

        def all_taken() -> bool:
            now = time.time()
            for b, (owner_, expires) in lease_rows(conn, held).items():
                if b not in taken and owner_ not in (None, victim) and expires > now:
                    taken[b] = now
            return len(taken) == len(held)

        wait_until(all_taken, 3 * lease_s + 10, interval=0.02, what=f"{victim}'s buckets taken over",
                   progress=lambda: f"{len(taken)} of {len(held)}")
    return {"victim": victim, "buckets": len(held), "lease_s": lease_s,
            "lease_left_at_kill_s": round(expires_at - killed_at, 3),
            "device_s": round(taken[bucket] - killed_at, 3), "first_s": round(min(taken.values()) - killed_at, 3),
            "all_s": round(max(taken.values()) - killed_at, 3)}
