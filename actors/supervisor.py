"""DeviceSupervisor: one Device actor per uuid; spawn, restart, evict.

It keeps what the database knew of every device at start-up (and what each
evicted actor handed back), so a device's actor can be stopped when the cache
is full and rebuilt on its next message with nothing a user can see changed.
A crashed Device is restarted with the work it had left; one that keeps
crashing is restarted at most `MAX_RESTARTS` times per `RESTART_WINDOW_S`,
then left down (its messages completed and counted) until the window passes.

There is never more than one actor per device: while a device's actor is
being retired or replaced after a crash, the messages for that uuid are
held here and handed on, in order, once it has answered (`Retired`, or
`Drained` after handing back what it had not handled).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import OrderedDict, deque
from typing import Any, Callable

from actors.base import GatewayActor
from actors.messages import (
    Bounced,
    CancelCommand,
    CancelsRequested,
    CommandsRequested,
    Complete,
    Deadline,
    DeviceFailed,
    DeviceInput,
    DeviceMessage,
    DeviceStatus,
    DeviceWrite,
    Drain,
    Drained,
    ForgetDevice,
    Forgotten,
    GetSnapshot,
    KnownDevice,
    OnlineCount,
    Owned,
    ReloadCommands,
    Retire,
    Retired,
    Route,
    Seen,
    SeenElsewhere,
    SetDialect,
    TakeCommands,
    TelemetryRows,
    TransitionRefused,
)
from actors.rules.owned import OwnedBuckets
from actors.settings import GatewaySettings
from protocol import dialects
from protocol.values import Dialect

logger = logging.getLogger("autocore.supervisor")

MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0


class DeviceSupervisor(GatewayActor):
    name = "DeviceSupervisor"

    def __init__(self, settings: GatewaySettings, make_device: Callable[[str, KnownDevice | None, int], Any], mqtt: Any, store: Any,
                 heartbeat: Any = None, owned: OwnedBuckets | None = None, touch_every_s: float = 2.0) -> None:
        super().__init__()
        # Several instances (issue 13): the buckets this instance may act
        # for; None: one instance, every device is ours.
        self.owned = owned
        self.touch_every_s = touch_every_s  # last_seen of a device another instance owns, at most this often
        self.touched: dict[str, float] = {}
        self.max_actors = settings.max_device_actors
        self.make_device = make_device  # (uuid, known, restarts) -> started ActorRef
        self.mqtt = mqtt
        self.store = store
        self.heartbeat = heartbeat  # told how many devices are online
        self.actors: OrderedDict[str, Any] = OrderedDict()  # least recently routed first
        self.known: dict[str, KnownDevice] = {}
        self.online: set[str] = set()
        self.retiring: set[str] = set()
        self.restart_history: dict[str, deque[float]] = {}
        self.down_until: dict[str, float] = {}
        # uuid -> messages routed to it while its actor is retiring or being
        # replaced: handed on once that actor has answered.
        self.held: dict[str, list[Any]] = {}
        # uuid -> what its failed actor handed back (before anything held).
        self.replacing: dict[str, list[Any]] = {}
        # Several instances: uuid -> what came for a device whose bucket is
        # held but not acted for just now (the lease's renewal is late):
        # its messages (not yet acknowledged) and commands claimed for it,
        # handed on in order once it is acted for again at the same epoch
        # (nobody else acted meanwhile); if the bucket is lost, its messages
        # are handled as another owner's and its commands dropped (the new
        # owner loads the commands in flight).
        self.parked: dict[str, list[DeviceInput | TakeCommands]] = {}

    def load(self, devices: tuple[KnownDevice, ...]) -> None:
        """Start-up: what the database knows (no actor is started for them yet)."""
        for d in devices:
            self.known[d.uuid] = d
            if d.status == "online":
                self.online.add(d.uuid)
        if self.heartbeat is not None:
            self.heartbeat.tell(OnlineCount(len(self.online)))

    def start_offline_checks(self) -> None:
        """Devices the database calls online get an actor now, so their timeout runs.
        (Several instances: those of the buckets it owns, once it owns them.)"""
        if self.owned is not None:
            return
        for uuid in list(self.online):
            self._actor(uuid)

    # -- several instances -------------------------------------------------

    def _acts_for(self, uuid: str) -> bool:
        return self.owned is None or self.owned.owns(uuid, time.time())

    def _seen_not_owned(self, uuid: str, seen: Seen) -> None:
        """Another instance owns the device: its rows went to the store
        already; its sign of life goes to the database (at most every
        `touch_every_s`), where the owner's LeaseKeeper finds it."""
        self.counters["seen_not_owned"] += seen.count
        at = seen.received_at
        if at - self.touched.get(uuid, 0.0) < self.touch_every_s:
            return
        if len(self.touched) > 4 * self.max_actors:
            self.touched.clear()
        self.touched[uuid] = at
        self.store.send(DeviceWrite(uuid, at, last_seen=at))

    def _messages_not_owned(self, msgs: tuple[DeviceMessage, ...]) -> None:
        """Acknowledged, not acted on: the owner (which got the same control
        message) acts. Their rows, if any, are stored all the same."""
        self.counters["messages_not_owned"] += len(msgs)
        stored = [m for m in msgs if m.rows]
        if stored:
            self.store.send(TelemetryRows(tuple(r for m in stored for r in m.rows), tuple(m.token for m in stored)))
        done = tuple(m.token for m in msgs if not m.rows)
        if done:
            self.mqtt.tell(Complete(done))

    def _owned(self, m: Owned) -> None:
        """The store's LeaseKeeper says what this instance may act for now.
        Devices of buckets gained are (re)loaded as at start; the actors of
        buckets lost stop (their state is the new owner's to keep)."""
        assert self.owned is not None, "Owned without a share group"
        change = self.owned.update(dict(m.epochs), m.act_until, m.expires_at)
        if change.lost:
            for uuid in [u for u in self.actors if self.owned.bucket(u) in change.lost]:
                self._stop_actor(uuid)
            for uuid in [u for u in self.online if self.owned.bucket(u) in change.lost]:
                self.online.discard(uuid)
            self.counters["buckets_lost"] += len(change.lost)
        if change.gained:
            self.counters["buckets_gained"] += len(change.gained)
            for uuid in [u for u in self.actors if self.owned.bucket(u) in change.gained]:
                self._stop_actor(uuid)  # from an earlier lease: rebuilt from what the database has now
        for d in m.devices:
            self.known[d.uuid] = d
            if d.status == "online":
                self.online.add(d.uuid)
                self._actor(d.uuid)  # its timeout runs from now on
            else:
                self.online.discard(d.uuid)
        self._unpark(change.lost)
        if m.commands:
            self.handle(CommandsRequested(m.commands))
        now = time.time()
        for uuid, at in m.seen:
            if uuid in self.known and self.owned.owns(uuid, now):
                self._tell(uuid, SeenElsewhere(at))
        if self.heartbeat is not None and (change.lost or m.devices):
            self.heartbeat.tell(OnlineCount(len(self.online)))

    def _park(self, uuid: str, message: DeviceInput | TakeCommands) -> None:
        self.parked.setdefault(uuid, []).append(message)
        if isinstance(message, TakeCommands):
            self.counters["commands_parked"] += len(message.commands)
        else:
            self.counters["messages_parked"] += len(message.messages)

    def _unpark(self, lost: frozenset[int]) -> None:
        """What was parked: handed on when its device is acted for again;
        when its bucket was lost (or is held at another epoch now, loaded
        again with it) its messages are another owner's and its commands
        are dropped."""
        assert self.owned is not None
        for uuid in list(self.parked):
            if self.owned.bucket(uuid) in lost or not self.owned.holds(uuid):
                for m in self.parked.pop(uuid):
                    if isinstance(m, TakeCommands):
                        self.counters["commands_not_owned"] += len(m.commands)
                    else:
                        self._messages_not_owned(m.messages)
            elif self._acts_for(uuid):
                for m in self.parked.pop(uuid):
                    self._tell(uuid, m)

    def _stop_actor(self, uuid: str) -> None:
        ref = self.actors.pop(uuid, None)
        self.held.pop(uuid, None)
        self.retiring.discard(uuid)
        if ref is not None:
            ref.stop(block=False)
            self.counters["stopped_not_owned"] += 1

    # -- routing ---------------------------------------------------------

    def handle(self, message: Any) -> Any:
        if isinstance(message, Route) and self.owned is None:
            for uuid, seen in message.seen:
                self._tell(uuid, DeviceInput(seen=seen))
            for uuid, msgs in message.messages:
                self._tell(uuid, DeviceInput(messages=msgs))
        elif isinstance(message, Route):
            for uuid, seen in message.seen:
                if self._acts_for(uuid):
                    self._tell(uuid, DeviceInput(seen=seen))
                else:
                    self._seen_not_owned(uuid, seen)
            for uuid, msgs in message.messages:
                if self._acts_for(uuid):
                    self._tell(uuid, DeviceInput(messages=msgs))
                elif self.owned is not None and self.owned.holds(uuid):
                    self._park(uuid, DeviceInput(messages=msgs))
                else:
                    self._messages_not_owned(msgs)
        elif isinstance(message, Owned):
            self._owned(message)
        elif isinstance(message, CommandsRequested):
            by_device: dict[str, list] = {}
            for state in message.commands:
                by_device.setdefault(state.spec.device_uuid, []).append(state)
            for uuid, states in by_device.items():
                if self._acts_for(uuid):
                    self._tell(uuid, TakeCommands(tuple(states)))
                elif self.owned is not None and self.owned.holds(uuid):
                    # Claimed under a lease this instance still holds, but
                    # not acted for just now: kept for when it is again
                    # (nobody else loads them while the epoch is ours).
                    self._park(uuid, TakeCommands(tuple(states)))
                else:
                    # Its bucket went elsewhere since the claim: the new
                    # owner loads the commands in flight of what it gains.
                    self.counters["commands_not_owned"] += len(states)
        elif isinstance(message, CancelsRequested):
            for uuid, command_id in message.commands:
                if self._acts_for(uuid):
                    self._tell(uuid, CancelCommand(command_id))
        elif isinstance(message, TransitionRefused):
            if message.device_uuid in self.actors:
                self._tell(message.device_uuid, message)
        elif isinstance(message, Deadline):
            # Passed on by the Router (actors/device.py says why). Only to a
            # device with an actor: one retired since asking had no deadline
            # left (idle); a replacement asks for its own anyway.
            uuid = message.key[1]
            if uuid in self.actors:
                self._tell(uuid, message)
        elif isinstance(message, DeviceStatus):
            self.known[message.uuid] = message.known
            before = len(self.online)
            (self.online.add if message.known.status == "online" else self.online.discard)(message.uuid)
            if self.heartbeat is not None and len(self.online) != before:
                self.heartbeat.tell(OnlineCount(len(self.online)))
        elif isinstance(message, Retired):
            self.retiring.discard(message.uuid)
            self.known[message.uuid] = message.known
            if message.stopped:
                self.actors.pop(message.uuid, None)
                self.counters["evicted"] += 1
            self._release(message.uuid, self.held.pop(message.uuid, []))
        elif isinstance(message, DeviceFailed):
            self._failed(message)
        elif isinstance(message, Bounced):
            if message.uuid in self.replacing:
                self.replacing[message.uuid].append(message.message)
            elif not isinstance(message.message, (Retire, GetSnapshot, Drain)):
                self._tell(message.uuid, message.message)  # sent after its Drain: the new actor's
        elif isinstance(message, Drained):
            self._replace(message.uuid)
        elif isinstance(message, (SetDialect, ForgetDevice)):
            return self._operator(message)
        elif isinstance(message, Forgotten):
            self._purge(message.uuid)
        else:
            return super().handle(message)
        return None

    # -- the operator's changes (asked by the Inspector) ---------------------

    def _operator(self, message: SetDialect | ForgetDevice) -> dict:
        """With a live actor: its ref, for the Inspector to ask it (the actor
        then tells us DeviceStatus or Forgotten, after whatever it sent
        before). Without one: what is kept of the device changes here."""
        uuid = message.uuid
        ref = self.actors.get(uuid)
        if ref is not None and ref.is_alive() and uuid not in self.replacing:
            return {"ref": ref, "known": True}
        known = self.known.get(uuid)
        if isinstance(message, ForgetDevice):
            self._purge(uuid)
            return {"ref": None, "known": known is not None}
        if known is None:
            return {"ref": None, "known": False}
        known = self.known[uuid] = dataclasses.replace(known, protocol=Dialect(message.dialect))
        return {"ref": None, "known": True, "dialect": known.protocol,
                "dialect_locked": dialects.locks_dialect(known.protocol, known.boot_id), "boot_id": known.boot_id}

    def _purge(self, uuid: str) -> None:
        """Forget what is kept of a device (its actor, if any, has started afresh)."""
        self.known.pop(uuid, None)
        if uuid in self.online:
            self.online.discard(uuid)
            if self.heartbeat is not None:
                self.heartbeat.tell(OnlineCount(len(self.online)))
        self.counters["forgotten"] += 1

    def _tell(self, uuid: str, message: Any) -> None:
        if uuid in self.down_until:
            if time.time() < self.down_until[uuid]:
                self._drop(uuid, message)
                return
            del self.down_until[uuid]
        held = self.held.get(uuid)
        if held is not None:
            held.append(message)
            return
        self._actor(uuid).tell(message)

    def _release(self, uuid: str, messages: list[Any]) -> None:
        for message in messages:
            if isinstance(message, (Retire, GetSnapshot, Drain)):
                continue
            if isinstance(message, (Deadline, TransitionRefused)) and uuid not in self.actors:
                continue  # for an actor that stopped idle: no need to start one for it
            self._tell(uuid, message)

    def _drop(self, uuid: str, message: Any) -> None:
        """A device left down after too many crashes: complete its messages (counted)."""
        self.counters["dropped_device_down"] += 1
        if isinstance(message, DeviceInput) and message.messages:
            self.mqtt.tell(Complete(tuple(m.token for m in message.messages)))

    def _actor(self, uuid: str) -> Any:
        ref = self.actors.get(uuid)
        if ref is not None and ref.is_alive():
            self.actors.move_to_end(uuid)
            return ref
        restarts = len(self.restart_history.get(uuid, ()))
        ref = self.make_device(uuid, self.known.get(uuid), restarts)
        self.actors[uuid] = ref
        self.counters["spawned"] += 1
        self._evict()
        return ref

    def _evict(self) -> None:
        """Over the bound: ask the least recently seen offline devices to stop."""
        excess = len(self.actors) - len(self.retiring) - self.max_actors
        if excess <= 0:
            return
        for uuid in list(self.actors):
            if excess <= 0:
                break
            if uuid in self.online or uuid in self.retiring:
                continue
            self.retiring.add(uuid)
            self.held.setdefault(uuid, [])
            self.actors[uuid].tell(Retire())
            excess -= 1

    # -- failures ----------------------------------------------------------

    def _failed(self, failure: DeviceFailed) -> None:
        uuid = failure.uuid
        self.counters["device_failures"] += 1
        logger.error("device actor %s failed (%s); restarting it", uuid, failure.error)
        self.retiring.discard(uuid)  # a Retire it got is handed back, never answered
        if failure.poison_tokens:
            # The message that crashed it: completed so the broker does not
            # hand it back forever; counted so it is seen.
            self.counters["poison_messages"] += len(failure.poison_tokens)
            self.mqtt.tell(Complete(failure.poison_tokens))
        now = time.time()
        history = self.restart_history.setdefault(uuid, deque())
        history.append(now)
        while history and now - history[0] > RESTART_WINDOW_S:
            history.popleft()
        if len(history) > MAX_RESTARTS:
            self.down_until[uuid] = now + RESTART_WINDOW_S
            self.counters["devices_left_down"] += 1
            logger.error("device actor %s failed %d times within %.0f s; leaving it down for %.0f s",
                         uuid, len(history), RESTART_WINDOW_S, RESTART_WINDOW_S)
        else:
            # Its commands were in its memory: ask the store for them again.
            self.store.send(ReloadCommands(uuid))
        # Until the failed actor has handed back its mailbox (Drained), the
        # device's new messages wait here: a second actor must not start.
        self.replacing[uuid] = list(failure.unhandled)
        self.held.setdefault(uuid, [])
        ref = self.actors.get(uuid)
        if ref is not None and ref.is_alive():
            ref.tell(Drain())
        else:
            self._replace(uuid)

    def _replace(self, uuid: str) -> None:
        """The failed actor has handed back everything: its replacement (or,
        for a device left down, completion) gets it first, then what was held."""
        messages = self.replacing.pop(uuid, []) + self.held.pop(uuid, [])
        self.actors.pop(uuid, None)
        if time.time() >= self.down_until.get(uuid, 0.0):
            self._actor(uuid)  # at once, not at its next message: its liveness deadline must run
        self._release(uuid, messages)

    # -- inspection ----------------------------------------------------------

    def device_refs(self) -> dict[str, Any]:
        return dict(self.actors)

    def summary(self) -> str:
        return f"{len(self.actors)} actors, {len(self.online)} online, {len(self.known)} known"

    def state(self) -> dict:
        return {
            "actors": len(self.actors),
            "max_actors": self.max_actors,
            "known": len(self.known),
            "online": len(self.online),
            "left_down": sorted(self.down_until),
            "replacing": sorted(self.replacing),
            **({"ownership": self.owned.state(time.time()),
                "parked": sum(len(v) for v in self.parked.values())} if self.owned is not None else {}),
        }


