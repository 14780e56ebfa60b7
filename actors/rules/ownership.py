"""Bucket leases of one gateway instance (issue 13): what it holds, what it
asks the lease table for next, and whether it may act for a device now.

No threads, no database: the actor that will drive it reads the lease table
(storage/leases.py), asks `plan` what to renew, take and give back, carries
the plan out with compare-and-set writes, and hands the outcome to `apply`.

The rules:

* Each instance aims at its fair share, ceil(buckets / live instances).
  It takes free buckets, in an order of its own (a hash of its id and the
  bucket), so that instances starting together rarely race for the same
  rows; a race lost is harmless, the table's compare-and-set decides.
* A bucket whose lease ran out (its owner died or stalled) goes to one
  live instance chosen by rendezvous hashing (the highest hash of instance
  id and bucket): every live instance computes the same choice from the
  heartbeats, so a dead instance's buckets are spread over the others and
  each takes its part in the first round after the lease ran out, beyond
  its fair share if need be (the excess is given back later, as below).
  Capped at the fair share, takes of the survivors collided and the rest
  waited for later rounds: a take-over of more than one lease. A round
  after the lease ran out, others below their fair share take such a
  bucket too, so it is not stranded if its heir is slow.
* Its first round only says it is here (the heartbeat, written by the
  actor before the plan) and takes nothing (`announce_first`); it takes
  from the next round on. Instances started together then all count each
  other before any takes, and share the buckets from the start; without
  it the first one took every bucket and gave them back 8 a round (over a
  minute for three instances with the default lease).
* It renews what it holds every round; a bucket whose renewal failed (the
  epoch moved: someone else took it) is dropped at once.
* Above its fair share (a new instance joined) it gives back a few buckets
  a round (`release_per_round`), so shares even out without a stampede.
  It stops acting for them first (`leaving`: no longer held, not renewed)
  and releases them in the table only at its next round: core has been
  told by then, so the next owner, which can take a bucket only once it
  is released, never acts while this instance's core still does.
* It acts for a bucket only while its lease is safely inside its expiry:
  `owns` says no from `expires_at - margin_s` on, so an instance whose
  renewals stall (a frozen process, a lost database) stops acting before
  another may take the bucket over. Liveness of a device whose owner died
  therefore resumes within one lease period (plus a round).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Collection, Iterable, Sequence

from protocol.buckets import DEFAULT_BUCKETS, bucket_of

# How long after another instance's lease runs out a round looks at it:
# enough for the expiry to have passed on the database's clock as well.
TAKE_OVER_DELAY_S = 0.05


@dataclass(frozen=True)
class Lease:
    """One row of the lease table as read."""

    bucket: int
    owner: str | None
    epoch: int
    expires_at: float


@dataclass(frozen=True)
class Held:
    epoch: int
    expires_at: float


@dataclass
class LeasePlan:
    renew: dict[int, int] = field(default_factory=dict)  # bucket -> the epoch held
    take: dict[int, int] = field(default_factory=dict)  # bucket -> the epoch read (compare-and-set on it)
    release: dict[int, int] = field(default_factory=dict)  # bucket -> the epoch held

    def __bool__(self) -> bool:
        return bool(self.renew or self.take or self.release)


class Ownership:
    def __init__(self, instance_id: str, buckets: int = DEFAULT_BUCKETS, ttl_s: float = 10.0,
                 margin_s: float | None = None, release_per_round: int = 8, announce_first: bool = False) -> None:
        if not instance_id:
            raise ValueError("an instance needs an id")
        if ttl_s <= 0:
            raise ValueError(f"lease time must be positive, got {ttl_s}")
        self.instance_id = instance_id
        self.buckets = buckets
        self.ttl_s = ttl_s
        # Stop acting a third of a lease before it runs out: renewals come
        # every third of a lease (`round_s`), so one late round is absorbed.
        self.margin_s = ttl_s / 3 if margin_s is None else margin_s
        self.release_per_round = release_per_round
        self.announcing = announce_first  # until the first plan
        self.held: dict[int, Held] = {}
        self.leaving: dict[int, Held] = {}  # given up, not acted for; released at the next round
        self.lost = 0  # buckets that went to another instance while held
        self._order = sorted(range(buckets), key=self._rank)

    @property
    def round_s(self) -> float:
        """How often the lease table should be visited."""
        return self.ttl_s / 3

    def _rank(self, bucket: int) -> bytes:
        return _hash(self.instance_id, bucket)

    def next_visit(self, now: float, leases: Iterable[Lease]) -> float:
        """When to visit the table next: a round from now, or just after the
        soonest expiry of a bucket another instance holds, if that comes
        first. A live owner renews a round after a round, so its leases
        always run out later than our next round; a dead one's run out in
        between, and are then taken by their heirs within one lease of its
        last renewal rather than a lease and a round."""
        # Any running lease but those this instance renews: rows with its
        # own id that it does not hold (left by a run before a restart
        # under the same id) run out like a dead instance's.
        soonest = min((lease.expires_at for lease in leases
                       if lease.owner is not None and lease.expires_at > now
                       and lease.bucket not in self.held and lease.bucket not in self.leaving), default=math.inf)
        return min(now + self.round_s, soonest + TAKE_OVER_DELAY_S)

    def fair_share(self, live_instances: int) -> int:
        return math.ceil(self.buckets / max(1, live_instances))

    def heir(self, bucket: int, live: Iterable[str]) -> str:
        """The live instance that takes `bucket` when its lease ran out:
        the same answer on every instance that sees the same heartbeats."""
        return max(live, key=lambda instance: (_hash(instance, bucket), instance))

    def plan(self, now: float, leases: Iterable[Lease], live: Collection[str]) -> LeasePlan:
        """What to do this round, from the table as just read and the ids
        of the live instances (heartbeat within a lease)."""
        live = set(live) | {self.instance_id}
        table = {lease.bucket: lease for lease in leases}
        plan = LeasePlan()
        if self.announcing:
            self.announcing = False  # the first round: the heartbeat is all
            return plan
        # What the table says we no longer hold is gone already.
        for bucket in list(self.held):
            row = table.get(bucket)
            if row is None or row.owner != self.instance_id or row.epoch != self.held[bucket].epoch:
                self._drop(bucket)
        # Given up last round (core has been told since): back to the table now.
        for bucket, held in list(self.leaving.items()):
            row = table.get(bucket)
            if row is None or row.owner != self.instance_id or row.epoch != held.epoch:
                del self.leaving[bucket]  # gone already (it ran out and was taken)
            else:
                plan.release[bucket] = held.epoch
        fair = self.fair_share(len(live))
        excess = len(self.held) - fair
        if excess > 0:
            for bucket in sorted(self.held, key=self._rank, reverse=True)[:min(excess, self.release_per_round)]:
                self.leaving[bucket] = self.held.pop(bucket)
        for bucket, held in self.held.items():
            plan.renew[bucket] = held.epoch
        room = fair - len(self.held)
        for bucket in self._order:
            if bucket in self.held or bucket in self.leaving:
                continue
            row = table.get(bucket)
            if row is None:
                continue  # not in the table yet: whoever creates the rows comes first
            if row.owner is None:
                wanted = room > 0
            elif row.expires_at <= now:
                # Its heir takes it; anyone with room once the heir has let
                # a round go by (stalled, or it sees other heartbeats).
                wanted = (self.heir(bucket, live) == self.instance_id
                          or (room > 0 and row.expires_at <= now - self.round_s))
            else:
                continue
            if wanted:
                plan.take[bucket] = row.epoch
                room -= 1
        return plan

    def apply(self, now: float, renewed: Iterable[int] = (), taken: dict[int, int] | None = None,
              released: Iterable[int] = (), failed: Iterable[int] = ()) -> None:
        """The plan's outcome: buckets renewed (their expiry moves to now +
        ttl), taken (bucket -> the new epoch), given back, and renewals that
        failed (someone else holds the bucket now)."""
        expires = now + self.ttl_s
        for bucket in renewed:
            if bucket in self.held:
                self.held[bucket] = Held(self.held[bucket].epoch, expires)
        for bucket, epoch in (taken or {}).items():
            self.held[bucket] = Held(epoch, expires)
        for bucket in released:
            self.held.pop(bucket, None)
            self.leaving.pop(bucket, None)
        for bucket in failed:
            self._drop(bucket)

    def give_back(self, buckets: Iterable[int]) -> None:
        """Stop acting for held buckets at once and release them at the next
        round (as above the fair share), e.g. when their devices could not
        be loaded: free then, they are taken again with a fresh load, not
        left in the table under this instance until their lease runs out."""
        for bucket in buckets:
            held = self.held.pop(bucket, None)
            if held is not None:
                self.leaving[bucket] = held

    def _drop(self, bucket: int) -> None:
        if self.held.pop(bucket, None) is not None:
            self.lost += 1

    def epoch_of(self, bucket: int, now: float) -> int | None:
        """The epoch to fence a write with, if this instance may act for the
        bucket now."""
        held = self.held.get(bucket)
        if held is None or now >= held.expires_at - self.margin_s:
            return None
        return held.epoch

    def owns(self, uuid: str, now: float) -> bool:
        return self.epoch_of(bucket_of(uuid, self.buckets), now) is not None

    def expire(self, now: float) -> list[int]:
        """Forget buckets whose lease ran out without a renewal (the table
        could not be reached): another instance may hold them by now."""
        gone = [b for b, held in self.held.items() if now >= held.expires_at]
        for bucket in gone:
            self._drop(bucket)
        for bucket in [b for b, held in self.leaving.items() if now >= held.expires_at]:
            del self.leaving[bucket]
        return gone

    def state(self, now: float) -> dict:
        acting = [b for b in self.held if self.epoch_of(b, now) is not None]
        soonest = min((h.expires_at for h in self.held.values()), default=None)
        return {"instance_id": self.instance_id, "buckets": self.buckets, "held": len(self.held),
                "acting": len(acting), "leaving": len(self.leaving), "lease_s": self.ttl_s,
                "expires_in_s": None if soonest is None else round(soonest - now, 3), "lost": self.lost}


def _hash(instance_id: str, bucket: int) -> bytes:
    return hashlib.blake2b(f"{instance_id}/{bucket}".encode(), digest_size=8).digest()


def live_instances(heartbeats: Sequence[tuple[str, float]], now: float, ttl_s: float) -> list[str]:
    """Ids of the instances whose heartbeat (instance id, time) is within
    one lease."""
    return [instance for instance, at in heartbeats if now - at < ttl_s]
