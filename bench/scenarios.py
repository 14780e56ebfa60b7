"""The benchmark scenarios: the six of issue 5 and the mixed fleet of
issue 7. Each starts its own broker and gateway in fresh directories,
drives them with the generators of `bench.load` (separate processes),
and returns `Metric`s plus the details a reader needs to trust them.

Clocks: every time compared across processes is `time.time()` on this one
machine. "Committed" is observed the way another program sees it: a
separate read connection polling the gateway's SQLite file (WAL), so a
figure includes up to one polling interval of detection delay, never less
than the truth.
"""

from __future__ import annotations

import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from actors.rules.histogram import quantile_bound
from bench import load
from bench.procs import (
    BenchBroker,
    BenchGateway,
    cpu_seconds,
    disk_flushes,
    kill_tree,
    rss_mib,
    threads,
    wait_until,
    written_bytes,
)

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Sizes:
    backlog: int = 200_000
    backlog_devices: int = 100
    publishers: int = 8  # mosquitto_pub processes at once
    live_rates: tuple[int, ...] = (100, 1000, 5000)
    live_devices: int = 100
    live_warmup_s: float = 2.0
    live_seconds: float = 10.0
    flood_seconds: float = 10.0
    malformed: int = 200_000  # issue 11's full size; `make test` sends 20,000 (tests/integration/test_faults.py)
    commands: int = 1000
    command_devices: int = 50
    command_rate: float = 100.0
    offline_devices: int = 50
    scale: tuple[int, ...] = (50, 1000, 5000)
    scale_seconds: float = 15.0
    restarts: int = 5
    restart_devices: int = 1000
    redelivery_check: bool = True
    uplink_rows: int = 100_000  # scenario 8: the backlog replayed unpaced
    uplink_paced_rows: int = 20_000
    uplink_rate: float = 2000.0  # rows/s of the paced replay


FULL = Sizes()
QUICK = Sizes(backlog=10_000, live_warmup_s=1.0, live_seconds=3.0, flood_seconds=3.0, malformed=10_000,
              commands=100, command_rate=50.0,
              offline_devices=20, scale=(50, 200), scale_seconds=5.0, restarts=2, restart_devices=100,
              redelivery_check=False, uplink_rows=15_000, uplink_paced_rows=4_500, uplink_rate=1500.0)
SMOKE = Sizes(backlog=2_000, backlog_devices=20, publishers=4, live_rates=(200, 500), live_devices=20,
              live_warmup_s=0.5, live_seconds=1.0, flood_seconds=1.0, malformed=1_000, commands=20, command_devices=5,
              command_rate=50.0,
              offline_devices=5, scale=(20,), scale_seconds=2.0, restarts=1, restart_devices=20,
              redelivery_check=False, uplink_rows=1_500, uplink_paced_rows=900, uplink_rate=600.0)


@dataclass
class Metric:
    scenario: str
    name: str
    value: float | None
    unit: str
    gate: float | None = None
    aim: float | None = None
    better: str = "lower"  # or "higher"
    note: str = ""

    @property
    def key(self) -> str:
        return f"{self.scenario} | {self.name}"


@dataclass
class Outcome:
    metrics: list[Metric]
    details: dict = field(default_factory=dict)


class Context:
    """Fresh directories, the broker and gateways of one scenario, and cleanup."""

    def __init__(self, sizes: Sizes, log: Callable[[str], None], repeat_index: int = 0, keep: bool = False,
                 settings: dict[str, Any] | None = None) -> None:
        self.sizes = sizes
        self.settings = dict(settings or {})  # every gateway's, under the scenario's own
        self.log = log
        self.repeat_index = repeat_index
        self._tmp = tempfile.TemporaryDirectory(prefix="autocore-bench-", ignore_cleanup_errors=True)
        self.root = Path(self._tmp.name)
        self.keep = keep
        self._brokers: list[BenchBroker] = []
        self._gateways: list[BenchGateway] = []
        self._procs: list[subprocess.Popen] = []
        self._n = 0

    def broker(self) -> BenchBroker:
        self._n += 1
        b = BenchBroker(self.root / f"broker{self._n}").start()
        self._brokers.append(b)
        return b

    def gateway(self, broker: BenchBroker, **settings: Any) -> BenchGateway:
        self._n += 1
        gw = BenchGateway(self.root / f"gw{self._n}", broker.port, **{**self.settings, **settings})
        self._gateways.append(gw)
        return gw

    def spawn(self, *args: str) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, *args], cwd=str(ROOT), stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._procs.append(proc)
        return proc

    def generator(self, kind: str, port: int, *args: Any) -> subprocess.Popen:
        return self.spawn("-m", "bench.load", kind, "--port", str(port), *map(str, args))

    def close(self) -> None:
        for proc in self._procs:
            kill_tree(proc)
        for gw in self._gateways:
            gw.terminate_quietly()
        for b in self._brokers:
            b.stop()
        if not self.keep:
            self._tmp.cleanup()


# -- helpers ------------------------------------------------------------------


def read_json_line(proc: subprocess.Popen, timeout: float, what: str) -> dict:
    """The next JSON line a generator prints (its stderr if it died)."""
    box: list = []
    t = threading.Thread(target=lambda: box.append(proc.stdout.readline()), daemon=True)
    t.start()
    t.join(timeout)
    if not box or not box[0]:
        kill_tree(proc)
        err = proc.stderr.read() if proc.stderr else ""
        raise RuntimeError(f"{what}: no answer within {timeout:.0f} s (exit {proc.returncode}): {err[-2000:]}")
    return json.loads(box[0])


def finish(proc: subprocess.Popen, timeout: float, what: str) -> dict:
    """Close the generator's stdin (stop) and read its last JSON line."""
    try:
        proc.stdin.close()
    except OSError:
        pass
    out = read_json_line(proc, timeout, what)
    proc.wait(timeout)
    return out


def reader(path: Path) -> sqlite3.Connection:
    wait_until(path.exists, 20, what=f"database {path}")
    conn = sqlite3.connect(str(path), isolation_level=None, timeout=10, check_same_thread=False)
    conn.execute("PRAGMA query_only = 1")
    return conn


def one(conn: sqlite3.Connection, sql: str, *args: Any) -> Any:
    row = conn.execute(sql, args).fetchone()
    return None if row is None else row[0]


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 1)


