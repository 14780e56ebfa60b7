"""`make run`: a local broker, the gateway and a handful of simulated devices.

    python -m simulator.demo [--port 1883] [--duration SECONDS]

Starts Mosquitto with the project's configuration (deploy/mosquitto.conf,
copied to var/mosquitto/ with absolute paths), then `bin/gateway run` (its
data under var/), then seven simulated devices: one v1 device of each type
and a firmware 2.2 relay board and display. It shows them coming online and
their telemetry being stored, sends one command and prints its outcome,
then keeps going until Ctrl-C, which stops devices, gateway and broker in
that order.
"""

from __future__ import annotations

import argparse
import ctypes
import getpass
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
VAR = ROOT / "var"
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
DEMO_FLEET = {"can_gateway": 1, "sensor_board": 1, "mobile": 1, "relay_board": 1, "display_small": 1,
              "fw22_relay": 1, "fw22_display": 1}
STATUS_EVERY_S = 10.0
EXIT_PORT_TAKEN = 2
EXIT_FAILED = 1


class DemoError(Exception):
    """Something the newcomer must fix; the message says what."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


def say(message: str) -> None:
    print(f"[demo] {message}", flush=True)


# -- the broker ----------------------------------------------------------------


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def runtime_config(template: str, port: int, var: Path) -> str:
    """deploy/mosquitto.conf with this run's port, absolute paths and a log
    file instead of stderr."""
    text = re.sub(r"(?m)^listener\s+\d+\s+127\.0\.0\.1\s*$", f"listener {port} 127.0.0.1", template)
    text = re.sub(r"(?m)^persistence_location\s+.*$", f"persistence_location {var / 'mosquitto'}/", text)
    text = re.sub(r"(?m)^log_dest\s+.*$", f"log_dest file {var / 'mosquitto' / 'mosquitto.log'}", text)
    if "listener " + str(port) not in text:
        raise DemoError("deploy/mosquitto.conf has no `listener <port> 127.0.0.1` line to adapt")
    # Started as root, mosquitto would switch to the `mosquitto` user, which
    # cannot write var/; run it as whoever runs the demo.
    header = (f"# Written by simulator/demo.py from deploy/mosquitto.conf; edit that file, not this one.\n"
              f"user {getpass.getuser()}\n")
    return header + text


def _die_with_parent() -> None:
    """In the child: get SIGTERM if the demo dies, so nothing is left behind."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _spawn(args: list[str], **kwargs: Any) -> subprocess.Popen:
    # Their own session: Ctrl-C reaches the demo only, which stops them in order.
    return subprocess.Popen(args, start_new_session=True, preexec_fn=_die_with_parent, **kwargs)


