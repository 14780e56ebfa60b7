"""The runner: drives a fleet of simulated devices over real MQTT
connections from one thread.

One `selectors` loop serves every connection (paho's external-loop API:
`loop_read`, `loop_write`, `loop_misc`), and one timer heap holds every
device's next wake-up, so thousands of devices cost no thread each. A
device has its own connection (its own Last Will, needed for liveness
scenarios) or shares one of a few with others (for load: no per-device
Will; a flap or reboot is then a silence).

Everything the devices and the links do happens on the loop thread; other
threads reach it through `call` (tests, the demo, `reboot`, `flap`, `stop`).
The run is bounded: it ends by itself at `duration`, every pass of the loop
handles a bounded number of timers, and reconnects back off.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import random
import resource
import selectors
import socket
import threading
import time
from collections import Counter, deque
from concurrent.futures import Future
from typing import Any, Callable

import paho.mqtt.client as mqtt

from simulator.base import SimDevice
from simulator.fleet import FleetConfig, build_devices
from protocol.fw22 import PREFIX as FW22_PREFIX
from protocol.values import Publication

logger = logging.getLogger("autocore.sim")

TIMERS_PER_PASS = 20000
SUBSCRIBE_BATCH = 100
OPEN_BATCH = 100  # connections opened per timer pass at start
BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 5.0
DRAIN_S = 2.0  # at the end, how long to wait for unacknowledged publications
LOG_EVERY_S = 5.0


class Link:
    """One MQTT connection and the devices that publish through it."""

    def __init__(self, name: str, devices: list[SimDevice], per_device: bool,
                 username: str | None, password: str | None) -> None:
        self.name = name
        self.devices = devices
        self.per_device = per_device
        self.username = username
        self.password = password
        self.by_uuid = {d.uuid: d for d in devices}
        self.client: mqtt.Client | None = None
        self.state = "down"  # down | connecting | up | dropping | closing
        self.open_at: float | None = None
        self.opens = 0
        self.backoff = BACKOFF_MIN_S
        self.unacked = 0
        self.subscriptions: list[tuple[str, int]] = []
        self.exact: dict[str, list[SimDevice]] = {}
        seen: dict[str, int] = {}
        for device in devices:
            for topic, qos in device.subscriptions():
                seen[topic] = max(qos, seen.get(topic, 0))
                if "+" not in topic and "#" not in topic:
                    self.exact.setdefault(topic, []).append(device)
        self.subscriptions = list(seen.items())


class Fleet:
    """A running fleet. `run()` blocks until the duration is over or `stop()`;
    `start()` runs it in a thread of its own."""

    def __init__(self, config: FleetConfig, devices: list[SimDevice] | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        self.config = config
        offset = time.time() - time.monotonic()
        self.now: Callable[[], float] = clock or (lambda: time.monotonic() + offset)
        self.devices = devices if devices is not None else build_devices(config, self.now())
        self.by_uuid = {d.uuid: d for d in self.devices}
        if len(self.by_uuid) != len(self.devices):
            raise ValueError("two simulated devices share a uuid")
        self.links = self._make_links()
        self.link_of = {d.uuid: link for link in self.links for d in link.devices}
        self.stats: Counter[str] = Counter()
        self._heap: list[tuple[float, int, Callable[..., None], tuple]] = []
        self._seq = itertools.count()
        self._due: dict[str, float] = {}
        self._down_until: dict[str, float] = {}  # shared links: devices in a flap or a boot
        self._silent_until: dict[str, float] = {}
        self._abandoned: list[tuple[float, mqtt.Client]] = []
        self._calls: deque[Callable[[], None]] = deque()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._wake_lock = threading.Lock()
        self._wake_closed = False
        self._selector = selectors.DefaultSelector()
        self._stop = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._rng = random.Random(config.seed + 7919)
        self._last_log: dict[str, float] = {}
        self._snapshot: dict[str, Any] = {}
        self.started_at = 0.0
        self.finished = threading.Event()

    # -- set-up --------------------------------------------------------------

    def _make_links(self) -> list[Link]:
        c = self.config
        fw22_user = c.fw22_username if c.fw22_username is not None else c.username
        fw22_pass = c.fw22_password if c.fw22_password is not None else c.password
        if c.per_device:
            links = []
            for d in self.devices:
                if d.dialect == "fw22":
                    user, password = fw22_user, fw22_pass
                else:
                    user, password = (d.uuid if c.username_per_device else c.username), c.password
                links.append(Link(d.uuid, [d], True, user, password))
            return links
        # Shared: each dialect on its own links (they log in as different accounts).
        links = []
        for dialect, user, password in (("v1", c.username, c.password), ("fw22", fw22_user, fw22_pass)):
            group = [d for d in self.devices if d.dialect == dialect]
            n = min(c.shared_connections, len(group))
            for i in range(n):
                links.append(Link(f"{c.uuid_prefix}-{dialect}-shared-{i + 1}-{os.getpid()}",
                                  group[i::n], False, user, password))
        return links

    # -- public, any thread ----------------------------------------------------

    def start(self, progress: Callable[[dict], None] | None = None, progress_every: float = 1.0) -> "Fleet":
        self._thread = threading.Thread(target=self.run, args=(progress, progress_every), name="sim-fleet", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake()

    def join(self, timeout: float | None = None) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    def call(self, fn: Callable[[], Any]) -> Future:
        """Run `fn` on the loop thread; its result comes in the Future."""
        future: Future = Future()

        def run() -> None:
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed to the caller
                future.set_exception(exc)

        if self.finished.is_set():
            future.set_exception(RuntimeError("the fleet has stopped"))
            return future
        self._calls.append(run)
        self._wake()
        return future

    def reboot(self, uuid: str) -> Future:
        return self.call(lambda: self._reboot(self.by_uuid[uuid]))

    def flap(self, uuid: str, down: float | None = None, silent: bool | None = None) -> Future:
        return self.call(lambda: self._flap(self.by_uuid[uuid], down, silent))

    def snapshot(self) -> dict[str, Any]:
        """The figures of the last progress tick (fresh ones: `call(fleet.figures)`)."""
        return dict(self._snapshot)

    def _wake(self) -> None:
        with self._wake_lock:
            if self._wake_closed:
                return
            try:
                os.write(self._wake_w, b"x")
            except BlockingIOError:
                pass

    # -- the loop ------------------------------------------------------------------

    def run(self, progress: Callable[[dict], None] | None = None, progress_every: float = 1.0) -> dict[str, Any]:
        self._raise_fd_limit()
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        now = self.started_at = self.now()
        deadline = now + self.config.duration
        for i in range(0, len(self.links), OPEN_BATCH):
            self._at(now + i / OPEN_BATCH * 0.01, self._open_batch, self.links[i:i + OPEN_BATCH])
        for device in self.devices:
            self._reschedule(device)
        self._plan_disruptions(now)
        next_misc = now + 1.0
        next_progress = now + progress_every
        self._snapshot = self.figures()
        try:
            while not self._stop.is_set():
                now = self.now()
                if now >= deadline:
                    break
                timeout = min(deadline - now, 0.25, max(0.0, self._heap[0][0] - now) if self._heap else 0.25)
                self._poll(timeout)
                self._run_calls()
                self._run_timers(self.now())
                now = self.now()
                if now >= next_misc:
                    next_misc = now + 1.0
                    self._misc(now)
                if now >= next_progress:
                    next_progress = now + progress_every
                    self._snapshot = self.figures()
                    if progress is not None:
                        progress(self._snapshot)
        finally:
            self._shutdown()
            self._snapshot = self.figures()
            self.finished.set()
            while self._calls:  # callers waiting on a Future get an answer
                self._calls.popleft()()
        return self._snapshot

    def _poll(self, timeout: float) -> None:
        for key, mask in self._selector.select(timeout):
            link = key.data
            if link is None:
                try:
                    while os.read(self._wake_r, 4096):
                        pass
                except BlockingIOError:
                    pass
                continue
            client = link.client
            if client is None:
                continue
            if mask & selectors.EVENT_READ:
                client.loop_read()
            if mask & selectors.EVENT_WRITE and link.client is client:
                client.loop_write()

    def _run_calls(self) -> None:
        for _ in range(len(self._calls)):
            self._calls.popleft()()

    def _at(self, when: float, fn: Callable[..., None], *args: Any) -> None:
        heapq.heappush(self._heap, (when, next(self._seq), fn, args))

    def _run_timers(self, now: float) -> None:
        for _ in range(TIMERS_PER_PASS):
            if not self._heap or self._heap[0][0] > now:
                return
            _, _, fn, args = heapq.heappop(self._heap)
            fn(*args)

    def _misc(self, now: float) -> None:
        for link in self.links:
            if link.client is not None and link.state in ("connecting", "up"):
                link.client.loop_misc()
        while self._abandoned and self._abandoned[0][0] <= now:
            _, client = self._abandoned.pop(0)
            _close_quietly(client)

    # -- devices ---------------------------------------------------------------------

    def _reschedule(self, device: SimDevice) -> None:
        due = device.next_due()
        if due is None or self._due.get(device.uuid) == due:
            return
        self._due[device.uuid] = due
        self._at(due, self._tick, device, due)

    def _tick(self, device: SimDevice, due: float) -> None:
        if self._due.get(device.uuid) != due:
            return  # superseded by a newer wake-up
        del self._due[device.uuid]
        now = self.now()
        try:
            publications = device.tick(now)
        except Exception:
            self._device_error(device, "tick")
            publications = []
        self._after(device, publications, now)

    def _handle(self, device: SimDevice, topic: str, payload: bytes, now: float) -> None:
        try:
            publications = device.handle(topic, payload, now)
        except Exception:
            self._device_error(device, "handle")
            publications = []
        self._after(device, publications, now)

    def _after(self, device: SimDevice, publications: list[Publication], now: float) -> None:
        self._emit(device, publications, now)
        if device.wants_reboot:
            device.wants_reboot = False
            self._at(now, self._reboot, device)  # not from inside paho's callback
        self._reschedule(device)

    def _device_error(self, device: SimDevice, where: str) -> None:
        self.stats["device_errors"] += 1
        if self._should_log(f"error:{device.uuid}"):
            logger.exception("simulated device %s failed in %s", device.uuid, where)

    def _emit(self, device: SimDevice, publications: list[Publication], now: float) -> None:
        if not publications:
            return
        link = self.link_of[device.uuid]
        if self._silent_until.get(device.uuid, 0.0) > now:
            self.stats["silenced"] += len(publications)
            return
        if link.state != "up" or link.client is None or not device.online:
            self.stats["not_sent_offline"] += len(publications)
            return
        for p in publications:
            info = link.client.publish(p.topic, p.payload, p.qos, p.retain)
            if info.rc == mqtt.MQTT_ERR_SUCCESS:
                link.unacked += 1
                self.stats["published"] += 1
                self.stats["published_bytes"] += len(p.payload)
            else:
                self.stats[f"publish_refused.{mqtt.error_string(info.rc)}"] += 1
                if self._should_log(f"publish:{link.name}"):
                    logger.warning("%s: publish refused: %s", link.name, mqtt.error_string(info.rc))

    def _device_up(self, device: SimDevice, now: float) -> None:
        if device.online:
            return
        try:
            publications = device.connected(now)
        except Exception:
            self._device_error(device, "connected")
            publications = []
        self._after(device, publications, now)

    def _device_down(self, device: SimDevice, now: float) -> None:
        if device.online:
            device.disconnected(now)

    # -- disruptions ------------------------------------------------------------------

    def _plan_disruptions(self, now: float) -> None:
        c = self.config
        for device in self.devices:
            if c.reboot_every:
                self._at(now + self._rng.uniform(0.5, 1.5) * c.reboot_every, self._auto, device, "reboot")
            if c.flap_every:
                self._at(now + self._rng.uniform(0.5, 1.5) * c.flap_every, self._auto, device, "flap")

    def _auto(self, device: SimDevice, what: str) -> None:
        c = self.config
        if what == "reboot":
            self._reboot(device)
            every = c.reboot_every
        else:
            self._flap(device, None, None)
            every = c.flap_every
        assert every is not None
        self._at(self.now() + self._rng.uniform(0.5, 1.5) * every, self._auto, device, what)

    def _reboot(self, device: SimDevice) -> None:
        """Power-cycle: the connection dies without DISCONNECT (its Will
        fires: at once, or with `late_will` only when the broker's keep-alive
        expires, after the new boot has announced), a new boot, and after
        `boot_time` a new connection with the new boot's Will."""
        now = self.now()
        link = self.link_of[device.uuid]
        self.stats["reboots"] += 1
        if link.per_device:
            if self.config.late_will:
                self._abandon(link, now)
            else:
                self._drop(link)
            self._device_down(device, now)
            device.reboot(now)
            self._schedule_open(link, now + self.config.boot_time)
        else:
            self._device_down(device, now)
            device.reboot(now)
            self._down_until[device.uuid] = now + self.config.boot_time
            self._at(now + self.config.boot_time, self._device_back, device, now + self.config.boot_time)
        self._reschedule(device)

    def _flap(self, device: SimDevice, down: float | None, silent: bool | None) -> None:
        """A connection flap: the link drops without DISCONNECT (the Will
        fires) and comes back `down` seconds later; `silent`: the device
        stays connected but sends nothing (offline only by the timeout)."""
        now = self.now()
        down = self.config.flap_down if down is None else down
        silent = self.config.flap_silent if silent is None else silent
        link = self.link_of[device.uuid]
        self.stats["flaps"] += 1
        if silent:
            self._silent_until[device.uuid] = now + down
        elif link.per_device:
            if link.state in ("up", "connecting"):
                self._drop(link)
                self._device_down(device, now)
            self._schedule_open(link, now + down)
        else:
            self._device_down(device, now)
            self._down_until[device.uuid] = now + down
            self._at(now + down, self._device_back, device, now + down)

    def _device_back(self, device: SimDevice, until: float) -> None:
        if self._down_until.get(device.uuid) != until:
            return
        del self._down_until[device.uuid]
        link = self.link_of[device.uuid]
        if link.state == "up":
            self._device_up(device, self.now())

    # -- links ---------------------------------------------------------------------------

    def _open_batch(self, links: list[Link]) -> None:
        for link in links:
            self._open(link, None)

    def _schedule_open(self, link: Link, when: float) -> None:
        link.open_at = when
        self._at(when, self._open, link, when)

    def _open(self, link: Link, when: float | None) -> None:
        if when is not None and link.open_at != when:
            return  # superseded
        link.open_at = None
        if self._stopping or link.state != "down":
            return
        c = self.config
        link.opens += 1
        client_id = link.name
        if link.per_device and c.late_will:
            client_id = f"{link.name}-{link.opens}"  # a new id per connection: the old one is left to time out
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311,
                             clean_session=True, userdata=link)
        client.max_inflight_messages_set(20 if link.per_device else 200)
        client.max_queued_messages_set(c.max_queued)
        if link.username is not None:
            client.username_pw_set(link.username, link.password)
        if c.tls_ca:
            client.tls_set(ca_certs=c.tls_ca)
        if link.per_device:
            will = link.devices[0].will()
            if will is not None:
                client.will_set(will.topic, will.payload, will.qos, will.retain)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write
        link.client = client
        link.state = "connecting"
        link.unacked = 0
        try:
            client.connect(c.host, c.port, c.keepalive)
        except (OSError, ValueError) as exc:
            self.stats["connect_errors"] += 1
            if self._should_log("connect"):
                logger.warning("cannot connect to %s:%s (%s): %s", c.host, c.port, link.name, exc)
            link.client = None
            link.state = "down"
            self._retry(link)

    def _retry(self, link: Link) -> None:
        if self._stopping:
            return
        delay = link.backoff * self._rng.uniform(0.8, 1.2)
        link.backoff = min(BACKOFF_MAX_S, link.backoff * 2)
        self._schedule_open(link, self.now() + delay)

    def _drop(self, link: Link) -> None:
        """Close the connection without DISCONNECT, as a board losing power or
        Wi-Fi does: the broker publishes its Will."""
        client = link.client
        if client is None:
            return
        link.state = "dropping"
        sock = client.socket()
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            for _ in range(1000):  # paho reads what is left, then sees the end
                if client.socket() is None:
                    break
                client.loop_read()
        self._link_down(link, self.now())

    def _abandon(self, link: Link, now: float) -> None:
        """Leave the connection open and unserved: the broker notices only
        when the keep-alive expires (1.5 x keepalive) and then publishes
        the Will of a boot that is over."""
        client = link.client
        if client is None:
            return
        sock = client.socket()
        if sock is not None:
            try:
                self._selector.unregister(sock)
            except (KeyError, ValueError):
                pass
        self._link_down(link, now)
        self._abandoned.append((now + 2 * self.config.keepalive + 1, client))

    def _link_down(self, link: Link, now: float) -> None:
        link.client = None
        link.state = "down"
        for device in link.devices:
            self._device_down(device, now)

    # -- paho callbacks (all on the loop thread) -------------------------------------------

    def _on_socket_open(self, client: mqtt.Client, link: Link, sock: Any) -> None:
        self._selector.register(sock, selectors.EVENT_READ, link)

    def _on_socket_close(self, client: mqtt.Client, link: Link, sock: Any) -> None:
        try:
            self._selector.unregister(sock)
        except (KeyError, ValueError):
            pass

    def _on_register_write(self, client: mqtt.Client, link: Link, sock: Any) -> None:
        if client is link.client:
            self._selector.modify(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, link)

    def _on_unregister_write(self, client: mqtt.Client, link: Link, sock: Any) -> None:
        if client is link.client:
            try:
                self._selector.modify(sock, selectors.EVENT_READ, link)
            except (KeyError, ValueError):
                pass

    def _on_connect(self, client: mqtt.Client, link: Link, flags: Any, reason: Any, properties: Any) -> None:
        if client is not link.client:
            return
        if reason.is_failure:
            self.stats["connect_refused"] += 1
            if self._should_log("refused"):
                logger.warning("the broker refused %s: %s", link.name, reason)
            return  # the broker closes the connection; _on_disconnect retries
        link.state = "up"
        link.backoff = BACKOFF_MIN_S
        self.stats["connects"] += 1
        subs = link.subscriptions
        for i in range(0, len(subs), SUBSCRIBE_BATCH):
            client.subscribe(subs[i:i + SUBSCRIBE_BATCH])
        now = self.now()
        for device in link.devices:
            if device.uuid not in self._down_until:
                self._device_up(device, now)

    def _on_disconnect(self, client: mqtt.Client, link: Link, flags: Any, reason: Any, properties: Any) -> None:
        if client is not link.client:
            return
        expected = link.state in ("dropping", "closing")
        self._link_down(link, self.now())
        if not expected:
            self.stats["connections_lost"] += 1
            if self._should_log("lost"):
                logger.warning("%s lost its connection: %s", link.name, reason)
            self._retry(link)

    def _on_message(self, client: mqtt.Client, link: Link, message: mqtt.MQTTMessage) -> None:
        if client is not link.client:
            return
        self.stats["received"] += 1
        topic = message.topic
        targets = link.exact.get(topic)
        if targets is None:
            device = link.by_uuid.get(self._uuid_of(topic))
            targets = [device] if device is not None else []
        now = self.now()
        for device in targets:
            if device.online:
                self._handle(device, topic, message.payload, now)

    def _on_publish(self, client: mqtt.Client, link: Link, mid: int, reason: Any, properties: Any) -> None:
        if client is link.client and link.unacked > 0:
            link.unacked -= 1

    def _uuid_of(self, topic: str) -> str:
        for head in (self.config.v1.prefix + "/devices/", FW22_PREFIX + "/devices/"):
            if topic.startswith(head):
                return topic[len(head):].split("/", 1)[0]
        return ""

    # -- the end ---------------------------------------------------------------------------

    def _shutdown(self) -> None:
        """Wait (briefly) for what is in flight, then end every connection:
        per-device links without DISCONNECT so each Will tells the gateway
        the device is gone (unless `clean_exit`), shared links cleanly."""
        self._stopping = True
        deadline = self.now() + DRAIN_S
        while self.now() < deadline and any(l.unacked > 0 and l.state == "up" for l in self.links):
            self._poll(0.05)
        for link in self.links:
            client = link.client
            if client is None:
                continue
            if link.per_device and not self.config.clean_exit:
                self._drop(link)
                continue
            link.state = "closing"
            client.disconnect()
            end = time.monotonic() + 1.0
            while client.socket() is not None and time.monotonic() < end:
                client.loop_write()
                if client.socket() is not None and not client.want_write():
                    break
            _close_quietly(client)
            self._link_down(link, self.now())
        for _, client in self._abandoned:
            _close_quietly(client)
        self._abandoned.clear()
        self._selector.close()
        with self._wake_lock:
            # A stop() after the loop ended (its duration ran out) must not
            # write into a closed descriptor, or into whatever reuses it.
            self._wake_closed = True
            os.close(self._wake_r)
            os.close(self._wake_w)

    # -- figures -----------------------------------------------------------------------------

    def figures(self) -> dict[str, Any]:
        """Counters of the run so far (call on the loop thread, or via `call`)."""
        now = self.now()
        devices = Counter()
        for d in self.devices:
            devices.update(d.counters)
        online = sum(1 for d in self.devices if d.online and self.link_of[d.uuid].state == "up")
        elapsed = max(1e-9, now - self.started_at) if self.started_at else 0.0
        figures: dict[str, Any] = {
            "elapsed": round(elapsed, 3),
            "duration": self.config.duration,
            "devices": len(self.devices),
            "online": online,
            "links": len(self.links),
            "links_up": sum(1 for l in self.links if l.state == "up"),
            "published": self.stats["published"],
            "rate": round(self.stats["published"] / elapsed, 1) if elapsed else 0.0,
            "telemetry": devices["telemetry"],
            "commands": devices["commands_received"],
            "duplicates": devices["duplicates"],
            "responses": devices["responses"],
            "heartbeats": devices["heartbeats"],
            "relays_set": devices["relays_set"],
        }
        figures.update({k: v for k, v in self.stats.items() if k != "published"})
        return figures

    # -- odds and ends ---------------------------------------------------------------------------

    def _should_log(self, key: str) -> bool:
        now = time.monotonic()
        if now - self._last_log.get(key, -LOG_EVERY_S) >= LOG_EVERY_S:
            self._last_log[key] = now
            return True
        return False

    def _raise_fd_limit(self) -> None:
        wanted = len(self.links) + 256
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < wanted:
            new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            except (ValueError, OSError):
                pass
            if new < wanted:
                logger.warning("only %d file descriptors for %d connections; use --connections shared", new, len(self.links))


def _close_quietly(client: mqtt.Client) -> None:
    sock = client.socket()
    if sock is None:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    for _ in range(1000):
        if client.socket() is None:
            return
        client.loop_read()


def run_fleet(config: FleetConfig, progress: Callable[[dict], None] | None = None,
              progress_every: float = 1.0) -> dict[str, Any]:
    """Build the fleet of `config`, run it to its end, return its figures."""
    return Fleet(config).run(progress, progress_every)
