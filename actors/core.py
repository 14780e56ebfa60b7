"""The core process: everything that speaks MQTT; no database connection.

This is the process's description for actors/host.py: its actors in start
order, each built with what it needs, and where each message from the store
goes; the host stops them in the reverse order (the device actors first).
The store process speaks first (`StoreReady`, with what the database
knows); only then does MqttIO connect, so no message is taken before it can
be stored.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Any

import pykka

from actors.channel import Channel, ChannelClosed, StoreLink
from actors.device import Device
from actors.heartbeat import Heartbeat
from actors.host import Host
from actors.inspector import INSPECTOR_FLUSH, Inspector
from actors.messages import (
    CancelsRequested,
    CommandsRequested,
    Committed,
    Complete,
    Flush,
    Flushed,
    KnownDevice,
    Owned,
    Publish,
    SnapshotReply,
    Stop,
    StopReading,
    StoreHealth,
    StoreReady,
    TransitionRefused,
)
from actors.encoders import CommandEncoder
from actors.fencing import FencingStoreLink
from actors.mqtt_io import MqttIO
from actors.metrics import MetricsServer
from actors.router import Router
from actors.rules.device import DeviceLogic, DeviceRules
from actors.rules.owned import OwnedBuckets
from actors.scheduler import Scheduler
from actors.settings import GatewaySettings
from actors.supervisor import DeviceSupervisor
from protocol import outbound
from protocol.decode import subscriptions

logger = logging.getLogger("autocore.core")

class StoreGone(Exception):
    """Stopping after the store process went away."""


STOP_DRAIN_S = 2.5  # after the signal: committing what was taken
STOP_DEADLINE_S = 4.0  # after the signal: everything (the launcher's run must end within 5 s)


def device_rules(settings: GatewaySettings) -> DeviceRules:
    return DeviceRules(
        device_timeout_s=settings.device_timeout_s,
        command_window=settings.command_window,
        fw22_periods=tuple(settings.fw22_period_map.items()),
        fw22_heartbeat_s=settings.fw22_heartbeat_ms / 1000.0,
        command_timeout_s=settings.command_timeout_s,
        gateway_id=settings.gateway_id,
    )


class Core:
    """Starts and stops the core actors (through its Host), and drains MQTT
    into the store before they stop."""

    def __init__(self, settings: GatewaySettings, channel: Channel) -> None:
        self.settings = settings
        self.channel = channel
        # Several instances (issue 13): the buckets this instance may act for
        # (from the store's LeaseKeeper), and device writes stamped with
        # their lease's epoch. None with one instance: nothing changes.
        self.owned = OwnedBuckets(settings.lease_buckets) if settings.share_group else None
        self.store = StoreLink(channel) if self.owned is None else FencingStoreLink(channel, self.owned)
        self._early_owned: list[Owned] = []
        self._owned_lock = threading.Lock()
        self._supervisor_loaded = False
        self.host = Host("core")
        self.refs = self.host.refs  # name -> ActorRef, in start order
        self.store_ready = threading.Event()
        self.ready_message: StoreReady | None = None
        self.flushed = threading.Event()
        self.fatal = threading.Event()
        self.fatal_reason = ""
        self.stop_requested = threading.Event()
        self.rules = device_rules(settings)
        self.encoder = CommandEncoder(settings)
        self.metrics: MetricsServer | None = None
        host = self.host
        host.route(Committed, self._committed)
        host.route((CommandsRequested, CancelsRequested, TransitionRefused), "DeviceSupervisor")
        host.route(SnapshotReply, "Inspector")
        host.route(StoreHealth, "Heartbeat")
        host.route(Flushed, self._flushed)
        # (start-up waits for StoreReady; the store going away ends it)
        host.route(StoreReady, self._store_ready, at_once=True)
        host.route(ChannelClosed, self._store_gone, at_once=True)
        host.route(Owned, self._owned)

    # -- messages from the store (channel reader thread) ----------------------

    def _committed(self, message: Committed) -> None:
        mqtt = self.refs["MqttIO"]
        if message.tokens:
            mqtt.tell(Complete(message.tokens))
        for publication in message.publish:
            # A command whose `sent` is durable now: it may go out.
            mqtt.tell(Publish(publication, command=True))

    def _flushed(self, message: Flushed) -> None:
        if message.reason.startswith(INSPECTOR_FLUSH):
            self.refs["Inspector"].tell(message)  # an operator's command waits for it
        else:
            self.flushed.set()

    def _store_ready(self, message: StoreReady) -> None:
        self.ready_message = message
        self.store_ready.set()

    def _owned(self, message: Owned) -> None:
        # The LeaseKeeper may speak before the supervisor exists: held until then, in order.
        with self._owned_lock:
            if not self._supervisor_loaded:
                self._early_owned.append(message)
                return
        self.refs["DeviceSupervisor"].tell(message)
        if 0 in message.gained and "Heartbeat" in self.refs:
            self.refs["Heartbeat"].tell(message)

    def _store_gone(self, message: ChannelClosed) -> None:
        if not self.stop_requested.is_set():
            self.fatal_reason = f"the store process went away ({message.reason})"
            self.fatal.set()

    # -- start ---------------------------------------------------------------

    def make_device(self, uuid: str, known: KnownDevice | None, restarts: int) -> Any:
        logic = DeviceLogic(uuid, self.rules, known, plan=self.encoder.plan)
        prefix = self.settings.topic_prefix
        return Device.start(
            logic, supervisor=self.refs["DeviceSupervisor"], mqtt=self.refs["MqttIO"],
            scheduler=self.refs["Scheduler"], store=self.store,
            availability=lambda u, online: outbound.availability_publication(prefix, u, online),
            encode_command=self.encoder, restarts=restarts, deadlines_via=self.refs.get("Router"),
            acting=None if self.owned is None else self.owned.owns,
        )

    def start(self, ready_timeout: float = 60.0) -> None:
        s = self.settings
        self.channel.start_reader(self.host.on_message)
        if not self.store_ready.wait(ready_timeout) or self.ready_message is None:
            raise RuntimeError("the store process did not report ready")
        ready = self.ready_message
        if s.metrics_port:
            self.metrics = MetricsServer(s.metrics_host, s.metrics_port).start()  # a taken port stops us here
        host = self.host
        scheduler = host.add("Scheduler", Scheduler.start("core"))
        will = outbound.gateway_status_publication(s.topic_prefix, "offline", s.gateway_id, time.time(), 0, 0, 0, 0, "",
                                                   instance_id=s.instance_id if s.share_group else None)
        mqtt = host.add("MqttIO", MqttIO.start(s, subscriptions(s.topic_prefix, s.share_group), will, router=host.peer("Router"),
                                               listener=host.peer("Heartbeat")))
        heartbeat = host.add("Heartbeat", Heartbeat.start(s, mqtt, scheduler, self.owned))
        supervisor = host.add("DeviceSupervisor", DeviceSupervisor.start(s, self.make_device, mqtt, self.store,
                                                                         heartbeat, self.owned, s.lease_s / 3))
        supervisor.proxy().load(ready.devices).get()
        with self._owned_lock:
            for early in self._early_owned:
                supervisor.tell(early)
                if 0 in early.gained:
                    heartbeat.tell(early)
            self._early_owned.clear()
            self._supervisor_loaded = True
        router = host.add("Router", Router.start(s, mqtt, supervisor, self.store))
        router.proxy().load(ready.devices).get()
        host.add("Inspector", Inspector.start(s, lambda: dict(self.refs), supervisor, router, self.channel,
                                              self.metrics))
        supervisor.proxy().start_offline_checks().get()
        if ready.commands:
            supervisor.tell(CommandsRequested(ready.commands))
        # What the store sent meanwhile (a command claimed at start) is for
        # actors that exist now: handed on before the network starts.
        self.host.started()
        mqtt.proxy().start_network().get()
        logger.info("started; connecting to %s:%s", s.mqtt_host, s.mqtt_port)

    def wait_subscribed(self, timeout: float | None = None) -> bool:
        return self.refs["MqttIO"].proxy().ever_subscribed.get().wait(timeout)

    # -- stop ----------------------------------------------------------------

    def stop(self, signalled_at: float | None = None) -> bool:
        """Stop taking messages, commit and acknowledge what was taken,
        publish the offline status, disconnect, stop every actor; all within
        STOP_DEADLINE_S of the signal. What is not committed by then is left
        to the broker, which delivers it again (nothing acknowledged is lost)."""
        self.stop_requested.set()
        started = signalled_at if signalled_at is not None else time.monotonic()
        drain_until = started + STOP_DRAIN_S
        finish_until = started + STOP_DEADLINE_S
        clean = True
        mqtt = self.refs.get("MqttIO")
        if mqtt is not None:
            io = mqtt.proxy()
            try:
                mqtt.tell(StopReading())
                if self.channel.closed:
                    # The store is gone: nothing more can be committed, so
                    # there is nothing to wait for (the broker keeps the rest).
                    raise StoreGone
                self.channel.send(Flush("shutdown"))
                drained = False
                while not drained and time.monotonic() < drain_until:
                    drained = io.drained().get(timeout=max(0.05, drain_until - time.monotonic()))
                    if not drained:
                        if self.channel.closed:
                            # The store died meanwhile (the launcher's SIGTERM
                            # can come before this process has read the EOF).
                            raise StoreGone
                        self.flushed.wait(0.02)
                if not drained:
                    clean = False
                    logger.warning("stopping with messages not yet committed: the broker will deliver them again")
            except StoreGone:
                clean = False
            except pykka.Timeout:
                clean = False
                logger.warning("stopping with messages not yet committed: the broker will deliver them again")
            except Exception as exc:
                clean = False
                logger.error("error while draining: %s", exc)
            try:
                # If MqttIO cannot answer in time the socket just closes, and
                # the broker publishes our Will: the same offline status.
                budget = max(0.2, finish_until - time.monotonic() - 0.5)
                last = self.refs["Heartbeat"].proxy().status("offline").get(timeout=budget)
                io.publish_and_disconnect(last, budget / 2).get(timeout=budget)
            except Exception as exc:
                clean = False
                logger.warning("could not publish the offline status (%s); the broker sends the Last Will", exc)
        try:
            self.channel.send(Stop("shutdown"))
            self.channel.flush(0.5)
        except OSError:
            pass
        if self.metrics is not None:
            self.metrics.stop()
        self.host.stop(max(0.1, finish_until + 0.5 - time.monotonic()))
        return clean


def run_core(settings: GatewaySettings, channel_fd: int) -> int:
    channel = Channel.from_fd(channel_fd, "core")
    core = Core(settings, channel)
    stop = threading.Event()
    signalled: list[float] = []

    def on_sigterm(*_: Any) -> None:
        signalled.append(time.monotonic())
        stop.set()

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the launcher decides
    try:
        core.start()
    except Exception as exc:
        logger.error("core could not start: %s", exc)
        if core.metrics is not None:
            core.metrics.stop()
        pykka.ActorRegistry.stop_all(timeout=1.0)
        return 1
    while not stop.is_set() and not core.fatal.is_set():
        if core.wait_subscribed(0.05):
            logger.info("ready: subscribed to %d topics on %s:%s", len(subscriptions(settings.topic_prefix, settings.share_group)),
                        settings.mqtt_host, settings.mqtt_port)
            break
        stop.wait(0.05)
    dead = core.host.watch(stop, core.fatal)
    if core.fatal.is_set() and not stop.is_set():
        logger.error("%s; stopping", core.fatal_reason)
        core.stop()
        return 1
    if dead is not None:
        # A dead actor leaves the process up but deaf (a dead Router routes
        # nothing, for any device): exit so the launcher and runit start the
        # whole gateway again.
        logger.error("the %s actor died; stopping so that the gateway is started again", dead)
        core.stop()
        return 1
    logger.info("stopping")
    clean = core.stop(signalled[0] if signalled else None)
    logger.info("stopped%s", "" if clean else " (some messages left to the broker to deliver again)")
    return 0

