"""Inspector: the control socket (`gateway.sock` in the run dir).

A client sends one request frame and reads one reply frame: 4-byte length,
then a msgpack map. Requests: `{"what": "actors" | "devices" | "device" |
"commands" | "stats", "uuid": ...}`. The Inspector is an edge of the actor
system, so it may `ask`: it gathers `GetSnapshot` replies from the core
actors (and through the channel, from the store's), each with a deadline.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import struct
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable

import msgpack

from actors.base import GatewayActor
from actors.messages import GetSnapshot, SnapshotReply, SnapshotRequest

logger = logging.getLogger("autocore.inspector")

_HEADER = struct.Struct(">I")
ASK_TIMEOUT_S = 2.0
MAX_REQUEST = 65536


def send_frame(sock: socket.socket, obj: Any) -> None:
    data = msgpack.packb(obj, use_bin_type=True, default=str)
    sock.sendall(_HEADER.pack(len(data)) + data)


def recv_frame(sock: socket.socket, limit: int = 512 * 1024 * 1024) -> Any:
    header = _recv_exact(sock, _HEADER.size)
    (size,) = _HEADER.unpack(header)
    if size > limit:
        raise ValueError(f"frame of {size} bytes is over the limit")
    return msgpack.unpackb(_recv_exact(sock, size), raw=False, strict_map_key=False)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks = []
    while n:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            raise ConnectionError("the other side closed the connection")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


class Inspector(GatewayActor):
    name = "Inspector"

    def __init__(self, settings: Any, actors: Callable[[], dict[str, Any]], supervisor: Any, router: Any, channel: Any) -> None:
        super().__init__()
        self.path = settings.socket_path
        self.settings = settings
        self.actors = actors  # name -> ActorRef of the core actors
        self.supervisor = supervisor
        self.router = router
        self.channel = channel
        self._server: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._ids = itertools.count(1)
        self._waiting: dict[int, Future] = {}
        self._lock = threading.Lock()
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
                request = recv_frame(conn, MAX_REQUEST)
                reply = self.answer(request if isinstance(request, dict) else {})
            except Exception as exc:  # a bad client must not hurt the gateway
                reply = {"error": f"{type(exc).__name__}: {exc}"}
            try:
                send_frame(conn, reply)
            except OSError:
                pass

    def answer(self, request: dict) -> dict:
        what = request.get("what")
        if what == "actors":
            return {"actors": self.core_snapshots() + self.store_snapshots() + self.device_snapshots(summary_only=True)}
        if what == "devices":
            return {"devices": [s["state"] for s in self.device_snapshots()]}
        if what == "device":
            uuid = str(request.get("uuid", ""))
            for snap in self.device_snapshots(only=uuid):
                state = dict(snap["state"])
                state["rejections"] = self.router.proxy().device_rejections(uuid).get(timeout=ASK_TIMEOUT_S)
                state["actor"] = {k: snap[k] for k in ("mailbox", "handled", "restarts")}
                return {"device": state}
            return {"error": f"no device {uuid} in the running gateway"}
        if what == "commands":
            out = []
            for snap in self.device_snapshots():
                cmds = snap["state"]["commands"]
                for c in cmds["out"]:
                    out.append({"device": snap["state"]["uuid"], "state": "accepted" if c["accepted"] else "sent", **c})
                for cid in cmds["queued"]:
                    out.append({"device": snap["state"]["uuid"], "id": cid, "state": "queued"})
            return {"commands": sorted(out, key=lambda c: c["id"])}
        if what == "stats":
            core = {s["name"]: s for s in self.core_snapshots()}
            store = {s["name"]: s for s in self.store_snapshots()}
            return {"stats": {
                "gateway_id": self.settings.gateway_id,
                "uptime_s": round(time.time() - self.started, 1),
                "mqtt": core.get("MqttIO", {}).get("state", {}) | {"counters": core.get("MqttIO", {}).get("counters", {})},
                "router": core.get("Router", {}).get("state", {}),
                "devices": core.get("DeviceSupervisor", {}).get("state", {}),
                "channel": self.channel.snapshot(),
                "batcher": store.get("TelemetryBatcher", {}).get("state", {}),
                "writer": store.get("DbWriter", {}).get("state", {}),
                "memory": {"core_rss_mb": core.get("Heartbeat", {}).get("state", {}).get("rss_mb"),
                           "store_rss_mb": store.get("DbWriter", {}).get("state", {}).get("rss_mb")},
            }}
        return {"error": f"unknown request {what!r}; ask for actors, devices, device, commands or stats"}

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

    def device_snapshots(self, only: str | None = None, summary_only: bool = False) -> list[dict]:
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
            if summary_only:
                snap.pop("state", None)
            snaps.append(snap)
        return snaps
