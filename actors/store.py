"""The store process: everything that touches the database.

A slow disk or a Config App holding the write lock stalls only this process,
never MQTT I/O. This is the process's description for actors/host.py: its
actors in start order, each built with what it needs, and where each message
from core goes; the host stops them in the reverse order.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import threading
import time
from typing import Any

import pykka

from actors.base import rss_mb
from actors.batcher import TelemetryBatcher
from actors.can_feed import CanFeed, LoadNow
from actors.channel import Channel, ChannelClosed
from actors.command_feed import CommandFeed
from actors.db_writer import DbWriter, command_state
from actors.messages import (
    CommandState,
    Deadline,
    DeviceWrite,
    Flush,
    GetSnapshot,
    KnownDevice,
    ReloadCommands,
    SnapshotReply,
    SnapshotRequest,
    Stop,
    StoreReady,
    TelemetryRows,
)
from actors.checkpointer import Checkpointer
from actors.host import Host
from actors.lease_keeper import LeaseKeeper
from actors.retention import Retention
from actors.scheduler import Scheduler
from actors.settings import GatewaySettings
from actors.syncer import Syncer
from protocol.dialects import parse_dialect, parse_encoding
from storage import commands as command_repo
from storage import devices as device_repo
from storage.db import close_database, describe_location, open_database
from storage.durability import sync_database_now
from storage.migrations import migrate

logger = logging.getLogger("autocore.store")

CAN_LOAD_WAIT_S = 10.0


def known_devices() -> tuple[KnownDevice, ...]:
    return tuple(
        KnownDevice(uuid=d.uuid, status=d.status or "offline", device_type=d.device_type, boot_id=d.boot_id,
                    status_interval=d.status_interval, protocol=parse_dialect(d.protocol),
                    encoding=parse_encoding(d.encoding),
                    last_seen=d.last_seen)
        for d in device_repo.list_devices(owner_names=False)
    )


def commands_in_flight(settings: GatewaySettings) -> tuple[CommandState, ...]:
    return tuple(command_state(r, settings) for r in command_repo.in_flight())


STOP_S = 6.0  # every actor, after core's Stop (the launcher allows the whole gateway 5 s after its signal)


class Store:
    def __init__(self, settings: GatewaySettings, channel: Channel) -> None:
        self.settings = settings
        self.channel = channel
        self.host = Host("store")
        self.refs = self.host.refs  # name -> ActorRef, in start order
        self.done = threading.Event()
        self.clean = False
        host = self.host
        host.route((TelemetryRows, DeviceWrite, Flush), "TelemetryBatcher")
        host.route(ReloadCommands, "CommandFeed")
        host.route(SnapshotRequest, self._snapshot_later)
        host.route(Stop, self._stop_requested)
        host.route(ChannelClosed, lambda _: self.done.set())

    def start(self) -> None:
        s = self.settings
        open_database(s.database, synchronous=s.db_synchronous, busy_timeout_ms=s.db_busy_timeout_ms,
                      autocheckpoint=False, register_devices=s.config_app_register,
                      wal_limit_bytes=int(s.db_wal_max_mb * 1024 * 1024))
        migrate()
        if not s.db_unsafe_ack_before_sync:
            # What an earlier process committed and a crash left unsynced is
            # made durable before this one hands any of it on.
            sync_database_now(s.database, s.db_synchronous)
        host = self.host
        scheduler = host.add("Scheduler", Scheduler.start("store"))
        # Before the writer and the uplink, so it stops after them and
        # releases what their last commits promised.
        syncer = host.add("Syncer", Syncer.start(s, self.channel, scheduler))
        writer = host.add("DbWriter", DbWriter.start(s, self.channel, host.peer("TelemetryBatcher"), scheduler,
                                                     syncer))
        devices = known_devices()
        batcher = host.add("TelemetryBatcher", TelemetryBatcher.start(
            s, writer, scheduler, self.channel, {d.uuid: d.device_type for d in devices}))
        can_feed = host.add("CanFeed", CanFeed.start(s, batcher, scheduler))
        # The definitions reach the batcher before the first frame can; a
        # huge DBC file still parsing must not stop the store from starting
        # (frames are stored raw until the definitions are in).
        try:
            can_feed.ask(LoadNow(), timeout=CAN_LOAD_WAIT_S)
        except pykka.Timeout:
            logger.warning("CAN definitions are still loading after %.0f s; frames are stored raw until then",
                           CAN_LOAD_WAIT_S)
        host.add("CommandFeed", CommandFeed.start(s, writer, scheduler, self.channel))
        host.add("Retention", Retention.start(s, scheduler))
        host.add("Checkpointer", Checkpointer.start(s, scheduler))
        if s.share_group:
            # Several instances: commands in flight reach core per bucket
            # this instance comes to own (Owned), not all at start.
            host.add("LeaseKeeper", LeaseKeeper.start(s, scheduler, self.channel,
                                                      lambda: (known_devices(), commands_in_flight(s)),
                                                      host.refs["CommandFeed"]))
        # -- fleet uplink (issue 14): its own actor, only when AUTOCORE_UPLINK_URL is set --
        if s.uplink_url:
            from actors.uplink import Uplink

            host.add("Uplink", Uplink.start(s, scheduler, syncer))
        # -- end of fleet uplink --
        ready = StoreReady(os.getpid(), devices, () if s.share_group else commands_in_flight(s))
        close_database_connection_of_this_thread()
        host.started()  # every actor runs before the reader does: nothing to hold
        self.channel.start_reader(host.on_message)
        self.channel.send(ready)
        if "LeaseKeeper" in self.refs:
            self.refs["LeaseKeeper"].tell(Deadline("lease-round", time.time()))
        logger.info("database %s open: %d devices known, %d commands in flight", describe_location(s.database)[1],
                    len(ready.devices), len(ready.commands))

    def _stop_requested(self, _: Stop) -> None:
        self.clean = True
        self.done.set()

    def _snapshot_later(self, message: SnapshotRequest) -> None:
        # Asked of every actor: not on the channel's reader thread.
        threading.Thread(target=self._snapshot, args=(message.request_id,), daemon=True).start()

    def _snapshot(self, request_id: int) -> None:
        snaps = []
        for name, ref in self.refs.items():
            try:
                snap = ref.ask(GetSnapshot(), timeout=2.0)
            except Exception as exc:
                snap = {"name": name, "process": "store", "error": f"no answer: {type(exc).__name__}"}
            snaps.append(snap)
        for snap in snaps:
            if snap.get("name") == "DbWriter":
                state = snap.setdefault("state", {})
                state["rss_mb"] = round(rss_mb(), 1)
                state["gc"] = {"threshold": list(gc.get_threshold()),
                               "collections": [g["collections"] for g in gc.get_stats()]}
        try:
            self.channel.send(SnapshotReply(request_id, tuple(snaps)))
        except OSError:
            pass

    def stop(self) -> None:
        batcher = self.refs.get("TelemetryBatcher")
        if batcher is not None and not self.clean:
            # core went away without a Flush: commit what we have (the broker
            # redelivers the unacknowledged messages; seq keeps them single).
            try:
                batcher.tell(Flush("core gone"))
            except pykka.ActorDeadError:
                pass
        self.host.stop(STOP_S)
        close_database()


def close_database_connection_of_this_thread() -> None:
    """The main thread only migrated and loaded; the writer has its own connection."""
    from storage.db import database

    if not database.is_closed():
        database.close()


def tune_collector(gen0: int) -> None:
    """The store's rows (thousands a batch, each a tuple the collector
    tracks) live until their batch commits: at Python's threshold (700
    allocations) each batch sets off several young collections that walk
    them, and promotes them, which brings on the older, larger ones. A
    higher first threshold lets most of a batch die before any collection
    sees it (bench/can_decode.py measures it). 0 keeps Python's default."""
    if gen0 > 0:
        gc.set_threshold(gen0, *gc.get_threshold()[1:])


def run_store(settings: GatewaySettings, channel_fd: int) -> int:
    channel = Channel.from_fd(channel_fd, "store")
    store = Store(settings, channel)
    # Core decides when we stop (Stop, or the channel closing when it dies),
    # so a signal sent to the whole process group cannot cut a commit short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    tune_collector(settings.store_gc_gen0)
    try:
        store.start()
    except Exception as exc:
        # One line: a driver's message (libpq's) may span several.
        logger.error("store could not start: %s", " ".join(str(exc).split()) or type(exc).__name__)
        pykka.ActorRegistry.stop_all(timeout=1.0)
        return 1
    dead = store.host.watch(store.done)
    if dead is not None:
        # A dead actor (the DbWriter above all) leaves the process up but
        # storing nothing: exit, so the launcher and runit start again.
        logger.error("the %s actor died; stopping so that the gateway is started again", dead)
        store.stop()
        return 1
    store.stop()
    return 0 if store.clean else 1
