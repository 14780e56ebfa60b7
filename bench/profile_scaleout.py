"""Where the time goes while N instances drain a backlog on PostgreSQL:

    python -m bench.profile_scaleout [--instances 3] [--messages 60000] [--out DIR] [--no-py-spy]

One phase of scenario 11 (bench/scaleout.py): a fresh broker, a throw-away
PostgreSQL cluster (fsync on), N instances with their sessions, the backlog
queued, then the drain. Meanwhile:

* py-spy records every core and store process (`py-spy record --nonblocking
  --format raw`, 50 samples/s, threads holding the CPU only): DIR/<i>-<role>.txt
  are the folded stacks; the summary prints each process's top functions,
  inclusive (the share of its samples with the function anywhere on the
  stack) and where the time is spent itself;
* PostgreSQL's backends are sampled every 50 ms (pg_stat_activity): the
  share of samples each spent running, idle, or waiting, by wait event (a
  row lock between the instances' writers shows up as Lock/transactionid);
* /proc gives each process's CPU as a share of one core over the drain.

py-spy adds load of its own (each sampler costs a few % of a core): compare
its shares within a process, and take rates from `make bench`.
"""

from __future__ import annotations

import argparse
import collections
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench.scaleout import STEM, drain_instances, queue_backlog, start_all
from bench.scenarios import Context, Sizes

PY_SPY = Path(sys.executable).with_name("py-spy")


def main(argv: list[str] | None = None) -> int:
    from tests.support.postgres import PgCluster

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=3)
    parser.add_argument("--messages", type=int, default=60_000)
    parser.add_argument("--out", type=Path, default=Path("/tmp/autocore-profile"))
    parser.add_argument("--no-py-spy", action="store_true", help="only /proc and pg_stat_activity")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    ctx = Context(Sizes(backlog=args.messages), lambda text: print(f"[{time.time() - started:6.1f} s] {text}",
                                                                   file=sys.stderr, flush=True))
    cluster = PgCluster(fsync=True).start()
    spies: dict[str, subprocess.Popen] = {}
    try:
        broker = ctx.broker()
        url = cluster.create_database("profile")
        gws = [ctx.gateway(broker, db_url=url, share_group="bench", instance_id=f"i{k}", mqtt_client_id="gw")
               for k in range(1, args.instances + 1)]
        start_all(gws)
        for gw in gws:
            gw.stop()
        published = queue_backlog(ctx, broker)
        waits = WaitSampler(url)

        def attach(pids: dict[str, int]) -> None:
            waits.start()
            if args.no_py_spy:
                return
            for name, pid in pids.items():
                if name == "broker":
                    continue
                path = args.out / f"{name.replace(':', '-')}.txt"
                spies[name] = subprocess.Popen([str(PY_SPY), "record", "--pid", str(pid), "--nonblocking",
                                                "--rate", "50", "--format", "raw", "--output", str(path)],
                                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

        load_before = os.getloadavg()[0]
        result = drain_instances(gws, cluster, url, published, published * 3, broker.proc.pid, on_started=attach)
        waits.stop()
        for spy in spies.values():
            spy.send_signal(signal.SIGINT)
        for spy in spies.values():
            spy.wait(30)
        for gw in gws:
            gw.terminate_quietly()
    finally:
        for spy in spies.values():
            if spy.poll() is None:
                spy.kill()
        ctx.close()
        cluster.stop()
    print(f"{args.instances} instance(s), {published} messages of {STEM}: {result['messages_per_s']} messages/s, "
          f"{result['seconds']} s; load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after")
    print("CPU, % of one core over the drain:",
          ", ".join(f"{k} {v:.0f}" for k, v in sorted(result["cpu_percent_of_one_core"].items())))
    print(f"PostgreSQL backends of the gateways, share of {waits.samples} samples:")
    total = sum(waits.counts.values()) or 1
    for state, n in waits.counts.most_common(12):
        print(f"  {100.0 * n / total:5.1f} %  {state}")
    for name in spies:
        path = args.out / f"{name.replace(':', '-')}.txt"
        if path.exists():
            print(summary(name, path))
    return 0


class WaitSampler:
    """What every other client backend of the database does, every 50 ms."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.counts: collections.Counter[str] = collections.Counter()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self._stop.wait(0.05):
                rows = conn.execute(
                    "SELECT state, wait_event_type, wait_event, left(query, 40) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND backend_type = 'client backend'"
                    " AND pid <> pg_backend_pid()").fetchall()
                self.samples += 1
                for state, wtype, wevent, query in rows:
                    if state == "active":
                        key = f"active, waiting {wtype}/{wevent}" if wtype else "active, on CPU"
                        key += f": {' '.join(query.split())}"
                    else:
                        key = f"{state}" + (f" ({wtype}/{wevent})" if wtype and state != "idle" else "")
                    self.counts[key] += 1


def summary(name: str, path: Path, top: int = 12) -> str:
    """The process's functions by inclusive and by own share of samples."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [short(f) for f in stack.split(";")[1:]]  # the first is the thread
        total += n
        for f in set(frames):
            inclusive[f] += n
        if frames:
            own[frames[-1]] += n
    lines = [f"{name}: {total} samples ({path})", "  inclusive:"]
    lines += [f"    {100.0 * n / total:5.1f} %  {f}" for f, n in inclusive.most_common(top)]
    lines.append("  own:")
    lines += [f"    {100.0 * n / total:5.1f} %  {f}" for f, n in own.most_common(top)]
    return "\n".join(lines)


def short(frame: str) -> str:
    """'write (storage/telemetry.py:88)' -> 'write (storage/telemetry.py)'."""
    func, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("/site-packages/", "/lib/python3.11/", "/wt-scale/", "/main/"):
        if marker in where:
            where = where.split(marker, 1)[1]
            break
    return f"{func} ({where})"


if __name__ == "__main__":
    sys.exit(main())