def online_count(conn: sqlite3.Connection, stem: str) -> int:
    return one(conn, "SELECT COUNT(*) FROM gateway_devices WHERE status = 'online' AND uuid LIKE ?", stem + "-%")


def writer_p99(after: dict, before: dict, key: str = "stall_ms") -> tuple[float | None, str]:
    """The p99 of one of the store's histograms (`stall_ms`: the time each
    transaction waited at BEGIN and in COMMIT; `commit_ms`: each whole
    transaction) between two `inspect stats` writer sections, as the bound
    of its histogram bucket (and a note saying so)."""
    h1, h0 = (after.get(key) or {}).get("histogram"), (before.get(key) or {}).get("histogram")
    bound = quantile_bound(h1, 0.99, since=h0) if h1 and h0 else None
    if bound is None:
        return None, "no commits"
    if bound == float("inf"):
        return float(h1["le"][-1]), f"above the last bucket ({h1['le'][-1]:g} ms)"
    return bound, "bucket bound (ms): the p99 is at most this"


# -- 1. backlog drain ---------------------------------------------------------


def publish_backlog(port: int, sizes: Sizes, stem: str, boot_id: int) -> tuple[float, int]:
    """Queue the backlog with `mosquitto_pub -l` (one C client per device,
    `publishers` at once, QoS 1): seconds taken and messages published."""
    per_device, extra = divmod(sizes.backlog, sizes.backlog_devices)
    jobs = [(u, per_device + (1 if i < extra else 0)) for i, u in enumerate(load.uuids(sizes.backlog_devices, stem))]
    blobs = {u: load.backlog_lines(n, boot_id) for u, n in jobs}

    def publish(job: tuple[str, int]) -> int:
        uuid, n = job
        proc = subprocess.run(
            ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-i", f"{uuid}-pub", "-q", "1", "-M", "1000",
             "-t", f"autocore/devices/{uuid}/telemetry", "-l"],
            input=blobs[uuid], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=300,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"mosquitto_pub failed for {uuid}: {proc.stderr.decode(errors='replace')}")
        return n

    started = time.time()
    with ThreadPoolExecutor(sizes.publishers) as pool:
        published = sum(pool.map(publish, jobs))
    return time.time() - started, published


def drain_gateway(ctx: Context, gw: BenchGateway, messages: int, rows: int, broker_pid: int) -> dict:
    """Start the stopped gateway on its queued session; time connect -> every
    row committed -> every message acknowledged."""
    gw.start(wait_ready=False)
    wait_until(lambda: len(gw.children()) == 2, 30, what="the core and store processes")
    pids = gw.children()
    pids["broker"] = broker_pid
    cpu0 = {role: cpu_seconds(pid) for role, pid in pids.items()}
    connected_at = gw.line_time("connected to the broker", 60)
    conn = reader(gw.db_path)
    try:
        # MAX(id) is a cheap probe of a growing table (nothing is deleted).
        wait_until(lambda: (one(conn, "SELECT MAX(id) FROM telemetry") or 0) >= rows, 600, interval=0.02,
                   what=f"{rows} telemetry rows", progress=lambda: one(conn, "SELECT MAX(id) FROM telemetry") or 0)
        rows_at = time.time()

        def acked():
            mqtt = gw.inspect("stats")["stats"]["mqtt"]
            return mqtt if mqtt["unacknowledged"] == 0 and mqtt["counters"].get("acked", 0) >= messages else None

        mqtt = wait_until(acked, 60, interval=0.02, what=f"{messages} messages acknowledged",
                          progress=lambda: gw.inspect("stats")["stats"]["mqtt"]["counters"].get("acked", 0))
        acked_at = time.time()
        # CPU of each process (from just after it started, so its imports
        # too: ~0.2 s) to the end of the drain, as a share of one core over
        # the drain: which process is the bottleneck.
        cpu = {role: round(100.0 * (cpu_seconds(pid) - cpu0[role]) / (acked_at - connected_at), 1)
               for role, pid in pids.items()}
        stats = gw.inspect("stats")["stats"]
        stored = one(conn, "SELECT COUNT(*) FROM telemetry")
    finally:
        conn.close()
    elapsed = acked_at - connected_at
    return {"messages": messages, "rows": stored, "seconds": round(elapsed, 3),
            "messages_per_s": round(messages / elapsed), "rows_per_s": round(stored / elapsed),
            "commit_lag_s": round(rows_at - connected_at, 3), "received": mqtt["received"],
            "acked": mqtt["counters"].get("acked"), "start_to_connected_s": round(connected_at - gw.started_at, 3),
            "cpu_percent_of_one_core": cpu,
            "router_batches": stats["router"].get("counters", {}).get("batches"),
            "writer_batches": stats["writer"].get("batches"),
            "largest_batch_rows": stats["batcher"].get("largest_batch"),
            "commit_ms": stats["writer"].get("commit_ms")}


def drain_baseline(ctx: Context, port: int, db: Path, messages: int, broker_pid: int) -> dict:
    proc = ctx.spawn("-m", "bench.baseline", "--port", str(port), "--db", str(db), "--expect", str(messages))
    broker_cpu0 = cpu_seconds(broker_pid)
    out = read_json_line(proc, 600, "baseline")
    broker_cpu = cpu_seconds(broker_pid) - broker_cpu0
    proc.wait(30)
    elapsed = out["done_at"] - out["connect_at"]
    return {"messages": out["messages"], "rows": out["rows"], "seconds": round(elapsed, 3),
            "messages_per_s": round(out["messages"] / elapsed), "rows_per_s": round(out["rows"] / elapsed),
            "batches": out["batches"], "cpu_percent_of_one_core": {"baseline": round(100.0 * out["cpu_s"] / elapsed, 1),
                                        "broker": round(100.0 * broker_cpu / elapsed, 1)}}


