"""Load generators of the benchmark, each run as its own process
(`python -m bench.load KIND ...`) so that its CPU and GIL are not the
harness's: the harness only polls the database and times things.

Every generator talks to 127.0.0.1 only, and is bounded in devices and in
time. Devices that only publish share a few paho connections (the gateway
tells devices apart by topic, not by connection); devices that must receive
commands own one connection each. When a generator has set up, it prints
one JSON line (`{"ready": ...}`); it stops when its time is up or its
standard input closes, and prints one JSON line of results.

Kinds:
  live        paced QoS 1 telemetry (3 readings, `timestamp` = publish time)
  backlog     lines for `mosquitto_pub -l` (used by the harness, not a process)
  responders  devices that answer every command at once (one connection each)
  silent      devices that announce, report for a while, then go silent (no Will)
  status      devices sending status reports every few seconds
"""

from __future__ import annotations

import argparse
import json
import random
import select
import sys
import threading
import time
from typing import Any, Callable

import paho.mqtt.client as mqtt

PREFIX = "autocore"
HOST = "127.0.0.1"


def uuids(count: int, stem: str) -> list[str]:
    return [f"{stem}-{i:05d}" for i in range(count)]


def telemetry(seq: int, boot_id: int, ts: Any, value: float) -> dict:
    """3 readings: two analog sensors and one generic reading."""
    return {"timestamp": ts, "seq": seq, "boot_id": boot_id,
            "analog_sensors": {"fuel_level": round(value % 100, 2), "oil_pressure": round(40 + value % 10, 2)},
            "readings": [{"source": "sensor", "metric": "coolant_temp", "value": round(80 + value % 20, 2), "unit": "C"}]}


def backlog_lines(count: int, boot_id: int, start_seq: int = 1) -> bytes:
    """`count` telemetry messages of one device, one per line, for `mosquitto_pub -l`."""
    dumps = json.JSONEncoder(separators=(",", ":")).encode
    # A recent device time: rows older than the retention period would be pruned as they arrive.
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return "".join(dumps(telemetry(seq, boot_id, now, seq * 0.37)) + "\n"
                   for seq in range(start_seq, start_seq + count)).encode()


def announce(status_interval: float, boot_id: int, device_type: str = "sensor_board") -> bytes:
    return json.dumps({"device_type": device_type, "firmware_version": "1.0.0-bench", "capabilities": [],
                       "boot_id": boot_id, "status_interval": status_interval}).encode()


def status_report(uptime: float) -> bytes:
    return json.dumps({"uptime": int(uptime), "free_memory": 45312, "wifi_signal": -60}).encode()


def client(client_id: str, v5: bool = False) -> mqtt.Client:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                    protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311)
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    return c


def connect(c: mqtt.Client, port: int) -> mqtt.Client:
    connected = threading.Event()
    c.on_connect = lambda *a: connected.set()
    c.connect(HOST, port, keepalive=60)
    c.loop_start()
    if not connected.wait(10):
        raise SystemExit(f"{c._client_id!r}: no connection to the broker on port {port}")
    return c


