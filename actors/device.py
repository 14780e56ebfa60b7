"""Device: the actor of one device, a thin shell around `DeviceLogic`.

It feeds what arrives into the logic with the time, then sends what the
logic decided: the `DeviceWrite` it built to the store (carrying the tokens
of the messages it answers for, so they are acknowledged after a durable
commit, and the commands and retained availability it publishes, which go
out once the states they announce are durable), and its next wake-up to
the Scheduler.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any, Callable

import pykka

from actors.base import GatewayActor
from actors.messages import (
    Bounced,
    CancelCommand,
    Complete,
    Deadline,
    DeviceFailed,
    DeviceInput,
    DeviceMessage,
    DeviceStatus,
    Drain,
    Drained,
    ForgetDevice,
    Forgotten,
    Publish,
    Retire,
    Retired,
    Schedule,
    SeenElsewhere,
    SetDialect,
    TakeCommands,
    Token,
    TransitionRefused,
)
from actors.rules.device import DIALECT_CONFLICT, DeviceLogic, DeviceStep
from protocol.values import Publication

logger = logging.getLogger("autocore.device")


NOT_ACTING_RETRY_S = 0.5  # a deadline met while the lease is not safe to act on is looked at again after this


class Device(GatewayActor):
    name = "Device"
    # Asked by the Inspector: an error there goes back to the asker (pykka
    # sets it on the future) and the actor carries on, as for any ask.
    ASKED = (SetDialect, ForgetDevice)

    def __init__(
        self,
        logic: DeviceLogic,
        *,
        supervisor: Any,
        mqtt: Any,
        scheduler: Any,
        store: Any,
        availability: Callable[[str, bool], Publication],
        encode_command: Any,  # actors.encoders.CommandEncoder
        restarts: int = 0,
        deadlines_via: Any = None,
        acting: Callable[[str, float], bool] | None = None,
    ) -> None:
        super().__init__()
        self.logic = logic
        self.uuid = logic.uuid
        self.supervisor = supervisor
        self.mqtt = mqtt
        self.scheduler = scheduler
        self.store = store
        self.availability = availability
        self.encode_command = encode_command
        self.restarts = restarts
        # Who the Scheduler tells when a deadline comes: the Router, which
        # passes it on behind every message received before it. Told to this
        # actor directly, a deadline overtakes messages still queued in the
        # Router when the core is behind, and a device that did report in
        # time is declared offline (5000 devices on a busy machine).
        self.deadlines_via = deadlines_via
        # Several instances: whether this instance may act for the device
        # now (its bucket's lease); None: one instance, always.
        self.acting = acting
        self._wake_at: float | None = None
        self._current: Any = None
        # While a DeviceInput is handled: the messages not yet started, and
        # the tokens of the one in hand until they are passed on.
        self._not_started: list[DeviceMessage] = []
        self._unemitted: list[Token] = []
        self._failed = False

    def on_start(self) -> None:
        self._schedule()

    # -- inputs ------------------------------------------------------------

    def handle(self, message: Any) -> Any:
        """A message that raises fails the actor here, not through pykka's
        on_failure: the actor stays alive and hands every later message back
        to the supervisor until `Drain`, so nothing sent to it is lost and
        the supervisor (which holds the device's new messages meanwhile)
        never sees it dead before it has replaced it."""
        if self._failed:
            return self._bounce(message)
        if isinstance(message, self.ASKED):
            return self._handle(message)
        try:
            return self._handle(message)
        except Exception as exc:
            self._fail(exc)
            return None

    def _handle(self, message: Any) -> Any:
        self._current = message
        now = time.time()
        logic = self.logic
        if isinstance(message, DeviceInput):
            self._not_started = list(message.messages)
            self._unemitted = []
            if message.seen is not None:
                step = logic.seen(now, message.seen)
                if step.refused:
                    logger.warning("device %s: %d 2.2 message(s) took the fast path although it is a v1 device with "
                                   "a boot_id; their readings were stored", self.uuid, message.seen.count)
                self._refused(step)
                self._emit(step)
            for m in message.messages:
                self._not_started.pop(0)
                self._unemitted = [m.token]
                # A refused message is acknowledged (with its event, if one is
                # written) but nothing of it is stored: the logic leaves its rows out.
                step = logic.message(now, m)
                self._refused(step)
                self._emit(step)
        elif isinstance(message, Deadline) and self.acting is not None and not self.acting(self.uuid, now):
            # The lease is between renewals past its safe margin (the store
            # late): judge nothing now, look again shortly. A bucket lost for
            # good stops this actor instead.
            self.counters["deadlines_deferred"] += 1
            self._wake_at = now + NOT_ACTING_RETRY_S
            self.scheduler.tell(Schedule(("device", self.uuid), self._wake_at, self.deadlines_via or self.actor_ref))
        elif isinstance(message, Deadline):
            self._wake_at = None
            # Through the Router (deadlines_via), every message received
            # before the time asked for has been seen: liveness is judged as
            # of that time, not of a later `now` the core's own lag made.
            as_of = message.at if self.deadlines_via is not None else None
            self._emit(logic.deadline(now, as_of=as_of))
        elif isinstance(message, SeenElsewhere):
            self._emit(logic.seen_elsewhere(now, message.at))
        elif isinstance(message, TakeCommands):
            self._emit(logic.take_commands(message.commands, now))
        elif isinstance(message, CancelCommand):
            self._emit(logic.cancel(message.command_id, now))
        elif isinstance(message, TransitionRefused):
            self.counters["transitions_refused"] += 1
            logger.warning("device %s: the database refused command %s -> %s (it is %s)",
                           self.uuid, message.command_id, message.wanted, message.actual)
        elif isinstance(message, SetDialect):
            logic.set_dialect(message.dialect)
            self._schedule()  # the timeout changed with the dialect: a shorter one wakes earlier
            # The supervisor's record follows (after any DeviceStatus this
            # actor sent before), so an evicted and rebuilt actor keeps it.
            self.supervisor.tell(DeviceStatus(self.uuid, logic.known(), logic.idle()))
            self._current = None
            return {"dialect": logic.dialect, "dialect_locked": logic.dialect_locked, "boot_id": logic.liveness.boot_id}
        elif isinstance(message, ForgetDevice):
            # As for a uuid never seen: the next message registers it afresh.
            # Its commands in flight are in the database; the Inspector asks
            # the store for them again (ReloadCommands).
            self.logic = logic.fresh()
            self._wake_at = None
            self.supervisor.tell(Forgotten(self.uuid))
            self._current = None
            return True
        elif isinstance(message, Retire):
            idle = logic.idle()
            self.supervisor.tell(Retired(self.uuid, logic.known(), idle))
            if idle:
                self.stop()
        else:
            return super().handle(message)
        self._current = None
        return None

    def _refused(self, step: DeviceStep) -> None:
        if step.refused and any(event == DIALECT_CONFLICT for _, event, _ in step.write.events):
            detail = next(d for _, event, d in step.write.events if event == DIALECT_CONFLICT)
            logger.warning("device %s: refused a 2.2 message (%s: %s; %d since the last such event): it spoke v1 "
                           "with a boot_id, and 2.2 boards share one account. If it really is a 2.2 board now: "
                           "gateway devices dialect %s fw22", self.uuid, detail.get("kind"), detail.get("refused"),
                           detail.get("count"), self.uuid)

    # -- outputs -----------------------------------------------------------

    def _emit(self, step: DeviceStep) -> None:
        now = time.time()
        write = step.write
        tokens = write.tokens
        # A command goes out only once its `sent` (this write) is durable:
        # the store hands its publications back with the commit
        # (Committed.publish), so a power cut can never take back a state
        # whose command the device already got; so does the availability
        # this write's status announces. A hold's later heartbeats carry no
        # state and go at once.
        held_back: tuple[tuple[int | None, Publication], ...] = ()
        if step.availability is not None:
            # The retained availability says what the registry will say
            # after a cut: it goes out with the status it announces.
            held_back += ((None, self.availability(self.uuid, step.availability == "online")),)
        held_back += tuple((spec.id, publication) for spec, attempt in step.sends
                           for publication in self.encode_command(self.logic, spec, attempt, now))
        held_back += tuple((spec.id, self.encode_command.heartbeat(spec, channel, sequence, now))
                           for spec, channel, sequence in step.beats if sequence == 1)
        if held_back and write.changes_anything():
            write = replace(write, publish=write.publish + held_back)
        else:
            for command_id, publication in held_back:
                self.mqtt.tell(Publish(publication, command=command_id is not None))
        if write.stores_anything():
            self.store.send(write)
        elif tokens:
            self.mqtt.tell(Complete(tokens))  # nothing to store for these
        for token in tokens:
            self._unemitted.remove(token)  # handed on: a crash from here on must not complete it twice
        for spec, channel, sequence in step.beats:
            if sequence != 1:
                self.mqtt.tell(Publish(self.encode_command.heartbeat(spec, channel, sequence, now), command=True))
        if write.status is not None:
            self.supervisor.tell(DeviceStatus(self.uuid, self.logic.known(), self.logic.idle()))
        self._schedule()

    def _schedule(self) -> None:
        """Ask to be woken at the logic's next deadline. A later deadline than
        the one already asked for waits for that one to fire (the logic then
        finds nothing due and asks again), so a stream of messages that only
        pushes the liveness deadline back costs no timer traffic."""
        wake = self.logic.next_wake()
        if wake is None or (self._wake_at is not None and self._wake_at <= wake):
            return
        self._wake_at = wake
        self.scheduler.tell(Schedule(("device", self.uuid), wake, self.deadlines_via or self.actor_ref))

    # -- failure -----------------------------------------------------------

    def _fail(self, exc: Exception) -> None:
        """Tell the supervisor what this actor had not done of the message in
        hand, so it is neither lost nor left unacknowledged; the message that
        crashed it is completed (its data is not retried forever)."""
        logger.error("Unhandled exception in the actor of device %s:", self.uuid, exc_info=exc)
        self._failed = True
        unhandled: tuple[Any, ...] = ()
        poison: tuple[Token, ...] = ()
        if isinstance(self._current, DeviceInput):
            poison = tuple(self._unemitted)  # the message in hand when it crashed
            if self._not_started:
                unhandled = (DeviceInput(messages=tuple(self._not_started)),)
        self._current = None
        self.supervisor.tell(DeviceFailed(self.uuid, unhandled, poison, f"{type(exc).__name__}: {exc}"))

    def _bounce(self, message: Any) -> Any:
        if isinstance(message, Drain):
            self.supervisor.tell(Drained(self.uuid))
            self.stop()
        elif isinstance(message, self.ASKED):
            # The Inspector asks the supervisor again (which answers for the device itself meanwhile).
            raise pykka.ActorDeadError(f"the actor of {self.uuid} failed and is being replaced")
        else:
            self.supervisor.tell(Bounced(self.uuid, message))
        return None

    # -- inspection ----------------------------------------------------------

    def summary(self) -> str:
        lg = self.logic
        return f"{lg.status} {lg.dialect} {len(lg.commands.out)} out {len(lg.commands.queue)} queued"

    def state(self) -> dict:
        return self.logic.snapshot(time.time())