def backlog(ctx: Context, config_app: bool = False) -> Outcome:
    """With `config_app`, the gateway's database is the Config App's, its
    tables and an owner's configuration in place before the gateway first
    starts: every reading is then also copied into `telemetry_data` and
    every device gets a row in `devices` (issue 10)."""
    s = ctx.sizes
    broker = ctx.broker()
    gw = ctx.gateway(broker)
    scenario = "1b backlog, Config App tables" if config_app else "1 backlog"
    if config_app:
        make_config_app_database(gw.db_path)
    gw.start()
    gw.stop()  # its persistent session stays with the broker
    base_db = ctx.root / "baseline.db"
    setup = ctx.spawn("-m", "bench.baseline", "--port", str(broker.port), "--db", str(base_db), "--setup")
    read_json_line(setup, 30, "baseline session")
    setup.wait(10)
    ctx.log(f"backlog: publishing {s.backlog} QoS 1 messages for {s.backlog_devices} devices")
    pub_s, published = publish_backlog(broker.port, s, "bench-backlog", boot_id=1)
    rows = published * 3
    # Both sessions hold the same queue; who drains first alternates between repeats.
    order = ["gateway", "baseline"] if ctx.repeat_index % 2 == 0 else ["baseline", "gateway"]
    results: dict[str, dict] = {}
    for who in order:
        ctx.log(f"backlog: {who} draining")
        if who == "gateway":
            results[who] = drain_gateway(ctx, gw, published, rows, broker.proc.pid)
        else:
            results[who] = drain_baseline(ctx, broker.port, base_db, published, broker.proc.pid)
    redelivered = None
    if s.redelivery_check:
        # Acknowledged means gone from the broker: a restart gets nothing again.
        gw.stop()
        gw.start()
        time.sleep(1.5)
        redelivered = gw.inspect("stats")["stats"]["mqtt"]["received"]
    gw.stop()
    g, b = results["gateway"], results["baseline"]
    ratio = g["messages_per_s"] / b["messages_per_s"]
    for who, r in results.items():
        if r["rows"] != rows:
            raise RuntimeError(f"backlog: {who} stored {r['rows']} rows, expected {rows}")
    details = {"published": published, "publish_seconds": round(pub_s, 2),
               "publish_rate": round(published / pub_s), "order": order, "gateway": g, "baseline": b,
               "redelivered_after_restart": redelivered}
    note = f"{published} msgs"
    if config_app:
        conn = reader(gw.db_path)
        try:
            copies = one(conn, "SELECT COUNT(*) FROM telemetry_data")
        finally:
            conn.close()
        details["telemetry_data_rows"] = copies
        if copies != rows:
            raise RuntimeError(f"backlog: {copies} rows copied into telemetry_data, expected {rows}")
    return Outcome([
        Metric(scenario, "gateway / baseline", round(ratio, 3), "x", 0.7, 1.2, "higher", note),
        Metric(scenario, "gateway messages/s", g["messages_per_s"], "msg/s", better="higher", note=note),
        Metric(scenario, "gateway rows/s", g["rows_per_s"], "rows/s", better="higher"),
        Metric(scenario, "baseline messages/s", b["messages_per_s"], "msg/s", better="higher"),
        Metric(scenario, "baseline rows/s", b["rows_per_s"], "rows/s", better="higher"),
    ], details)


def make_config_app_database(db_path: Path) -> None:
    """The Config App's schema and an owner's configuration, as that
    program leaves them (tests/support/config_app.py)."""
    from tests.support import config_app as app

    db_path.parent.mkdir(parents=True, exist_ok=True)
    app.create_all(str(db_path))
    conn = app.connect(str(db_path))
    try:
        app.user_configuration(conn)
    finally:
        conn.close()


def backlog_config_app(ctx: Context) -> Outcome:
    return backlog(ctx, config_app=True)


# -- 2. live latency ----------------------------------------------------------


class RowWatcher:
    """Polls new telemetry rows (idx 0: one per message) every `interval`
    seconds and notes when each was first visible."""

    def __init__(self, db: Path, interval: float = 0.005, devices_like: str = "%") -> None:
        self.conn = reader(db)
        self.interval = interval
        self.devices_like = devices_like
        self.last_id = one(self.conn, "SELECT MAX(id) FROM telemetry") or 0
        self.seen: list[tuple[float, float, float]] = []  # (ts, received_at, seen_at)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "RowWatcher":
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            found = self.conn.execute("SELECT id, ts, received_at, device_uuid LIKE ? FROM telemetry"
                                      " WHERE id > ? AND idx = 0 ORDER BY id",
                                      (self.devices_like, self.last_id)).fetchall()
            now = time.time()
            if found:
                self.last_id = found[-1][0]
                self.seen.extend((ts, rec, now) for _, ts, rec, wanted in found if wanted)
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.conn.close()


def fsync_probe(directory: Path, rounds: int = 5, size: int = 1 << 20) -> float:
    """Median milliseconds of an fsync after writing `size` bytes: the disk's
    mood right now. The writer's WAL checkpoints wait on the same fsync, so a
    slow disk on the shared host shows up in the live p99 (see bench/README.md)."""
    path = directory / "fsync-probe"
    times = []
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC)
    try:
        for _ in range(rounds):
            os.write(fd, os.urandom(size))
            t = time.perf_counter()
            os.fsync(fd)
            times.append(time.perf_counter() - t)
    finally:
        os.close(fd)
        path.unlink()
    return round(statistics.median(times) * 1000.0, 2)


