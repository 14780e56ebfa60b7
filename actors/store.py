"""The store process: everything that touches the database.

A slow disk or a Config App holding the write lock stalls only this process,
never MQTT I/O. Actors start in a fixed order; the channel reader hands each
message from core to the actor that owns it.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
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
from actors.retention import Retention
from actors.scheduler import Scheduler
from storage import commands as command_repo
from storage import devices as device_repo
from storage.db import close_database, describe_location, open_database
from storage.migrations import migrate

logger = logging.getLogger("autocore.store")

CAN_LOAD_WAIT_S = 10.0


def known_devices() -> tuple[KnownDevice, ...]:
    return tuple(
        KnownDevice(uuid=d.uuid, status=d.status or "offline", device_type=d.device_type, boot_id=d.boot_id,
                    status_interval=d.status_interval, protocol=d.protocol or "v1", encoding=d.encoding or "json",
                    last_seen=d.last_seen)
        for d in device_repo.list_devices(owner_names=False)
    )


def commands_in_flight(settings: Any) -> tuple[CommandState, ...]:
    return tuple(command_state(r, settings) for r in command_repo.in_flight())


class Store:
    def __init__(self, settings: Any, channel: Channel) -> None:
        self.settings = settings
        self.channel = channel
        self.refs: dict[str, Any] = {}
        self.done = threading.Event()
        self.clean = False

    def start(self) -> None:
        s = self.settings
        open_database(s.database, synchronous=s.db_synchronous, busy_timeout_ms=s.db_busy_timeout_ms,
                      autocheckpoint=False, register_devices=s.config_app_register,
                      wal_limit_bytes=int(s.db_wal_max_mb * 1024 * 1024))
        migrate()
        self.refs["Scheduler"] = scheduler = Scheduler.start("store")
        self.refs["DbWriter"] = writer = DbWriter.start(s, self.channel, scheduler=scheduler)
        devices = known_devices()
        self.refs["TelemetryBatcher"] = batcher = TelemetryBatcher.start(
            s, writer, scheduler, self.channel, {d.uuid: d.device_type for d in devices})
        writer.proxy().set_batcher(batcher).get()
        self.refs["CanFeed"] = can_feed = CanFeed.start(s, batcher, scheduler)
        # The definitions reach the batcher before the first frame can; a
        # huge DBC file still parsing must not stop the store from starting
        # (frames are stored raw until the definitions are in).
        try:
            can_feed.ask(LoadNow(), timeout=CAN_LOAD_WAIT_S)
        except pykka.Timeout:
            logger.warning("CAN definitions are still loading after %.0f s; frames are stored raw until then",
                           CAN_LOAD_WAIT_S)
        self.refs["CommandFeed"] = CommandFeed.start(s, writer, scheduler, self.channel)
        self.refs["Retention"] = Retention.start(s, scheduler)
        self.refs["Checkpointer"] = Checkpointer.start(s, scheduler)
        # -- fleet uplink (issue 14): its own actor, only when AUTOCORE_UPLINK_URL is set --
        if s.uplink_url:
            from actors.uplink import Uplink

            self.refs["Uplink"] = Uplink.start(s, scheduler)
        # -- end of fleet uplink --
        ready = StoreReady(os.getpid(), devices, commands_in_flight(s))
        close_database_connection_of_this_thread()
        self.channel.start_reader(self.on_core_message)
        self.channel.send(ready)
        logger.info("database %s open: %d devices known, %d commands in flight", describe_location(s.database)[1],
                    len(ready.devices), len(ready.commands))

    def on_core_message(self, message: Any) -> None:
        try:
            self._dispatch(message)
        except pykka.ActorDeadError:
            pass  # stopping: the actor that owned it is gone

    def _dispatch(self, message: Any) -> None:
        refs = self.refs
        if isinstance(message, (TelemetryRows, DeviceWrite, Flush)):
            refs["TelemetryBatcher"].tell(message)
        elif isinstance(message, ReloadCommands):
            refs["CommandFeed"].tell(message)
        elif isinstance(message, SnapshotRequest):
            threading.Thread(target=self._snapshot, args=(message.request_id,), daemon=True).start()
        elif isinstance(message, Stop):
            self.clean = True
            self.done.set()
        elif isinstance(message, ChannelClosed):
            self.done.set()

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
                snap.setdefault("state", {})["rss_mb"] = round(rss_mb(), 1)
        try:
            self.channel.send(SnapshotReply(request_id, tuple(snaps)))
        except OSError:
            pass

    def dead_actor(self) -> str | None:
        """The name of a store actor that died, if any."""
        for name, ref in self.refs.items():
            if not ref.is_alive():
                return name
        return None

    def stop(self) -> None:
        batcher = self.refs.get("TelemetryBatcher")
        if batcher is not None and not self.clean:
            # core went away without a Flush: commit what we have (the broker
            # redelivers the unacknowledged messages; seq keeps them single).
            try:
                batcher.tell(Flush("core gone"))
            except pykka.ActorDeadError:
                pass
        for name in ("Uplink", "Checkpointer", "Retention", "CommandFeed", "CanFeed", "TelemetryBatcher", "DbWriter", "Scheduler"):
            ref = self.refs.get(name)
            if ref is not None:
                try:
                    ref.stop(timeout=5.0)
                except Exception:
                    pass
        pykka.ActorRegistry.stop_all(timeout=1.0)
        close_database()


def close_database_connection_of_this_thread() -> None:
    """The main thread only migrated and loaded; the writer has its own connection."""
    from storage.db import database

    if not database.is_closed():
        database.close()


def run_store(settings: Any, channel_fd: int) -> int:
    channel = Channel.from_fd(channel_fd, "store")
    store = Store(settings, channel)
    # Core decides when we stop (Stop, or the channel closing when it dies),
    # so a signal sent to the whole process group cannot cut a commit short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        store.start()
    except Exception as exc:
        # One line: a driver's message (libpq's) may span several.
        logger.error("store could not start: %s", " ".join(str(exc).split()) or type(exc).__name__)
        pykka.ActorRegistry.stop_all(timeout=1.0)
        return 1
    while not store.done.wait(0.2):
        dead = store.dead_actor()
        if dead is not None:
            # A dead actor (the DbWriter above all) leaves the process up but
            # storing nothing: exit, so the launcher and runit start again.
            logger.error("the %s actor died; stopping so that the gateway is started again", dead)
            store.stop()
            return 1
    store.stop()
    return 0 if store.clean else 1
