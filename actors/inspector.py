"""Inspector: the control socket (`gateway.sock` in the run dir).

A client sends one request frame and reads one reply frame: 4-byte length,
then a msgpack map. Requests: `{"what": "actors" | "devices" | "device" |
"commands" | "stats", "uuid": ...}`; the reply is `{"version": 1, <what>:
...}` or `{"error": text}`, with the keys documented in docs/cli.md (the
output of `gateway inspect --json` is this reply as it is).

Two requests change the running core, for the operator's `gateway devices
dialect` and `gateway devices forget` (which write the database
themselves): `{"what": "set_dialect", "uuid": ..., "dialect": "v1" |
"fw22"}` and `{"what": "forget", "uuid": ...}`.

The Inspector is an edge of the actor system, so it may `ask`: it gathers
`GetSnapshot` replies from the core actors (and through the channel, from
the store's), each with a deadline. The actors, devices, device and
commands answers are built key by key here, so an actor's internals can
change without changing what scripts read; the sections of stats are the
actors' own state dicts, whose documented keys tests/gateway/test_live.py
holds to.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable

import msgpack
import pykka

from actors.base import GatewayActor
from actors.framing import frame, recv_frame
from actors.messages import (
    DialectLock,
    DialectMark,
    Flush,
    Flushed,
    ForgetDevice,
    GetSnapshot,
    ReloadCommands,
    SetDialect,
    SnapshotReply,
    SnapshotRequest,
)
from actors.metrics import MetricsServer
from actors.settings import GatewaySettings
from protocol import dialects
from protocol.topics import is_valid_uuid
from protocol.values import Dialect

logger = logging.getLogger("autocore.inspector")

ANSWER_VERSION = 1  # raised only when a documented key changes meaning or goes away
ASK_TIMEOUT_S = 2.0
OPERATOR_ASK_S = 5.0  # an operator's change waits longer for a busy actor than a view does
FLUSH_TIMEOUT_S = 5.0
MAX_REQUEST = 65536
INSPECTOR_FLUSH = "inspector:"  # the reason of the Flush an operator's change waits for
DIALECTS = tuple(Dialect)


def send_frame(sock: socket.socket, obj: Any) -> None:
    sock.sendall(frame(msgpack.packb(obj, use_bin_type=True, default=str)))


def recv_map(sock: socket.socket, limit: int) -> Any:
    return msgpack.unpackb(recv_frame(sock, limit), raw=False, strict_map_key=False)


class Inspector(GatewayActor):
    name = "Inspector"

    def __init__(self, settings: GatewaySettings, actors: Callable[[], dict[str, Any]], supervisor: Any, router: Any, channel: Any,
                 metrics: MetricsServer | None = None) -> None:
        super().__init__()
        self.path = settings.socket_path
        self.settings = settings
        self.actors = actors  # name -> ActorRef of the core actors
        self.supervisor = supervisor
        self.router = router
        self.channel = channel
        self._server: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._metrics = metrics
        self._ids = itertools.count(1)
        self._waiting: dict[Any, Future] = {}  # request id (snapshots) or flush reason -> its answer
        self._lock = threading.Lock()
        self._marks: dict[str, tuple[float, int]] = {}  # uuid -> (time, messages) at the last inspection
        self.started = time.time()

    def on_start(self) -> None:
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        try:
            os.unlink(self.path)  # left by a gateway that was killed
        except FileNotFoundError:
            pass
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(self.path)
        os.chmod(self.path, 0o660)
        server.listen(8)
        self._server = server
        self._thread = threading.Thread(target=self._serve, name="inspector", daemon=True)
        self._thread.start()
        if self._metrics is not None:
            # The Prometheus endpoint (bound by core) reads what `inspect
            # stats` reads, from its own HTTP thread, as the socket's
            # client threads do.
            self._metrics.attach(self.stats_answer)

    def on_stop(self) -> None:
        if self._server is not None:
            try:
                self._server.close()
            finally:
                try:
                    os.unlink(self.path)
                except OSError:
                    pass

    def handle(self, message: Any) -> Any:
        if isinstance(message, SnapshotReply):
            with self._lock:
                future = self._waiting.pop(message.request_id, None)
            if future is not None:
                future.set_result(message.actors)
            return None
        if isinstance(message, Flushed):
            with self._lock:
                future = self._waiting.pop(message.reason, None)
            if future is not None:
                future.set_result(True)
            return None
        return super().handle(message)

    # -- server thread ----------------------------------------------------

    def _serve(self) -> None:
        assert self._server is not None
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), name="inspector-client", daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.settimeout(10)
                request = recv_map(conn, MAX_REQUEST)
                reply = self.answer(request if isinstance(request, dict) else {})
            except Exception as exc:  # a bad client must not hurt the gateway
                reply = {"error": f"{type(exc).__name__}: {exc}"}
            try:
                send_frame(conn, reply)
            except OSError:
                pass

    def answer(self, request: dict) -> dict:
        """The reply to one request: `{"version": ANSWER_VERSION, <what>: ...}`
        or `{"error": text}`. The keys are a contract (docs/cli.md): add
        keys freely, never rename or drop one without raising the version."""
        what = request.get("what")
        if what == "actors":
            body: Any = self.actors_answer()
        elif what == "devices":
            body = self.devices_answer()
        elif what == "device":
            uuid = str(request.get("uuid", ""))
            found = self.devices_answer(only=uuid)
            if not found:
                return {"error": f"no device {uuid} in the running gateway"}
            body = found[0]
        elif what == "commands":
            body = self.commands_answer()
        elif what == "stats":
            body = self.stats_answer()
        elif what == "uplink":
            body = uplink_section({s["name"]: s for s in self.store_snapshots()})
        elif what in ("set_dialect", "forget"):
            uuid = str(request.get("uuid", ""))
            if not is_valid_uuid(uuid):
                return {"error": f"{uuid!r} is not a device id"}
            if what == "forget":
                body = self.forget_answer(uuid)
            else:
                dialect = str(request.get("dialect", ""))
                if dialect not in DIALECTS:
                    return {"error": f"dialect must be v1 or fw22, got {dialect!r}"}
                body = self.set_dialect_answer(uuid, dialect)
        else:
            return {"error": f"unknown request {what!r}; ask for actors, devices, device, commands, stats, uplink, "
                             "set_dialect or forget"}
        return {"version": ANSWER_VERSION, what: body}

    # -- the operator's changes ----------------------------------------------------

    def set_dialect_answer(self, uuid: str, dialect: str) -> dict:
        """Set the device's dialect in the running core. The Router's lock is
        taken before the device changes and left after it (with the mark, so
        a v1 message with a boot_id routed meanwhile keeps it): a 2.2 message
        never takes the fast path while the device would refuse it."""
        router = self.router
        if dialects.may_lock(dialect):
            router.ask(DialectLock(uuid, True), timeout=OPERATOR_ASK_S)
        mark = router.ask(DialectMark(), timeout=OPERATOR_ASK_S)
        result = self._with_actor(SetDialect(uuid, dialect))
        if not dialects.may_lock(dialect):
            router.ask(DialectLock(uuid, False, after=mark), timeout=OPERATOR_ASK_S)
        return {"uuid": uuid, "known": result["known"], "dialect": result.get("dialect", dialect),
                "dialect_locked": bool(result.get("dialect_locked", False)), "boot_id": result.get("boot_id")}

    def forget_answer(self, uuid: str) -> dict:
        """Drop the running core's state of the device (its actor starts
        afresh), ask the store for its commands in flight again, and wait
        until everything the actor sent the store before is committed, so
        the CLI's delete of the registry row comes after it."""
        mark = self.router.ask(DialectMark(), timeout=OPERATOR_ASK_S)
        result = self._with_actor(ForgetDevice(uuid))
        if result.get("reset"):
            self.channel.send(ReloadCommands(uuid))
        flushed = self._flush()
        self.router.ask(DialectLock(uuid, False, after=mark), timeout=OPERATOR_ASK_S)
        return {"uuid": uuid, "known": result["known"], "flushed": flushed}

    def _with_actor(self, message: SetDialect | ForgetDevice) -> dict:
        """Ask the supervisor, and the device's actor if it has a live one.
        An actor that stops (evicted) before it takes the message has handed
        the supervisor its record by then: ask the supervisor again."""
        for _ in range(3):
            info = self.supervisor.ask(message, timeout=OPERATOR_ASK_S)
            ref = info.get("ref")
            if ref is None:
                return {k: v for k, v in info.items() if k != "ref"}
            try:
                reply = ref.ask(message, timeout=OPERATOR_ASK_S)
            except pykka.ActorDeadError:
                continue
            return {"known": True, "reset": isinstance(message, ForgetDevice),
                    **(reply if isinstance(reply, dict) else {})}
        raise RuntimeError(f"the actor of {message.uuid} kept stopping; try again")

    def _flush(self) -> bool:
        """Everything sent to the store so far is committed (False: not
        within FLUSH_TIMEOUT_S, e.g. the disk is full)."""
        reason = f"{INSPECTOR_FLUSH}{next(self._ids)}"
        future: Future = Future()
        with self._lock:
            self._waiting[reason] = future
        try:
            self.channel.send(Flush(reason))
            return bool(future.result(timeout=FLUSH_TIMEOUT_S))
        except Exception:
            with self._lock:
                self._waiting.pop(reason, None)
            return False

    # -- answers -----------------------------------------------------------

    def actors_answer(self) -> list[dict]:
        actors = []
        for snap in self.core_snapshots() + self.store_snapshots():
            actors.append(_actor_entry(snap, parent=None))
        for snap in self.device_snapshots():
            actors.append(_actor_entry(snap, parent="DeviceSupervisor"))
        return actors

    def devices_answer(self, only: str | None = None) -> list[dict]:
        snaps = self.device_snapshots(only=only)
        rejections = self._rejections([s["state"].get("uuid") for s in snaps])
        now = time.time()
        devices = []
        for snap in snaps:
            st = snap["state"]
            uuid = st.get("uuid")
            counters = dict(st.get("counters") or {})
            messages = int(counters.get("messages", 0))
            rejected = dict(rejections.get(uuid, {}))
            # 2.2 messages its actor refused (a v1 device with a boot_id) are
            # rejections too, though the Router passed them on.
            conflicts = int(counters.get("dialect_conflict", 0))
            if conflicts:
                rejected["dialect_conflict"] = rejected.get("dialect_conflict", 0) + conflicts
            cmds = st.get("commands") or {}
            devices.append({
                "uuid": uuid,
                "status": st.get("status"),
                "dialect": st.get("dialect"),
                "dialect_locked": bool(st.get("dialect_locked", False)),
                "device_type": st.get("device_type"),
                "boot_id": st.get("boot_id"),
                "encoding": st.get("encoding"),
                "last_seen": st.get("last_seen"),
                "timeout_s": st.get("timeout_s"),
                "offline_in_s": st.get("offline_in_s"),
                "messages": messages,
                "rate_per_s": self._device_rate(uuid, messages, now),
                "rejected": sum(rejected.values()),
                "rejections": rejected,
                "seq_gaps": int(counters.get("seq_gaps", 0)),
                "seq_repeats": int(counters.get("seq_repeats", 0)),
                "clock_skew": int(counters.get("clock_skew", 0)),
                "dialect_conflict": conflicts,
                "stale_wills": st.get("stale_wills", 0),
                "relays": dict(st.get("relays") or {}),
                "relay_commands": st.get("relay_commands") or {"waiting": 0, "recent": []},
                "commands": {
                    "window": cmds.get("window"),
                    "out": [_command_entry(uuid, c) for c in cmds.get("out", [])],
                    "queued": [q["id"] for q in cmds.get("queued", [])],
                },
                "counters": counters,
                "actor": {"mailbox": snap.get("mailbox"), "handled": snap.get("handled"),
                          "restarts": _int(snap.get("restarts"))},
            })
        with self._lock:  # forget devices that are gone
            if only is None:
                for gone in set(self._marks) - {d["uuid"] for d in devices}:
                    del self._marks[gone]
        return devices

    def commands_answer(self) -> list[dict]:
        out = []
        for snap in self.device_snapshots():
            uuid = snap["state"].get("uuid")
            cmds = snap["state"].get("commands") or {}
            out += [_command_entry(uuid, c) for c in cmds.get("out", [])]
            out += [_command_entry(uuid, q, "queued") for q in cmds.get("queued", [])]
        return sorted(out, key=lambda c: c["id"])

    def stats_answer(self) -> dict:
        core = {s["name"]: s for s in self.core_snapshots()}
        store = {s["name"]: s for s in self.store_snapshots()}

        def state(snaps: dict, name: str) -> dict:
            return dict(snaps.get(name, {}).get("state") or {})

        def counters(snaps: dict, name: str) -> dict:
            return dict(snaps.get(name, {}).get("counters") or {})

        router = state(core, "Router")
        return {
            "gateway_id": self.settings.gateway_id,
            "uptime_s": round(time.time() - self.started, 1),
            "mqtt": state(core, "MqttIO") | {"counters": counters(core, "MqttIO")},
            "router": router | {"counters": counters(core, "Router")},
            "rejections": dict(router.get("rejections") or {}),
            "devices": state(core, "DeviceSupervisor") | {"counters": counters(core, "DeviceSupervisor")},
            "channel": self.channel.snapshot(),
            "batcher": state(store, "TelemetryBatcher"),
            "writer": state(store, "DbWriter") | {"counters": counters(store, "DbWriter")},
            "durability": state(store, "Syncer") | {"counters": counters(store, "Syncer")},
            "commands": state(store, "CommandFeed"),
            "can": dict(state(store, "TelemetryBatcher").get("can") or {}) | {"feed": state(store, "CanFeed")},
            "retention": state(store, "Retention"),
            "instance": self._instance(state(store, "LeaseKeeper"), state(core, "DeviceSupervisor"),
                                       counters(core, "DeviceSupervisor")),
            "uplink": uplink_section(store),
            "memory": {"core_rss_mb": state(core, "Heartbeat").get("rss_mb"),
                       "store_rss_mb": state(store, "DbWriter").get("rss_mb")},
            "errors": [f"{s.get('name')}: {s['error']}" for s in (*core.values(), *store.values()) if s.get("error")],
        }

    def _instance(self, keeper: dict, supervisor: dict, supervisor_counters: dict) -> dict:
        """Several instances (issue 13): this instance's leases as the store
        holds them, what core acts for, and its share of the traffic."""
        s = self.settings
        if not s.share_group:
            return {"instance_id": s.instance_id, "share_group": ""}
        return {"instance_id": s.instance_id, "share_group": s.share_group, "leases": keeper,
                "acting": supervisor.get("ownership") or {},
                "not_owned": {k: supervisor_counters.get(k, 0) for k in ("seen_not_owned", "messages_not_owned")}}

    def _rejections(self, uuids: list[str]) -> dict[str, dict]:
        """Per-device rejection counts, asked of the Router all at once."""
        futures = []
        try:
            router = self.router.proxy()
            for uuid in uuids:
                futures.append((uuid, router.device_rejections(uuid)))
        except Exception:
            pass  # the Router is stopping: no rejection counts
        found: dict[str, dict] = {}
        for uuid, future in futures:
            try:
                found[uuid] = dict(future.get(timeout=ASK_TIMEOUT_S))
            except Exception:
                found[uuid] = {}
        return found

    def _device_rate(self, uuid: str, messages: int, now: float) -> float:
        """Messages per second since the previous inspection (or the start)."""
        with self._lock:
            at, count = self._marks.get(uuid, (self.started, 0))
            self._marks[uuid] = (now, messages)
        if now <= at or messages < count:
            return 0.0
        return round((messages - count) / (now - at), 1)

    def core_snapshots(self) -> list[dict]:
        snaps = []
        for name, ref in self.actors().items():
            if ref is self.actor_ref:
                snaps.append(self.snapshot())
                continue
            try:
                snaps.append(ref.ask(GetSnapshot(), timeout=ASK_TIMEOUT_S))
            except Exception as exc:
                snaps.append({"name": name, "process": "core", "error": f"no answer: {type(exc).__name__}"})
        return snaps

    def store_snapshots(self) -> list[dict]:
        request_id = next(self._ids)
        future: Future = Future()
        with self._lock:
            self._waiting[request_id] = future
        try:
            self.channel.send(SnapshotRequest(request_id))
            return [dict(s) for s in future.result(timeout=ASK_TIMEOUT_S)]
        except Exception as exc:
            with self._lock:
                self._waiting.pop(request_id, None)
            return [{"name": "store", "process": "store", "error": f"no answer: {type(exc).__name__}"}]

    def device_snapshots(self, only: str | None = None) -> list[dict]:
        refs = self.supervisor.proxy().device_refs().get(timeout=ASK_TIMEOUT_S)
        if only is not None:
            refs = {only: refs[only]} if only in refs else {}
        futures = []
        for uuid, ref in sorted(refs.items()):
            try:
                futures.append((uuid, ref.ask(GetSnapshot(), block=False)))
            except Exception:
                continue
        snaps = []
        for uuid, future in futures:
            try:
                snap = future.get(timeout=ASK_TIMEOUT_S)
            except Exception:
                continue
            snap["name"] = f"Device[{uuid}]"
            snap.setdefault("state", {}).setdefault("uuid", uuid)
            snaps.append(snap)
        return snaps