def live_phase(ctx: Context, gw: BenchGateway, broker: BenchBroker, rate: int, stem: str) -> dict:
    """`rate` messages/s for the warm-up and the measured seconds: publish ->
    committed and visible (another program's view) per message, and what the
    store did meanwhile (bytes written per reading, commit stalls, fsyncs of
    the group commit, disk flushes)."""
    s = ctx.sizes
    store_pid = gw.children()["store"]
    fsync_ms = fsync_probe(gw.db_path.parent)
    stats0 = gw.inspect("stats")["stats"]
    writer0 = stats0["writer"]
    sync0 = stats0.get("durability") or {}
    written0 = written_bytes(store_pid)
    flushes0 = disk_flushes(gw.db_path.parent)
    watcher = RowWatcher(gw.db_path).start()
    ctx.log(f"live: {rate} messages/s for {s.live_warmup_s + s.live_seconds:g} s")
    proc = ctx.generator("live", broker.port, "--rate", rate, "--seconds", s.live_warmup_s + s.live_seconds,
                         "--devices", s.live_devices, "--stem", stem)
    read_json_line(proc, 30, "live publisher")
    phase_t0 = time.time()
    out = read_json_line(proc, s.live_warmup_s + s.live_seconds + 60, "live publisher")
    proc.wait(10)
    measured_from = out["t0"] + s.live_warmup_s
    try:
        wait_until(lambda: sum(1 for r in watcher.seen if r[0] >= out["t0"]) >= out["sent"], 30, interval=0.05,
                   progress=lambda: sum(1 for r in watcher.seen if r[0] >= out["t0"]),
                   what=f"the rows of {out['sent']} live messages")
    finally:
        watcher.stop()
    # Disk wear: bytes the store wrote (WAL and checkpoints) per reading
    # stored, readings per commit, fsyncs and disk flushes per second, over
    # the whole phase.
    phase_s = max(1e-9, time.time() - phase_t0)
    stats1 = gw.inspect("stats")["stats"]
    writer1 = stats1["writer"]
    sync1 = stats1.get("durability") or {}
    flushes1 = disk_flushes(gw.db_path.parent)
    readings = writer1["rows_inserted"] - writer0["rows_inserted"]
    commits = writer1["batches"] - writer0["batches"]
    per_reading = (written_bytes(store_pid) - written0) / readings if readings else None
    stall_p99, stall_note = writer_p99(writer1, writer0)
    transaction_p99, transaction_note = writer_p99(writer1, writer0, "commit_ms")
    durable_wait_p99, _ = writer_p99(sync1, sync0, "wait_ms") if sync1.get("wait_ms") else (None, "")
    window = [r for r in watcher.seen if r[0] >= measured_from]
    commit = [seen - ts for ts, _, seen in window]
    receive = [rec - ts for ts, rec, _ in window]  # publish -> the gateway read it
    inside = [seen - rec for _, rec, seen in window]  # read -> committed and visible
    measured_rate = len(window) / max(1e-9, out["t1"] - measured_from)
    return {"sent": out["sent"], "publish_errors": out["errors"], "publisher_rate": round(out["rate"]),
            "measured_messages": len(window), "measured_rate": round(measured_rate),
            "commit_ms": {"p50": ms(percentile(commit, 50)), "p90": ms(percentile(commit, 90)),
                          "p99": ms(percentile(commit, 99)), "max": ms(max(commit) if commit else None)},
            "receive_ms": {"p50": ms(percentile(receive, 50)), "p99": ms(percentile(receive, 99))},
            "gateway_ms": {"p50": ms(percentile(inside, 50)), "p99": ms(percentile(inside, 99))},
            "fsync_probe_ms_before": fsync_ms,
            "bytes_written_per_reading": None if per_reading is None else round(per_reading),
            "readings_per_commit": round(readings / commits, 1) if commits else None,
            "commits_per_s": round(commits / phase_s, 1),
            "group_fsyncs_per_s": (round((sync1.get("syncs", 0) - sync0.get("syncs", 0)) / phase_s, 1)
                                   if "syncs" in sync1 else None),
            "disk_flushes_per_s": None if flushes0 is None or flushes1 is None else round((flushes1 - flushes0) / phase_s, 1),
            "durable_wait_p99_ms": durable_wait_p99,
            "store_commit_stall_p99_ms": stall_p99, "store_commit_stall_note": stall_note,
            "store_transaction_p99_ms": transaction_p99, "store_transaction_note": transaction_note}


def rate_label(rate: int) -> str:
    return f"{rate / 1000:g}k/s" if rate >= 1000 else f"{rate}/s"


def live(ctx: Context) -> Outcome:
    s = ctx.sizes
    broker = ctx.broker()
    gw = ctx.gateway(broker).start()
    metrics: list[Metric] = []
    details: dict = {}
    for rate in s.live_rates:
        label = rate_label(rate)
        d = details[label] = live_phase(ctx, gw, broker, rate, f"bench-live{rate}")
        note = f"{d['measured_rate']} msg/s measured"
        gate, aim = (250.0, 100.0) if rate == 5000 else (None, None)  # the target is at 5k/s
        metrics.append(Metric("2 live", f"{label} publish->commit p50", d["commit_ms"]["p50"], "ms", note=note))
        metrics.append(Metric("2 live", f"{label} publish->commit p99", d["commit_ms"]["p99"], "ms", gate, aim))
        metrics.append(Metric("2 live", f"{label} bytes written per reading", d["bytes_written_per_reading"], "B",
                              note=f"{d['readings_per_commit']} readings per commit"))
        # Issue 11: checkpoints kept out of the commit path (p99 commit stall
        # <= 20 ms): what a transaction waited for the write lock and in
        # COMMIT. The whole transaction (its statements' work, which grows
        # with the batch) is shown beside it.
        metrics.append(Metric("2 live", f"{label} store commit stall p99", d["store_commit_stall_p99_ms"], "ms",
                              None, 20.0, note=d["store_commit_stall_note"]))
        metrics.append(Metric("2 live", f"{label} store transaction p99", d["store_transaction_p99_ms"], "ms",
                              note=f"{d['store_transaction_note']}; {d['readings_per_commit']} readings each"))
    gw.stop()
    return Outcome(metrics, details)


# -- 3. commands --------------------------------------------------------------


FINAL = ("succeeded", "failed", "timeout", "expired", "cancelled")


