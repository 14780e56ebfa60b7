"""LeaseKeeper: this instance's bucket leases (several instances, issue 13).

Only with a share group (PostgreSQL). Every `round_s` (a third of the lease
period) it writes its heartbeat, reads the lease table, carries out what the
rules (actors/rules/ownership.py) plan with storage/leases.py's
compare-and-set writes, and tells core (`Owned`) which buckets it may act
for, at which epoch and until when. For buckets just gained it loads their
devices and commands in flight, as the store does for everything at start;
for owned devices it passes on the latest sign of life other instances
stored (their share of the telemetry).

Its own connection (peewee's are per thread), apart from the DbWriter's:
a renewal must not wait behind a telemetry batch, or a busy writer would
cost the instance its leases.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Any, Callable

from actors.base import GatewayActor
from actors.messages import CommandState, Deadline, FeedOwnership, KnownDevice, Owned, Schedule
from actors.rules.ownership import Lease, Ownership, live_instances
from actors.settings import GatewaySettings
from protocol.buckets import bucket_of
from storage import devices as device_repo
from storage import leases
from storage.db import database, database_errors

logger = logging.getLogger("autocore.leases")

PASSED_MAX = 100_000  # devices whose last passed-on sign of life is remembered

Loader = Callable[[], tuple[tuple[KnownDevice, ...], tuple[CommandState, ...]]]


class LeaseKeeper(GatewayActor):
    name = "LeaseKeeper"
    process = "store"

    def __init__(self, settings: GatewaySettings, scheduler: Any, channel: Any, load: Loader, feed: Any = None,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.settings = settings
        self.scheduler = scheduler
        self.channel = channel
        self.load = load  # every known device and command in flight (what StoreReady carries)
        self.feed = feed  # the CommandFeed: claims pending commands of held buckets only
        self.clock = clock
        # The first round only announces this instance; the takes begin a
        # round later (actors/rules/ownership.py).
        self.rules = Ownership(settings.instance_id, settings.lease_buckets, settings.lease_s, announce_first=True)
        self.detail = {"share_group": settings.share_group, "host": socket.gethostname(), "pid": os.getpid()}
        self.sent: tuple[tuple[int, int], ...] | None = None
        self.seen_since = 0.0  # last_seen high-water mark of what was passed on
        self.passed: dict[str, float] = {}  # uuid -> the last_seen last passed on (each time once)
        self.rounds = 0
        self.next_round_at = 0.0  # set by each round
        self.failed_rounds = 0
        self.last_error = ""

    def on_start(self) -> None:
        # The first round comes from the store once core has its StoreReady
        # (`begin`): what it tells core must not overtake that.
        leases.ensure_buckets(self.settings.lease_buckets)
        self.seen_since = self.clock()

    def on_stop(self) -> None:
        # Give the buckets back on a clean stop, and the heartbeat: the
        # others take them at their next round (their fair share grows at
        # once) instead of after the lease and the heartbeat run out.
        try:
            held = {b: h.epoch for b, h in (*self.rules.held.items(), *self.rules.leaving.items())}
            if held:
                leases.release(self.settings.instance_id, held)
            leases.leave(self.settings.instance_id, self.clock(), self.detail)
        except database_errors():
            pass
        if not database.is_closed():
            database.close()

    def handle(self, message: Any) -> Any:
        if isinstance(message, Deadline):
            started = self.clock()
            self.next_round_at = started + self.rules.round_s
            self.visit()
            # Every round_s from the last round's start, not from its end: a
            # slow round (a loaded database or machine) must not stretch the
            # period, or core's acting window (two rounds from a round's
            # start) runs out before the next one, and core stops acting.
            # Sooner when another instance's lease runs out first (the round
            # that read the table says so): a dead owner's buckets are taken
            # by their heirs (actors/rules/ownership.py) as its lease runs out.
            self.scheduler.tell(Schedule("lease-round", max(self.next_round_at, self.clock()), self.actor_ref))
            return None
        return super().handle(message)

    def visit(self) -> None:
        now = self.clock()
        before = {b: h.epoch for b, h in self.rules.held.items()}
        try:
            self._round(now)
            self.rounds += 1
        except database_errors() as exc:
            # The table cannot be reached: keep what is held until it runs
            # out (the rules stop acting a margin before), then forget it.
            self.failed_rounds += 1
            self.counters["failed_rounds"] += 1
            self.last_error = " ".join(str(exc).split())[:200] or type(exc).__name__
            logger.warning("lease round failed: %s", self.last_error)
            self._rollback()
            self.rules.expire(now)
        # Gained: held now and not before, or at another epoch (lost and taken again).
        gained = sorted(b for b, h in self.rules.held.items() if before.get(b) != h.epoch)
        self._tell_core(now, gained)

    def _round(self, now: float) -> None:
        me, ttl = self.settings.instance_id, self.rules.ttl_s
        leases.heartbeat(me, now, self.detail, starting=self.rounds == 0)
        live = live_instances(leases.heartbeats(), now, ttl)
        table = [Lease(*row) for row in leases.read()]
        plan = self.rules.plan(now, table, live)
        self.next_round_at = min(self.next_round_at, self.rules.next_visit(now, table))
        renewed, failed = leases.renew(me, plan.renew, now, ttl)
        taken = leases.take_many(me, plan.take, now, ttl)
        released = leases.release(me, plan.release) if plan.release else []
        self.rules.apply(now, renewed=renewed, taken=taken, released=released, failed=failed)
        if taken:
            self.counters["taken"] += len(taken)
        if released:
            self.counters["released"] += len(released)

    def _rollback(self) -> None:
        try:
            if database.in_transaction():
                database.rollback()
        except database_errors():
            pass

    def _tell_core(self, now: float, gained: list[int]) -> None:
        epochs = tuple(sorted((b, h.epoch) for b, h in self.rules.held.items()))
        expires = min((h.expires_at for h in self.rules.held.values()), default=None)
        devices: tuple[KnownDevice, ...] = ()
        commands: tuple[CommandState, ...] = ()
        seen: tuple[tuple[str, float], ...] = ()
        n = self.rules.buckets
        try:
            if gained:
                wanted = set(gained)
                every, in_flight = self.load()
                devices = tuple(d for d in every if bucket_of(d.uuid, n) in wanted)
                commands = tuple(c for c in in_flight if bucket_of(c.spec.device_uuid, n) in wanted)
            if epochs:
                seen = self._seen_elsewhere({b for b, _ in epochs})
        except database_errors() as exc:
            # Nothing handed over this round: the buckets gained are given
            # back (released at the next round) to be taken again with a
            # fresh load rather than acted for blind.
            self.counters["load_failed"] += 1
            logger.warning("could not load the devices of buckets gained: %s", " ".join(str(exc).split())[:200])
            self._rollback()
            self.rules.give_back(gained)
            epochs = tuple(sorted((b, h.epoch) for b, h in self.rules.held.items()))
            gained = []
        if not epochs and not self.sent:
            return  # nothing held, as core was last told
        act_until = (expires - self.rules.margin_s) if expires is not None else now
        if self.feed is not None and (epochs != self.sent or gained):
            self.feed.tell(FeedOwnership(epochs, gained=bool(gained)))
        self.channel.send(Owned(self.settings.instance_id, epochs, act_until, n, self.rules.ttl_s, expires,
                                self.rules.lost, tuple(gained), devices, commands, seen))
        self.sent = epochs

    def _seen_elsewhere(self, held: set[int]) -> tuple[tuple[str, float], ...]:
        """Devices of held buckets whose last_seen moved since the last look.
        Looked at again a lease back (a write of another instance may commit
        after a later one was seen); a time told twice changes nothing."""
        rows = device_repo.seen_after(self.seen_since - self.rules.ttl_s)
        if rows:
            self.seen_since = max(self.seen_since, max(at for _, at in rows))
        n = self.rules.buckets
        if len(self.passed) > PASSED_MAX:
            self.passed.clear()  # bounded; at worst some times are told twice
        out = []
        for uuid, at in rows:
            if at > self.passed.get(uuid, 0.0) and bucket_of(uuid, n) in held:
                self.passed[uuid] = at
                out.append((uuid, at))
        return tuple(out)

    def summary(self) -> str:
        st = self.rules.state(self.clock())
        return f"{st['held']} buckets held, {st['acting']} acting, {st['lost']} lost"

    def state(self) -> dict:
        st = self.rules.state(self.clock())
        st.update({"share_group": self.settings.share_group, "rounds": self.rounds,
                   "failed_rounds": self.failed_rounds, "last_error": self.last_error,
                   "round_s": round(self.rules.round_s, 3)})
        return st
