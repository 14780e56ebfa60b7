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
  mixed       paced v1 telemetry and firmware 2.2 relays/state + display status, in given shares
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
SETTLE_S = 60.0  # how long a generator waits for the broker's last acknowledgements


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
    """Publish; a QoS 1 message counts as sent only once the broker has
    acknowledged it (`settle`), since paho's publish() only queues it and a
    disconnect drops what is still queued. QoS 0 has no acknowledgement: it
    counts once handed to paho."""
    info = c.publish(topic, payload, qos=qos)
    if info.rc != mqtt.MQTT_ERR_SUCCESS:
        counters["errors"] = counters.get("errors", 0) + 1
    elif qos == 0:
        counters["sent"] = counters.get("sent", 0) + 1
    else:
        counters.setdefault("_pending", []).append(info)


def settle(counters: dict, deadline: float) -> None:
    """Wait (until `deadline`, time.monotonic()) for the broker to
    acknowledge what `publish_checked` queued; count the acknowledged as
    `sent`, the rest as `unacknowledged`. Call it before disconnecting."""
    for info in counters.pop("_pending", []):
        try:
            info.wait_for_publish(max(0.0, deadline - time.monotonic()))
        except (RuntimeError, ValueError):
            pass
        key = "sent" if info.is_published() else "unacknowledged"
        counters[key] = counters.get(key, 0) + 1


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
    deadline = time.monotonic() + SETTLE_S
    for r in results:
        settle(r, deadline)
    for c in conns:
        c.disconnect()
        c.loop_stop()
    sent = sum(r.get("sent", 0) for r in results)
    emit({"t0": t0, "t1": t1, "sent": sent, "errors": sum(r.get("errors", 0) for r in results),
          "unacknowledged": sum(r.get("unacknowledged", 0) for r in results),
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
    settle(counters, time.monotonic() + SETTLE_S)
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
    settle(counters, time.monotonic() + SETTLE_S)
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


# -- mixed fleet: v1 telemetry and firmware 2.2 together ----------------------


def fw22_status(uuid: str, device_type: str, uptime: float, n: int) -> dict:
    """A 2.2 `status` (online) as the boards send it; `uptime` carries the
    publish time (epoch seconds) so the harness can time the row."""
    body = {"protocol_version": "2.2.0", "uuid": uuid, "timestamp": "1970-01-01T00:00:09Z", "status": "online",
            "type": device_type, "firmware_version": "2.2.0", "ip_address": "0.0.0.0", "wifi_signal": -55,
            "free_memory": 198312 - n % 1000, "uptime": uptime}
    if device_type == "esp32_relay":
        body |= {"board_id": 1, "channels": 16}
    else:
        body |= {"system": {"free_heap": 151000 + n % 500, "cpu_temp": 41.5, "loop_ms": 3},
                 "display": {"brightness": 80, "touch_events": n % 97}}
    return body


def relay_channels(k: int) -> dict:
    """16 channels whose states spell `k` (mod 65536) in binary: channel n is bit n-1.
    The harness decodes a message's 16 rows back into k to find its publish time."""
    return {str(n + 1): bool(k >> n & 1) for n in range(16)}


def run_mixed(args) -> None:
    """Paced load of three device kinds on `connections` connections:
    v1 telemetry (QoS 1, `timestamp` = publish time), 2.2 relay boards
    (`relays/state`, 16 channels, QoS 1) and 2.2 displays (`status`, QoS 0,
    `uptime` = publish time). `--v1-share` of the messages are v1; of the 2.2
    ones `--relay-share` are relays/state. Every 2.2 board first sends its
    retained `status` online (QoS 1), as on connect."""
    n_v1 = round(args.devices * args.v1_share)
    n_22 = args.devices - n_v1
    n_relay = round(n_22 * args.relay_share) if n_22 else 0
    v1 = uuids(n_v1, f"{args.stem}-v1")
    relays = uuids(n_relay, f"{args.stem}-relay")
    displays = uuids(n_22 - n_relay, f"{args.stem}-display")
    conns = [connect(client(f"{args.stem}-mixed-{k}"), args.port) for k in range(args.connections)]
    dumps = json.JSONEncoder(separators=(",", ":")).encode
    infos = []
    for i, u in enumerate(relays + displays):
        kind = "esp32_relay" if i < len(relays) else "esp32_display"
        infos.append(conns[i % len(conns)].publish(f"{PREFIX}/devices/{u}/status",
                                                   dumps(fw22_status(u, kind, 9, 0)).encode(), qos=1, retain=True))
    for info in infos:
        info.wait_for_publish(10)
    time.sleep(0.5)
    # One schedule of (kind, device) slots, so the shares hold at any moment.
    slots: list[tuple[str, int]] = []
    kinds = [("v1", len(v1), args.v1_share if v1 else 0.0),
             ("relay", len(relays), (1 - args.v1_share) * args.relay_share if relays else 0.0),
             ("display", len(displays), (1 - args.v1_share) * (1 - args.relay_share) if displays else 0.0)]
    weight = sum(w for _, _, w in kinds)
    for kind, n, w in kinds:
        slots += [(kind, j) for j in range(round(100 * w / weight))]
    random.Random(3).shuffle(slots)
    stop = threading.Event()
    results: list[dict] = [{} for _ in conns]
    relay_pub: list[dict] = [{} for _ in conns]  # "uuid k" -> publish time, per worker

    def worker(c_idx: int) -> None:
        c = conns[c_idx]
        counters_k = results[c_idx]
        pub = relay_pub[c_idx]
        # Each connection owns its share of every kind's devices (a device's messages stay in order).
        mine = {"v1": v1[c_idx::len(conns)], "relay": relays[c_idx::len(conns)], "display": displays[c_idx::len(conns)]}
        nxt = {kind: 0 for kind in mine}
        seqs: dict[str, int] = {}

        def step(i: int) -> None:
            kind = slots[i % len(slots)][0]
            devs = mine[kind]
            if not devs:
                return
            u = devs[nxt[kind] % len(devs)]
            nxt[kind] += 1
            k = seqs[u] = seqs.get(u, 0) + 1
            now = time.time()
            if kind == "v1":
                publish_checked(c, f"{PREFIX}/devices/{u}/telemetry", dumps(telemetry(k, args.boot_id, now, i * 0.37)).encode(),
                                1, counters_k)
            elif kind == "relay":
                pub[f"{u} {k % 65536}"] = now
                body = {"protocol_version": "2.2.0", "uuid": u, "timestamp": "1970-01-01T00:00:39Z", "board_id": 1,
                        "channels": relay_channels(k)}
                publish_checked(c, f"{PREFIX}/devices/{u}/relays/state", dumps(body).encode(), 1, counters_k)
            else:
                publish_checked(c, f"{PREFIX}/devices/{u}/status", dumps(fw22_status(u, "esp32_display", now, k)).encode(),
                                0, counters_k)
            counters_k[kind] = counters_k.get(kind, 0) + 1

        paced(args.rate / len(conns), args.seconds, step, stop)

    emit({"ready": True, "v1": len(v1), "relays": len(relays), "displays": len(displays)})
    t0 = time.time()
    workers = [threading.Thread(target=worker, args=(k,)) for k in range(len(conns))]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    t1 = time.time()
    deadline = time.monotonic() + SETTLE_S
    for r in results:
        settle(r, deadline)
    time.sleep(0.5)  # QoS 0 messages still in paho's buffer
    for c in conns:
        c.disconnect()
        c.loop_stop()
    sent = sum(r.get("sent", 0) for r in results)
    emit({"t0": t0, "t1": t1, "sent": sent, "errors": sum(r.get("errors", 0) for r in results),
          "by_kind": {kind: sum(r.get(kind, 0) for r in results) for kind in ("v1", "relay", "display")},
          "rate": sent / (t1 - t0) if t1 > t0 else 0.0,
          "relay_published": {key: at for p in relay_pub for key, at in p.items()}})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="benchmark load generators")
    sub = parser.add_subparsers(dest="kind", required=True)
    for kind in ("live", "responders", "silent", "status", "mixed"):
        p = sub.add_parser(kind)
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--devices", type=int, default=100)
        p.add_argument("--stem", default=f"bench-{kind}")
        p.add_argument("--boot-id", type=int, default=1)
        p.add_argument("--seconds", type=float, default=60.0, help="stop after this long at most")
        if kind in ("live", "mixed"):
            p.add_argument("--connections", type=int, default=4)
            p.add_argument("--rate", type=float, required=True, help="messages per second, all devices together")
        if kind == "silent":
            p.add_argument("--connections", type=int, default=4)
            p.add_argument("--interval", type=float, default=0.5, help="status_interval announced")
            p.add_argument("--talk", type=float, default=1.0, help="seconds of reports before the last message")
            p.add_argument("--spread", type=float, default=1.0, help="last messages spread over this long")
        if kind == "mixed":
            p.add_argument("--v1-share", type=float, default=0.5, help="share of the messages (and devices) that are v1")
            p.add_argument("--relay-share", type=float, default=0.75,
                           help="share of the 2.2 messages that are relays/state (QoS 1); the rest display status (QoS 0)")
        if kind == "status":
            p.add_argument("--interval", type=float, default=5.0, help="seconds between a device's reports")
            p.add_argument("--per-connection", type=int, default=500)
    args = parser.parse_args(argv)
    {"live": run_live, "responders": run_responders, "silent": run_silent, "status": run_status, "mixed": run_mixed}[args.kind](args)


if __name__ == "__main__":
    main()