def commands(ctx: Context) -> Outcome:
    s = ctx.sizes
    broker = ctx.broker()
    gw = ctx.gateway(broker).start()
    stem = "bench-cmd"
    proc = ctx.generator("responders", broker.port, "--devices", s.command_devices, "--stem", stem,
                         "--seconds", s.commands / s.command_rate + 120)
    ready = read_json_line(proc, 60, "command responders")
    devices = ready["devices"]
    conn = sqlite3.connect(str(gw.db_path), isolation_level=None, timeout=10)
    try:
        wait_until(lambda: online_count(conn, stem) >= len(devices), 30, what=f"{len(devices)} responders online",
                   progress=lambda: online_count(conn, stem))
        inserted: dict[int, float] = {}
        final: dict[int, tuple[float, str]] = {}
        ctx.log(f"commands: {s.commands} commands at {s.command_rate:g}/s over {len(devices)} devices")
        start = time.monotonic()
        deadline = start + s.commands / s.command_rate + 60
        i = 0
        while (len(final) < s.commands) and time.monotonic() < deadline:
            due = min(s.commands, int((time.monotonic() - start) * s.command_rate) + 1)
            while i < due:
                now = time.time()
                cur = conn.execute(
                    "INSERT INTO commands (device_uuid, command_type, parameters, topic, status, created_at, "
                    "expires_at, max_attempts, attempts) VALUES (?, 'relay_control', ?, 'command', 'pending', ?, ?, 3, 0)",
                    (devices[i % len(devices)], json.dumps({"relay_id": 1 + i % 8, "state": i % 2 == 0}), now, now + 300))
                inserted[cur.lastrowid] = time.time()  # autocommit: the row is there now
                i += 1
            if inserted:
                low = min(set(inserted) - set(final), default=None)
                if low is not None:
                    for cid, status in conn.execute(
                            "SELECT id, status FROM commands WHERE id >= ? AND status IN (%s)" % ",".join("?" * len(FINAL)),
                            (low, *FINAL)):
                        if cid in inserted and cid not in final:
                            final[cid] = (time.time(), status)
            time.sleep(0.005)
    finally:
        conn.close()
    got = finish(proc, 30, "command responders")
    first_receipt: dict[int, float] = {}
    repeats = 0
    for cid, attempt, at in got["received"]:
        cid = int(cid)
        if cid in first_receipt:
            repeats += 1
            continue
        first_receipt[cid] = at
    to_device = [first_receipt[c] - t for c, t in inserted.items() if c in first_receipt]
    to_final = [final[c][0] - t for c, t in inserted.items() if c in final]
    statuses: dict[str, int] = {}
    for _, status in final.values():
        statuses[status] = statuses.get(status, 0) + 1
    gw.stop()
    details = {"inserted": len(inserted), "received_by_devices": len(first_receipt), "repeats_received": repeats,
               "final": statuses, "insert_rate": s.command_rate,
               "insert_to_device_ms": {"p50": ms(percentile(to_device, 50)), "p99": ms(percentile(to_device, 99)),
                                       "max": ms(max(to_device) if to_device else None)},
               "insert_to_final_ms": {"p50": ms(percentile(to_final, 50)), "p99": ms(percentile(to_final, 99)),
                                      "max": ms(max(to_final) if to_final else None)}}
    note = f"{len(first_receipt)}/{len(inserted)} delivered, {statuses.get('succeeded', 0)} succeeded"
    return Outcome([
        Metric("3 commands", "insert->device p50", ms(percentile(to_device, 50)), "ms", note=note),
        Metric("3 commands", "insert->device p99", ms(percentile(to_device, 99)), "ms", 300.0, 150.0),
        Metric("3 commands", "insert->final p50", ms(percentile(to_final, 50)), "ms"),
        Metric("3 commands", "insert->final p99", ms(percentile(to_final, 99)), "ms"),
    ], details)


# -- 4. offline detection -----------------------------------------------------


def offline(ctx: Context) -> Outcome:
    s = ctx.sizes
    timeout_s, interval = 2.0, 0.5  # timeout = max(3 x 0.5, 2) = 2 s
    broker = ctx.broker()
    gw = ctx.gateway(broker, device_timeout_s=timeout_s).start()
    stem = "bench-silent"
    proc = ctx.generator("silent", broker.port, "--devices", s.offline_devices, "--stem", stem,
                         "--interval", interval, "--talk", 1.0, "--spread", 1.0, "--seconds", 60)
    last = read_json_line(proc, 60, "silent devices")["last"]
    conn = reader(gw.db_path)
    seen: dict[str, tuple[float, float]] = {}  # uuid -> (visible at, event ts)
    try:
        end = max(last.values()) + timeout_s + 10
        while len(seen) < len(last) and time.time() < end:
            for uuid, ts in conn.execute("SELECT device_uuid, MIN(ts) FROM device_events WHERE event = 'offline' "
                                         "AND device_uuid LIKE ? GROUP BY device_uuid", (stem + "-%",)):
                if uuid in last and uuid not in seen:
                    seen[uuid] = (time.time(), ts)
            time.sleep(0.005)
    finally:
        conn.close()
    finish(proc, 30, "silent devices")
    gw.stop()
    visible = [seen[u][0] - (last[u] + timeout_s) for u in seen]
    event = [seen[u][1] - (last[u] + timeout_s) for u in seen]
    details = {"devices": len(last), "detected": len(seen), "timeout_s": timeout_s, "status_interval": interval,
               "deadline_to_visible_ms": {"p50": ms(percentile(visible, 50)), "max": ms(max(visible) if visible else None),
                                          "min": ms(min(visible) if visible else None)},
               "deadline_to_event_ts_ms": {"p50": ms(percentile(event, 50)), "max": ms(max(event) if event else None)}}
    missed = len(last) - len(seen)
    worst = max(visible) if visible and not missed else None
    return Outcome([
        Metric("4 offline", "deadline->event visible p50", ms(percentile(visible, 50)), "ms",
               note=f"{len(seen)}/{len(last)} detected"),
        Metric("4 offline", "deadline->event visible max", ms(worst), "ms", 1000.0, 200.0),
    ], details)


# -- 5. scale -----------------------------------------------------------------


def scale(ctx: Context) -> Outcome:
    s = ctx.sizes
    metrics: list[Metric] = []
    details: dict = {}
    targets = {50: (100.0, 60.0), 5000: (400.0, 250.0)}
    for n in s.scale:
        broker = ctx.broker()
        gw = ctx.gateway(broker).start()
        pids = gw.children()
        stem = f"bench-scale{n}"
        ctx.log(f"scale: {n} devices, status every 5 s")
        proc = ctx.generator("status", broker.port, "--devices", n, "--stem", stem, "--interval", 5,
                             "--seconds", s.scale_seconds + 120)
        read_json_line(proc, 60, "status devices")
        conn = reader(gw.db_path)
        try:
            t_online = time.time()
            wait_until(lambda: online_count(conn, stem) >= n, 90, interval=0.1, what=f"{n} devices online",
                       progress=lambda: online_count(conn, stem))
            online_s = time.time() - t_online
        finally:
            conn.close()
        time.sleep(min(2.0, s.scale_seconds / 2))  # let the announce burst settle
        cpu0 = {r: cpu_seconds(p) for r, p in pids.items()}
        t0 = time.time()
        peak = {r: 0.0 for r in pids}
        while time.time() - t0 < s.scale_seconds:
            for r, p in pids.items():
                peak[r] = max(peak[r], rss_mib(p))
            time.sleep(0.25)
        wall = time.time() - t0
        cpu = {r: 100.0 * (cpu_seconds(p) - cpu0[r]) / wall for r, p in pids.items()}
        nthreads = {r: threads(p) for r, p in pids.items()}
        launcher_rss = rss_mib(gw.proc.pid)
        out = finish(proc, 30, "status devices")
        gw.stop()
        broker.stop()
        total = peak["core"] + peak["store"]
        details[str(n)] = {"rss_mib": {k: round(v, 1) for k, v in peak.items()} | {"launcher": round(launcher_rss, 1)},
                           "cpu_percent": {k: round(v, 1) for k, v in cpu.items()}, "threads": nthreads,
                           "online_after_s": round(online_s, 2), "reports_sent": out.get("sent"),
                           "measured_s": round(wall, 1)}
        gate, aim = targets.get(n, (None, None))
        metrics.append(Metric("5 scale", f"{n} devices RSS core+store", round(total, 1), "MiB", gate, aim,
                              note=f"core {peak['core']:.0f} + store {peak['store']:.0f}"))
        metrics.append(Metric("5 scale", f"{n} devices CPU core+store", round(cpu["core"] + cpu["store"], 1), "%",
                              note=f"core {cpu['core']:.0f}% + store {cpu['store']:.0f}%"))
    return Outcome(metrics, details)