def start_broker(port: int, var: Path) -> subprocess.Popen:
    if not Path(MOSQUITTO).exists():
        raise DemoError("mosquitto is not installed: run `make system-deps` (apt-get install mosquitto)")
    if port_in_use(port):
        raise DemoError(
            f"port {port} on 127.0.0.1 is already taken (another mosquitto, or another `make run`?).\n"
            f"       See what holds it: ss -ltnp 'sport = :{port}'\n"
            f"       Or use another port: AUTOCORE_DEMO_PORT=18830 make run",
            EXIT_PORT_TAKEN,
        )
    (var / "mosquitto").mkdir(parents=True, exist_ok=True)
    config = var / "mosquitto" / "mosquitto.conf"
    config.write_text(runtime_config((ROOT / "deploy" / "mosquitto.conf").read_text(), port, var))
    log = var / "mosquitto" / "mosquitto.log"
    proc = _spawn([MOSQUITTO, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
            tail = log.read_text(errors="replace").strip().splitlines()[-5:] if log.exists() else []
            raise DemoError("mosquitto did not start:\n       " + "\n       ".join([err, *tail]))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                say(f"mosquitto on 127.0.0.1:{port} (config {_rel(config)}, log {_rel(log)})")
                return proc
        except OSError:
            time.sleep(0.05)
    stop_process(proc, "mosquitto")
    raise DemoError(f"mosquitto did not accept connections on port {port} within 10 s; see {_rel(log)}")


# -- the gateway ------------------------------------------------------------------


class Gateway:
    """`bin/gateway run` as a child, its log lines echoed with a prefix."""

    def __init__(self, port: int, var: Path) -> None:
        self.db_path = var / "autocore.db"
        env = dict(os.environ)
        env.update({"AUTOCORE_MQTT_HOST": "127.0.0.1", "AUTOCORE_MQTT_PORT": str(port),
                    "AUTOCORE_DB_PATH": str(self.db_path), "AUTOCORE_RUN_DIR": str(var / "run")})
        env.pop("AUTOCORE_DB_URL", None)  # the URL would win over the file the demo watches
        self.proc = _spawn([sys.executable, str(ROOT / "bin" / "gateway"), "run"], cwd=str(ROOT), env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            print(f"[gateway] {line.rstrip()}", flush=True)
            if "ready:" in line:
                self.ready.set()

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready.wait(0.1):
            if self.proc.poll() is not None:
                self._reader.join(1)
                raise DemoError(f"the gateway exited (code {self.proc.returncode}) before it was ready; see its lines above")
            if time.monotonic() > deadline:
                raise DemoError(f"the gateway was not ready within {timeout:.0f} s")


def stop_process(proc: subprocess.Popen | None, name: str, grace: float = 10.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        say(f"{name} did not stop within {grace:.0f} s; killing it")
        proc.kill()
        proc.wait()


# -- watching the database -----------------------------------------------------------


def wait_for(what: str, check: Callable[[], Any], timeout: float, interrupted: threading.Event) -> Any:
    deadline = time.monotonic() + timeout
    while not interrupted.is_set():
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise DemoError(f"timed out after {timeout:.0f} s waiting for {what}")
        interrupted.wait(0.2)
    return None


class Watch:
    """Read-only looks at the gateway's database."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn: sqlite3.Connection | None = None

    def _db(self) -> sqlite3.Connection | None:
        if self.conn is None and self.path.exists():
            self.conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=2)
        return self.conn

    def query(self, sql: str, args: tuple = ()) -> list[tuple]:
        db = self._db()
        if db is None:
            return []
        try:
            return db.execute(sql, args).fetchall()
        except sqlite3.OperationalError:
            return []  # not migrated yet, or busy: ask again later

    def devices(self, uuids: list[str]) -> dict[str, tuple]:
        marks = ",".join("?" * len(uuids))
        rows = self.query(f"SELECT uuid, device_type, protocol, encoding, status FROM gateway_devices WHERE uuid IN ({marks})",
                          tuple(uuids))
        return {row[0]: row for row in rows}

    def telemetry(self, uuids: list[str], since: float) -> dict[str, int]:
        marks = ",".join("?" * len(uuids))
        rows = self.query(f"SELECT device_uuid, COUNT(*) FROM telemetry WHERE received_at >= ? "
                          f"AND device_uuid IN ({marks}) GROUP BY device_uuid", (since, *uuids))
        return dict(rows)

    def sources(self, since: float) -> list[tuple[str, int]]:
        return self.query("SELECT source, COUNT(*) FROM telemetry WHERE received_at >= ? GROUP BY source "
                          "ORDER BY COUNT(*) DESC", (since,))


# -- the demo ---------------------------------------------------------------------------


def run(port: int, duration: float | None) -> int:
    from simulator import Fleet, FleetConfig, Fw22Options, V1Options

    interrupted = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:  # noqa: ARG001
        if not interrupted.is_set():
            print(flush=True)
            say("stopping (devices, gateway, broker)")
        interrupted.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    broker = gateway = fleet = None
    code = 0
    say("AutoCore demo: a local broker, the gateway and 7 simulated devices. Ctrl-C stops everything.")
    try:
        VAR.mkdir(exist_ok=True)
        broker = start_broker(port, VAR)
        gateway = Gateway(port, VAR)
        gateway.wait_ready(30)
        started = time.time()
        config = FleetConfig(
            devices=DEMO_FLEET, duration=duration or 24 * 3600, port=port,
            v1=V1Options(telemetry_interval=2.0, can_hz=2.0, latency=(0.05, 0.2)),
            fw22=Fw22Options(state_interval=30.0), msgpack_fraction=0.3, seed=int(started) % 1000,
            uuid_prefix="demo",
        )
        fleet = Fleet(config)
        describe = {d.uuid: f"{d.kind} ({d.dialect}{', ' + d.encoding.value if d.dialect == 'v1' else ''})"
                    for d in fleet.devices}
        say("starting devices: " + ", ".join(describe.values()))
        fleet.start()
        uuids = list(describe)
        watch = Watch(gateway.db_path)

        seen: set[str] = set()

        def all_online() -> bool:
            for uuid, row in watch.devices(uuids).items():
                if row[4] == "online" and uuid not in seen:
                    seen.add(uuid)
                    say(f"online: {uuid:<26} type {row[1]}, protocol {row[2]}, {row[3]}")
            return len(seen) == len(uuids)

        wait_for("every device to come online", all_online, 60, interrupted)
        stored = wait_for("telemetry from every device",
                          lambda: (lambda t: t if len(t) == len(uuids) else None)(watch.telemetry(uuids, started)),
                          90, interrupted)
        if stored:
            say("telemetry stored: " + ", ".join(f"{n} rows from {u}" for u, n in stored.items()))
        if not interrupted.is_set():
            send_command(gateway.db_path, next(d.uuid for d in fleet.devices if d.kind == "relay_board"), interrupted)
        if not interrupted.is_set():
            say("running; a summary every %.0f s. Ctrl-C stops everything." % STATUS_EVERY_S)
        end = time.monotonic() + duration if duration else None
        while not interrupted.is_set() and (end is None or time.monotonic() < end):
            interrupted.wait(STATUS_EVERY_S if end is None else max(0.0, min(STATUS_EVERY_S, end - time.monotonic())))
            if interrupted.is_set():
                break
            if gateway.proc.poll() is not None:
                raise DemoError(f"the gateway exited (code {gateway.proc.returncode})")
            figures = fleet.snapshot()
            online = sum(1 for row in watch.devices(uuids).values() if row[4] == "online")
            rows = ", ".join(f"{source} {n}" for source, n in watch.sources(started))
            say(f"{online}/{len(uuids)} devices online; devices sent {figures.get('published', 0)} messages; "
                f"telemetry rows since start: {rows}")
    except DemoError as exc:
        print(f"[demo] error: {exc}", file=sys.stderr, flush=True)
        code = exc.code
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not leave children behind
        if fleet is not None:
            fleet.stop()
            fleet.join(10)
        if gateway is not None:
            stop_process(gateway.proc, "the gateway", grace=15)
            gateway._reader.join(2)
        stop_process(broker, "mosquitto")
        if broker is not None or gateway is not None:
            say("stopped" if code == 0 else "stopped after an error")
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return code


def send_command(db_path: Path, uuid: str, interrupted: threading.Event) -> None:
    """What the Config App does: insert a pending row; the gateway does the rest."""
    from storage.commands import get_command, insert_command
    from storage.db import close_database, open_database

    open_database(str(db_path))
    try:
        parameters = {"relay_id": 1, "state": True}
        command_id = insert_command(uuid, "relay_control", parameters, now=time.time(), ttl_s=60)
        say(f"command {command_id}: relay_control {json.dumps(parameters)} to {uuid} inserted as pending")
        last = None

        def final():
            nonlocal last
            row = get_command(command_id)
            if row is not None and row.status != last:
                last = row.status
                say(f"command {command_id}: {row.status}")
            return row if row is not None and row.is_final else None

        row = wait_for(f"command {command_id} to finish", final, 60, interrupted)
        if row is not None:
            took = (row.completed_at or 0) - (row.created_at or 0)
            outcome = f"result {json.dumps(row.result)}" if row.status == "succeeded" else f"error {row.error_message!r}"
            say(f"command {command_id} final state: {row.status} after {took:.2f} s, "
                f"{row.attempts} attempt(s), {outcome}")
    finally:
        close_database()


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulator.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("AUTOCORE_DEMO_PORT", "1883")),
                        help="broker port on 127.0.0.1 (default 1883, or AUTOCORE_DEMO_PORT)")
    parser.add_argument("--duration", type=float, default=None,
                        help="stop by itself after this many seconds (default: run until Ctrl-C)")
    args = parser.parse_args(argv)
    return run(args.port, args.duration)


if __name__ == "__main__":
    sys.exit(main())