def emit(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def stdin_closed(timeout: float) -> bool:
    """True once standard input is at its end (the harness says stop)."""
    readable, _, _ = select.select([sys.stdin], [], [], timeout)
    if readable:
        return sys.stdin.readline() == ""
    return False


def wait_for_stop(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not stdin_closed(min(0.2, max(0.0, deadline - time.monotonic()))):
        pass


def publish_checked(c: mqtt.Client, topic: str, payload: bytes, qos: int, counters: dict) -> None:
    info = c.publish(topic, payload, qos=qos)
    if info.rc != mqtt.MQTT_ERR_SUCCESS:
        counters["errors"] = counters.get("errors", 0) + 1
    else:
        counters["sent"] = counters.get("sent", 0) + 1


def paced(rate: float, seconds: float, step: Callable[[int], None], stop: threading.Event) -> None:
    """Call step(i) `rate` times a second for `seconds` (catching up in small bursts)."""
    start = time.monotonic()
    i = 0
    while not stop.is_set():
        elapsed = time.monotonic() - start
        if elapsed >= seconds:
            return
        due = int(elapsed * rate) + 1
        while i < due:
            step(i)
            i += 1
        time.sleep(0.002)


# -- live telemetry ----------------------------------------------------------


def run_live(args) -> None:
    devices = uuids(args.devices, args.stem)
    boot_id = args.boot_id
    conns = [connect(client(f"{args.stem}-live-{k}"), args.port) for k in range(args.connections)]
    stop = threading.Event()
    results: list[dict] = [{} for _ in conns]

    def worker(k: int) -> None:
        c = conns[k]
        mine = devices[k::len(conns)]
        seqs = [0] * len(mine)
        topics = [f"{PREFIX}/devices/{u}/telemetry" for u in mine]
        counters = results[k]
        dumps = json.JSONEncoder(separators=(",", ":")).encode

        def step(i: int) -> None:
            d = i % len(mine)
            seqs[d] += 1
            payload = dumps(telemetry(seqs[d], boot_id, time.time(), i * 0.37)).encode()
            publish_checked(c, topics[d], payload, 1, counters)

        paced(args.rate / len(conns), args.seconds, step, stop)

    emit({"ready": True})
    t0 = time.time()
    workers = [threading.Thread(target=worker, args=(k,)) for k in range(len(conns))]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    t1 = time.time()
    for c in conns:
        c.disconnect()
        c.loop_stop()
    sent = sum(r.get("sent", 0) for r in results)
    emit({"t0": t0, "t1": t1, "sent": sent, "errors": sum(r.get("errors", 0) for r in results),
          "rate": sent / (t1 - t0) if t1 > t0 else 0.0})


# -- command responders -----------------------------------------------------


class Responder:
    """One device on its own connection: answers each command at once."""

    def __init__(self, uuid: str, port: int, boot_id: int, log: list, lock: threading.Lock) -> None:
        self.uuid = uuid
        self.boot_id = boot_id
        self.log = log
        self.lock = lock
        self.done: dict[str, bytes] = {}
        self.c = client(uuid)
        self.c.on_message = self._on_message
        self.subscribed = threading.Event()
        self.c.on_subscribe = lambda *a: self.subscribed.set()
        self.port = port

    def start(self) -> None:
        connect(self.c, self.port)
        self.c.subscribe([(f"{PREFIX}/devices/{self.uuid}/command", 2), (f"{PREFIX}/devices/{self.uuid}/relay/command", 2)])

    def announce(self) -> None:
        self.c.publish(f"{PREFIX}/devices/{self.uuid}/announce", announce(5, self.boot_id, "relay_board"), qos=1)

    def report(self, uptime: float) -> None:
        self.c.publish(f"{PREFIX}/devices/{self.uuid}/status", status_report(uptime), qos=0)

    def _on_message(self, c, userdata, message) -> None:
        at = time.time()
        try:
            body = json.loads(message.payload)
            cid = str(body["command_id"])
        except (ValueError, KeyError, TypeError):
            return
        with self.lock:
            self.log.append((cid, body.get("attempt", 1), at))
        answer = self.done.get(cid)
        if answer is None:  # executed once; a repeat gets the same answer
            answer = self.done[cid] = json.dumps({"command_id": cid, "success": True, "execution_time": 0.0,
                                                  "result": {"ok": True}}).encode()
        c.publish(f"{PREFIX}/devices/{self.uuid}/response", answer, qos=1)


def run_responders(args) -> None:
    log: list = []
    lock = threading.Lock()
    devices = [Responder(u, args.port, args.boot_id, log, lock) for u in uuids(args.devices, args.stem)]
    for d in devices:
        d.start()
    for d in devices:
        if not d.subscribed.wait(10):
            raise SystemExit(f"{d.uuid} could not subscribe")
        d.announce()
    emit({"ready": True, "devices": [d.uuid for d in devices]})
    started = time.monotonic()
    next_report = started + 5.0
    deadline = started + args.seconds
    while time.monotonic() < deadline and not stdin_closed(0.2):
        if time.monotonic() >= next_report:  # stay online while commands run
            for d in devices:
                d.report(time.monotonic() - started)
            next_report += 5.0
    for d in devices:
        d.c.disconnect()
        d.c.loop_stop()
    with lock:
        emit({"received": log})


# -- devices that go silent -------------------------------------------------


def run_silent(args) -> None:
    """Announce (status_interval), report for `talk` seconds, then each device
    sends its last message at its own moment within `spread` seconds, and
    nothing more: no Will, the connection stays up."""
    devices = uuids(args.devices, args.stem)
    conns = [connect(client(f"{args.stem}-silent-{k}"), args.port) for k in range(args.connections)]
    counters: dict = {}
    for i, u in enumerate(devices):
        publish_checked(conns[i % len(conns)], f"{PREFIX}/devices/{u}/announce", announce(args.interval, args.boot_id), 1,
                        counters)
    end_talk = time.monotonic() + args.talk
    while time.monotonic() < end_talk:
        time.sleep(args.interval)
        for i, u in enumerate(devices):
            publish_checked(conns[i % len(conns)], f"{PREFIX}/devices/{u}/status", status_report(1), 1, counters)
    # The last messages, spread so that the deadlines are too.
    order = list(range(len(devices)))
    random.Random(7).shuffle(order)
    start = time.monotonic()
    last: dict[str, float] = {}
    infos = []
    for n, i in enumerate(order):
        at = start + args.spread * n / max(1, len(devices))
        pause = at - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        u = devices[i]
        last[u] = time.time()
        infos.append(conns[i % len(conns)].publish(f"{PREFIX}/devices/{u}/status", status_report(2), qos=1))
    for info in infos:
        info.wait_for_publish(10)
    emit({"last": last, "errors": counters.get("errors", 0)})
    wait_for_stop(args.seconds)
    for c in conns:
        c.disconnect()
        c.loop_stop()
    emit({"done": True})


# -- status reports at scale ------------------------------------------------


def run_status(args) -> None:
    devices = uuids(args.devices, args.stem)
    per_conn = max(1, args.per_connection)
    n_conns = max(1, (len(devices) + per_conn - 1) // per_conn)
    conns = [connect(client(f"{args.stem}-status-{k}"), args.port) for k in range(n_conns)]
    counters: dict = {}
    for i, u in enumerate(devices):
        publish_checked(conns[i // per_conn], f"{PREFIX}/devices/{u}/announce", announce(args.interval, args.boot_id), 1,
                        counters)
    emit({"ready": True, "connections": n_conns, "announced": counters.get("sent", 0)})
    stop = threading.Event()
    topics = [f"{PREFIX}/devices/{u}/status" for u in devices]
    started = time.monotonic()

    def step(i: int) -> None:
        d = i % len(devices)
        publish_checked(conns[d // per_conn], topics[d], status_report(time.monotonic() - started), 0, counters)

    # Every device once per interval, evenly spread: N / interval messages a second.
    t = threading.Thread(target=paced, args=(len(devices) / args.interval, args.seconds, step, stop), daemon=True)
    t.start()
    while t.is_alive() and not stdin_closed(0.2):
        pass
    stop.set()
    t.join()
    for c in conns:
        c.disconnect()
        c.loop_stop()
    emit({"sent": counters.get("sent", 0), "errors": counters.get("errors", 0)})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="benchmark load generators")
    sub = parser.add_subparsers(dest="kind", required=True)
    for kind in ("live", "responders", "silent", "status"):
        p = sub.add_parser(kind)
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--devices", type=int, default=100)
        p.add_argument("--stem", default=f"bench-{kind}")
        p.add_argument("--boot-id", type=int, default=1)
        p.add_argument("--seconds", type=float, default=60.0, help="stop after this long at most")
        if kind == "live":
            p.add_argument("--connections", type=int, default=4)
            p.add_argument("--rate", type=float, required=True, help="messages per second, all devices together")
        if kind == "silent":
            p.add_argument("--connections", type=int, default=4)
            p.add_argument("--interval", type=float, default=0.5, help="status_interval announced")
            p.add_argument("--talk", type=float, default=1.0, help="seconds of reports before the last message")
            p.add_argument("--spread", type=float, default=1.0, help="last messages spread over this long")
        if kind == "status":
            p.add_argument("--interval", type=float, default=5.0, help="seconds between a device's reports")
            p.add_argument("--per-connection", type=int, default=500)
    args = parser.parse_args(argv)
    {"live": run_live, "responders": run_responders, "silent": run_silent, "status": run_status}[args.kind](args)


if __name__ == "__main__":
    main()