# -- 6. restart ---------------------------------------------------------------


def restart(ctx: Context) -> Outcome:
    s = ctx.sizes
    broker = ctx.broker()
    gw = ctx.gateway(broker).start()
    stem = "bench-restart"
    # Devices keep reporting through the restarts; the database knows them all online.
    proc = ctx.generator("status", broker.port, "--devices", s.restart_devices, "--stem", stem, "--interval", 5,
                         "--seconds", 60 + 10 * s.restarts)
    read_json_line(proc, 60, "status devices")
    conn = reader(gw.db_path)
    try:
        wait_until(lambda: online_count(conn, stem) >= s.restart_devices, 60, interval=0.1,
                   what=f"{s.restart_devices} devices online", progress=lambda: online_count(conn, stem))
    finally:
        conn.close()
    times: list[float] = []
    for k in range(s.restarts):
        time.sleep(0.5)
        gw.kill()
        t0 = time.time()
        gw.start(wait_ready=False)
        ready_at = gw.line_time("ready:", 60)
        times.append(ready_at - t0)
        ctx.log(f"restart: {k + 1}/{s.restarts}: ready after {times[-1]:.3f} s")
    finish(proc, 30, "status devices")
    gw.stop()
    med = statistics.median(times)
    return Outcome([
        Metric("6 restart", "kill -9 -> ready (median)", round(med, 3), "s", 3.0, 1.0,
               note=f"{len(times)} restarts, {s.restart_devices} devices known, max {max(times):.2f} s"),
    ], {"seconds": [round(t, 3) for t in times], "devices_known": s.restart_devices})


# -- 7. mixed fleet: v1 and firmware 2.2 --------------------------------------


class MixedWatcher:
    """Polls the one row per message that carries (or locates) its publish
    time: v1 idx 0 (`ts`), a display status's `uptime` row (its value),
    a relays/state's `relay.1.state` row (matched to the publish log by
    the device's message order). Notes when each was first visible."""

    SQL = ("SELECT id, device_uuid, metric, ts, received_at, value FROM telemetry WHERE id > ? AND "
           "((idx = 0 AND seq IS NOT NULL) OR metric IN ('uptime', 'relay.1.state')) ORDER BY id")

    def __init__(self, db: Path, interval: float = 0.005) -> None:
        self.conn = reader(db)
        self.interval = interval
        self.last_id = one(self.conn, "SELECT MAX(id) FROM telemetry") or 0
        self.seen: list[tuple[str, str, float, float, float, float]] = []  # (uuid, metric, ts, received_at, value, seen)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            found = self.conn.execute(self.SQL, (self.last_id,)).fetchall()
            now = time.time()
            if found:
                self.last_id = found[-1][0]
                self.seen.extend((u, m, ts, rec, v, now) for _, u, m, ts, rec, v in found)
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.conn.close()


def mixed_phase(ctx: Context, name: str, v1_share: float, rate: int) -> dict:
    s = ctx.sizes
    broker = ctx.broker()  # fresh: no retained status of an earlier phase
    gw = ctx.gateway(broker).start()
    core = gw.children()["core"]
    watcher = MixedWatcher(gw.db_path)
    probe = reader(gw.db_path)
    stem = "bench-mix-" + name.replace(".", "")  # a uuid has no dots
    ctx.log(f"mixed: {name}: {rate} messages/s for {s.live_warmup_s + s.live_seconds:g} s")
    proc = ctx.generator("mixed", broker.port, "--rate", rate, "--seconds", s.live_warmup_s + s.live_seconds,
                         "--devices", s.live_devices, "--stem", stem, "--v1-share", v1_share)
    try:
        read_json_line(proc, 30, "mixed publisher")
        time.sleep(s.live_warmup_s)
        cpu0, t_cpu0 = cpu_seconds(core), time.time()
        rows0 = one(probe, "SELECT MAX(id) FROM telemetry") or 0
        out = read_json_line(proc, s.live_seconds + 60, "mixed publisher")
        proc.wait(10)

        expected = out["by_kind"]["v1"] + out["by_kind"]["relay"]

        def got() -> int:  # every QoS 1 message's marker row visible, and the QoS 0 ones settled
            return sum(1 for r in watcher.seen if r[1] != "uptime" and r[3] >= out["t0"] - 1)

        wait_until(lambda: got() >= expected, 60, interval=0.05, what=f"the rows of {expected} {name} messages",
                   progress=got)
        time.sleep(0.3)
        t_cpu1, cpu1 = time.time(), cpu_seconds(core)
        rows1 = one(probe, "SELECT MAX(id) FROM telemetry") or 0
    finally:
        watcher.stop()
        probe.close()
    stats = gw.inspect("stats")["stats"]
    gw.stop()
    broker.stop()
    # Publish time of every observed message: v1 ts, display uptime, relay from the publish log.
    relay_order: dict[str, int] = {}
    pubs = out["relay_published"]
    by_kind: dict[str, list[tuple[float, float, float]]] = {"v1": [], "relay": [], "display": []}  # (pub, rec, seen)
    parity_bad = 0
    for u, metric, ts, rec, value, seen in watcher.seen:
        if metric == "uptime":
            if value is not None and value > 1e9:  # not the boot-time status (uptime 9)
                by_kind["display"].append((value, rec, seen))
        elif metric == "relay.1.state":
            k = relay_order[u] = relay_order.get(u, 0) + 1
            at = pubs.get(f"{u} {k % 65536}")
            if at is not None:
                parity_bad += int(bool(value) != bool(k & 1))  # channel 1 spells bit 0 of k
                by_kind["relay"].append((at, rec, seen))
        else:
            by_kind["v1"].append((ts, rec, seen))
    after = {k: [r for r in v if r[1] >= t_cpu0] for k, v in by_kind.items()}  # read in the CPU window
    window = [r for v in after.values() for r in v]
    messages = len(window)
    rows = rows1 - rows0  # ids: nothing is deleted; every row read in the window (near enough)
    cpu = cpu1 - cpu0
    commit = [seen - pub for pub, _, seen in window]
    inside = [seen - rec for _, rec, seen in window]

    def lat(values: list[float]) -> dict:
        return {"p50": ms(percentile(values, 50)), "p99": ms(percentile(values, 99)), "n": len(values)}

    return {"sent": out["sent"], "by_kind_sent": out["by_kind"], "publish_errors": out["errors"],
            "publisher_rate": round(out["rate"]), "messages_in_window": messages, "rows_in_window": rows,
            "rows_per_message": round(rows / max(1, messages), 2), "window_s": round(t_cpu1 - t_cpu0, 2),
            "core_cpu_s": round(cpu, 3), "core_cpu_percent": round(100 * cpu / (t_cpu1 - t_cpu0), 1),
            "us_per_message": round(1e6 * cpu / max(1, messages), 1), "us_per_row": round(1e6 * cpu / max(1, rows), 2),
            "commit_ms": lat(commit), "read_to_visible_ms": lat(inside),
            "commit_ms_by_kind": {k: lat([seen - pub for pub, _, seen in v]) for k, v in after.items() if v},
            "relay_order_mismatches": parity_bad,
            "dropped_by_rate_limit": stats.get("router", {}).get("counters", {}).get("rate_limited")}