# -- the shape of the answers (documented in docs/cli.md) -----------------------

def uplink_section(store: dict) -> dict:
    """The fleet uplink's state (issue 14) from the store's snapshots:
    {"enabled": False} when AUTOCORE_UPLINK_URL is unset."""
    snap = store.get("Uplink")
    retention = dict(store.get("Retention", {}).get("state") or {})
    dropped = {"dropped_unsent": int(retention.get("dropped_unsent") or 0)}
    if snap is None:
        return {"enabled": False} | dropped
    if snap.get("error"):
        return {"enabled": True, "error": snap["error"]} | dropped
    return dict(snap.get("state") or {}) | {"counters": dict(snap.get("counters") or {})} | dropped


def _int(value: Any) -> int:
    """A count; an actor whose `restarts` is something else (the supervisor
    keeps its devices' restart times there) counts as 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _actor_entry(snap: dict, parent: str | None) -> dict:
    entry = {
        "name": snap.get("name"),
        "process": snap.get("process", "core"),
        "parent": parent,
        "mailbox": snap.get("mailbox"),
        "handled": snap.get("handled"),
        "rate_per_s": snap.get("rate_per_s"),
        "restarts": _int(snap.get("restarts")),
        "summary": snap.get("summary", ""),
        "counters": dict(snap.get("counters") or {}),
        # a device's own state is what `devices` answers; here it would only
        # make the tree heavy
        "state": dict(snap.get("state") or {}) if parent is None else {},
        "error": snap.get("error"),
    }
    return entry


def _command_entry(uuid: str | None, c: dict, state: str | None = None) -> dict:
    return {
        "id": c.get("id"),
        "device": uuid,
        "state": state or ("accepted" if c.get("accepted") else "sent"),
        "type": c.get("type"),
        "attempts": c.get("attempts"),
        "deadline_in_s": c.get("deadline_in_s"),
        "waiting_for_device": bool(c.get("waiting_for_device", False)),
        "hold": c.get("hold"),  # firmware 2.2 heartbeat hold: channel, remaining_s, heartbeats
    }