def mixed(ctx: Context) -> Outcome:
    s = ctx.sizes
    rate = s.live_rates[-1]
    phases = {"v1": 1.0, "2.2": 0.0, "half": 0.5}
    details: dict = {"rate": rate}
    metrics: list[Metric] = []
    for name, share in phases.items():
        d = details[name] = mixed_phase(ctx, name, share, rate)
        note = f"{d['messages_in_window']} msgs, {d['rows_per_message']:g} rows/msg"
        metrics += [
            Metric("7 mixed", f"{name} publish->commit p50", d["commit_ms"]["p50"], "ms", note=note),
            # The live scenario's gate and aim hold for a 2.2 fleet too.
            Metric("7 mixed", f"{name} publish->commit p99", d["commit_ms"]["p99"], "ms",
                   *((250.0, 100.0) if name == "2.2" else (None, None))),
            Metric("7 mixed", f"{name} core CPU per message", d["us_per_message"], "us",
                   note=f"core {d['core_cpu_percent']:g}% of a core"),
            Metric("7 mixed", f"{name} core CPU per row", d["us_per_row"], "us"),
        ]
    v1, fw = details["v1"], details["2.2"]
    metrics += [
        # Gate 1.10: "no more than v1" within the run-to-run noise of this
        # figure (0.97-1.08 x over three runs of the same code); aim 1.0.
        Metric("7 mixed", "2.2 / v1 core CPU per message", round(fw["us_per_message"] / v1["us_per_message"], 3), "x",
               1.10, 1.0, note="issue 7: no more per message than v1"),
        Metric("7 mixed", "2.2 / v1 core CPU per row", round(fw["us_per_row"] / v1["us_per_row"], 3), "x"),
    ]
    return Outcome(metrics, details)


# -- 8. a flooding device ------------------------------------------------------


FLOOD_LIMIT = 100  # messages/s per device (AUTOCORE_DEVICE_RATE and _BURST in this scenario)


def flood_phase(ctx: Context, gw: BenchGateway, port: int, flooder: bool, label: str) -> dict:
    """20 quiet devices at 50 messages/s each for `flood_seconds` (after a
    1 s warm-up), with or without one device at 1,000/s: the quiet ones'
    publish -> commit latency, the core's CPU, what was refused."""
    s = ctx.sizes
    seconds = 1.0 + s.flood_seconds
    core = gw.children()["core"]
    stem = f"bench-quiet-{label}"
    watcher = RowWatcher(gw.db_path, devices_like=f"{stem}-%").start()
    before = gw.inspect("stats")["stats"]
    cpu0, t0 = cpu_seconds(core), time.time()
    wal0 = written_bytes(gw.children()["store"])
    quiet = ctx.generator("live", port, "--rate", 1000, "--seconds", seconds, "--devices", 20, "--stem", stem)
    loud = (ctx.generator("live", port, "--rate", 1000, "--seconds", seconds, "--devices", 1, "--connections", 1,
                          "--stem", f"bench-flooder-{label}") if flooder else None)
    for proc in (quiet, loud):
        if proc is not None:
            read_json_line(proc, 30, "publisher")
    out = read_json_line(quiet, seconds + 60, "quiet publisher")
    loud_out = read_json_line(loud, seconds + 60, "flooder") if loud is not None else None
    try:
        wait_until(lambda: sum(1 for r in watcher.seen if r[0] >= out["t0"]) >= out["sent"], 30, interval=0.05,
                   progress=lambda: sum(1 for r in watcher.seen if r[0] >= out["t0"]),
                   what=f"the rows of {out['sent']} quiet messages")
    finally:
        watcher.stop()
    cpu = cpu_seconds(core) - cpu0
    wall = time.time() - t0
    after = gw.inspect("stats")["stats"]
    refused = (after["rejections"].get("rate_limited", 0) - before["rejections"].get("rate_limited", 0))
    stall_p99, _ = writer_p99(after["writer"], before["writer"])
    stored = after["writer"]["rows_inserted"] - before["writer"]["rows_inserted"]
    written = written_bytes(gw.children()["store"]) - wal0
    window = [seen - ts for ts, _, seen in watcher.seen if ts >= out["t0"] + 1.0]
    return {"quiet_sent": out["sent"], "flooder_sent": loud_out["sent"] if loud_out else 0, "refused": refused,
            "quiet_p50_ms": ms(percentile(window, 50)), "quiet_p99_ms": ms(percentile(window, 99)),
            "core_cpu_s": round(cpu, 3), "core_cpu_percent": round(100.0 * cpu / wall, 1),
            "store_commit_stall_p99_ms": stall_p99, "bytes_written_per_reading": round(written / stored) if stored else None}


def flood(ctx: Context) -> Outcome:
    """Issue 11: a device stuck in a loop (1,000 messages/s against a limit
    of 100/s) beside 20 quiet ones: its excess is refused cheaply (the rate
    decision is taken from the topic, before decoding) and the quiet
    devices' latency barely moves."""
    broker = ctx.broker()
    gw = ctx.gateway(broker, device_rate=FLOOD_LIMIT, device_burst=FLOOD_LIMIT).start()
    calm = flood_phase(ctx, gw, broker.port, False, "calm")
    loud = flood_phase(ctx, gw, broker.port, True, "loud")
    gw.stop()
    ratio = (loud["quiet_p99_ms"] / calm["quiet_p99_ms"]) if calm["quiet_p99_ms"] and loud["quiet_p99_ms"] else None
    extra_cpu_us = (1e6 * (loud["core_cpu_s"] - calm["core_cpu_s"]) / loud["refused"]) if loud["refused"] else None
    note = f"{loud['refused']} of {loud['flooder_sent']} refused"
    return Outcome([
        Metric("8 flood", "quiet p99 without the flooder", calm["quiet_p99_ms"], "ms"),
        Metric("8 flood", "quiet p99 with the flooder", loud["quiet_p99_ms"], "ms", note=note),
        Metric("8 flood", "quiet p99 with / without", None if ratio is None else round(ratio, 2), "x"),
        Metric("8 flood", "core CPU per flooder message", None if extra_cpu_us is None else round(extra_cpu_us, 1),
               "us", note="extra core CPU over the calm run / refused"),
        Metric("8 flood", "store commit stall p99 with the flooder", loud["store_commit_stall_p99_ms"], "ms",
               None, 20.0, note="bucket bound: BEGIN and COMMIT waits"),
        Metric("8 flood", "bytes written per reading with the flooder", loud["bytes_written_per_reading"], "B"),
    ], {"calm": calm, "loud": loud})


# -- 10. a flood of malformed messages ------------------------------------------

MALFORMED_RSS_GROWTH_MB = 20.0  # core and store each, as tests/integration/test_faults.py holds it


def malformed(ctx: Context) -> Outcome:
    """Issue 11 at full size: `malformed` QoS 1 messages that the protocol
    refuses (bad encodings, wrong types, oversize, bad uuids) from five
    `mosquitto_pub` at once. Every one counted under the reason the
    protocol gives it and acknowledged, no process restarted, and the RSS of
    core and store (sampled while it lasts) grows by less than
    MALFORMED_RSS_GROWTH_MB each; the rate the gateway refuses them at."""
    from tests.support.faults import MAX_PAYLOAD, expected_rejections, malformed_plan, publish_lines

    volume = ctx.sizes.malformed
    broker = ctx.broker()
    gw = ctx.gateway(broker, max_payload=MAX_PAYLOAD, device_rate=1_000_000, device_burst=1_000_000).start()
    pids = gw.children()
    plan = malformed_plan(volume)
    wanted = expected_rejections(plan)
    before = gw.inspect("stats")["stats"]
    rss0 = {p: rss_mib(pid) for p, pid in pids.items()}
    peak = dict(rss0)
    t0 = time.time()
    procs = [publish_lines(broker.port, topic, lines, f"bench-malformed-{i}", ctx.root)
             for i, (topic, lines) in enumerate(plan)]
    errors = 0
    for proc in procs:
        errors += proc.wait(60 + volume / 2000) != 0
    base = before["rejections"]

    def counted() -> int:
        for p, pid in pids.items():
            peak[p] = max(peak[p], rss_mib(pid))
        got = gw.inspect("stats")["stats"]["rejections"]
        return sum(got.get(k, 0) - base.get(k, 0) for k in got)

    wait_until(lambda: counted() >= volume, 60 + volume / 2000, interval=0.2, progress=counted,
               what=f"{volume} malformed messages rejected")
    took = time.time() - t0
    after = gw.inspect("stats")["stats"]
    got = {k: after["rejections"].get(k, 0) - base.get(k, 0) for k in after["rejections"]}
    miscounted = sum(abs(got.get(k, 0) - wanted.get(k, 0)) for k in set(got) | set(wanted))
    restarted = gw.children() != pids
    growth = max(peak[p] - rss0[p] for p in pids)
    gw.stop()
    note = f"{volume} sent by 5 publishers, {errors} publisher errors" + (", A PROCESS RESTARTED" if restarted else "")
    return Outcome([
        Metric("10 malformed", "refused messages/s", round(volume / took), "msg/s", note=note),
        Metric("10 malformed", "messages not counted under their reason", miscounted + (volume if restarted else 0),
               "", 0.0, 0.0),
        Metric("10 malformed", "RSS growth, largest of core and store", round(growth, 1), "MiB",
               MALFORMED_RSS_GROWTH_MB, None, note=f"peak core {peak['core']:.0f}, store {peak['store']:.0f} MiB"),
    ], {"sent": volume, "wanted": dict(wanted), "counted": got, "seconds": round(took, 2), "rss_before": rss0,
        "rss_peak": peak, "publisher_errors": errors, "restarted": restarted})


def _uplink(ctx: Context) -> Outcome:
    from bench.uplink import uplink

    return uplink(ctx)


def _uplink_kill(ctx: Context) -> Outcome:
    from bench.uplink import uplink_kill

    return uplink_kill(ctx)


def _scaleout(ctx: Context) -> Outcome:
    from bench.scaleout import scaleout

    return scaleout(ctx)


def _durability(ctx: Context) -> Outcome:
    from bench.durability import durability

    return durability(ctx)


SCENARIOS: dict[str, Callable[[Context], Outcome]] = {
    "backlog": backlog,
    "backlog_config_app": backlog_config_app,
    "live": live,
    "commands": commands,
    "offline": offline,
    "scale": scale,
    "restart": restart,
    "mixed": mixed,
    "flood": flood,
    "malformed": malformed,
    "uplink": _uplink,
    "uplink_kill": _uplink_kill,
    "scaleout": _scaleout,
    "durability": _durability,
}
