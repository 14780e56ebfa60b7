"""Ownership (actors/rules/ownership.py): bucket leases of several
instances over a lease table with compare-and-set semantics (a model of
storage/leases.py, which tests/storage/test_leases.py holds to the same
rules on both engines)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.rules.ownership import Held, Lease, Ownership, live_instances
from protocol.buckets import bucket_of

TTL = 9.0


class Table:
    """The lease table: one row per bucket, writes as compare-and-set."""

    def __init__(self, buckets: int) -> None:
        self.rows = {b: Lease(b, None, 0, 0.0) for b in range(buckets)}
        self.beats: dict[str, float] = {}

    def take(self, bucket: int, owner: str, read_epoch: int, now: float, ttl: float) -> int | None:
        row = self.rows[bucket]
        if row.epoch != read_epoch or (row.owner is not None and row.expires_at > now):
            return None
        self.rows[bucket] = Lease(bucket, owner, row.epoch + 1, now + ttl)
        return row.epoch + 1

    def renew(self, bucket: int, owner: str, epoch: int, now: float, ttl: float) -> bool:
        row = self.rows[bucket]
        if row.owner != owner or row.epoch != epoch:
            return False
        self.rows[bucket] = Lease(bucket, owner, epoch, now + ttl)
        return True

    def release(self, bucket: int, owner: str, epoch: int) -> bool:
        row = self.rows[bucket]
        if row.owner != owner or row.epoch != epoch:
            return False
        self.rows[bucket] = Lease(bucket, None, epoch, 0.0)
        return True


def visit(o: Ownership, table: Table, now: float) -> None:
    """One round of the actor that drives `o`."""
    table.beats[o.instance_id] = now
    live = live_instances(list(table.beats.items()), now, o.ttl_s)
    plan = o.plan(now, table.rows.values(), live)
    renewed, failed, taken, released = [], [], {}, []
    for b, e in plan.renew.items():
        (renewed if table.renew(b, o.instance_id, e, now, o.ttl_s) else failed).append(b)
    for b, e in plan.take.items():
        got = table.take(b, o.instance_id, e, now, o.ttl_s)
        if got is not None:
            taken[b] = got
    for b, e in plan.release.items():
        if table.release(b, o.instance_id, e):
            released.append(b)
    o.apply(now, renewed, taken, released, failed)


def test_bucket_of_is_stable_and_spread():
    assert bucket_of("relay-01") == bucket_of("relay-01")
    assert 0 <= bucket_of("relay-01") < 256
    assert bucket_of("relay-01", 16) == bucket_of("relay-01") % 16
    spread = {bucket_of(f"dev-{i}") for i in range(5000)}
    assert len(spread) == 256
    with pytest.raises(ValueError):
        bucket_of("x", 0)


def test_one_instance_takes_every_bucket_and_keeps_them():
    table = Table(64)
    a = Ownership("a", buckets=64, ttl_s=TTL)
    visit(a, table, 0.0)
    assert len(a.held) == 64 and all(row.owner == "a" for row in table.rows.values())
    for t in (3.0, 6.0, 9.0, 12.0):
        visit(a, table, t)
    assert len(a.held) == 64 and a.lost == 0
    assert a.owns("anything", 12.0)
    # acting stops a margin before the lease runs out, if renewals stop
    assert a.epoch_of(0, 12.0 + TTL - a.margin_s - 0.01) is not None
    assert a.epoch_of(0, 12.0 + TTL - a.margin_s) is None


def test_shares_even_out_when_instances_join_and_a_dead_ones_are_taken_over():
    table = Table(256)
    insts = [Ownership(name, ttl_s=TTL) for name in "abc"]
    t = 0.0
    visit(insts[0], table, t)
    assert len(insts[0].held) == 256
    # b and c join; a gives back 8 a round until no share is above the fair
    # one, ceil(256 / 3) = 86, and every bucket is held
    for _ in range(40):
        t += 3.0
        for o in insts:
            visit(o, table, t)
    assert max(len(o.held) for o in insts) == 86 and min(len(o.held) for o in insts) >= 84
    assert sum(len(o.held) for o in insts) == 256
    # c dies (no more visits): its buckets go to a and b in the first round
    # after its lease ran out, both taking part of them (their heirs)
    dead = insts.pop()
    died_at = t
    before = {o.instance_id: len(o.held) for o in insts}
    taken_by = None
    while taken_by is None:
        t += 3.0
        for o in insts:
            visit(o, table, t)
        if sum(len(o.held) for o in insts) == 256:
            taken_by = t
    assert taken_by - died_at <= TTL + 1e-9
    assert all(len(o.held) > before[o.instance_id] + 20 for o in insts), [len(o.held) for o in insts]
    assert dead.epoch_of(next(iter(dead.held)), taken_by) is None
    # then whichever took more than its fair share gives the excess back
    for _ in range(5):
        t += 3.0
        for o in insts:
            visit(o, table, t)
    assert sorted(len(o.held) for o in insts) == [128, 128]
    assert sum(len(o.held) for o in insts) == 256


def test_a_dead_instances_buckets_go_to_their_heirs_at_once_even_at_the_fair_share():
    """Two survivors at their fair share already (the dead one's heartbeat
    still counted): each takes exactly the expired buckets it is heir to,
    so between them all are taken in one round, none twice."""
    table = Table(64)
    a, b = Ownership("a", buckets=64, ttl_s=TTL), Ownership("b", buckets=64, ttl_s=TTL)
    for bucket in range(64):
        owner = "abc"[bucket % 3]
        table.rows[bucket] = Lease(bucket, owner, 1, 9.0 if owner == "c" else 100.0)  # c's ran out 1 s ago
    for o in (a, b):
        o.held = {x: Held(1, 100.0) for x in range(64) if table.rows[x].owner == o.instance_id}
    live = ["a", "b", "c"]  # c's heartbeat within a lease: the fair share is 22, a and b hold 22 and 21
    plans = {o.instance_id: o.plan(10.0, table.rows.values(), live) for o in (a, b)}
    dead = {x for x in range(64) if x % 3 == 2}
    for x in dead:
        heir = a.heir(x, live)
        assert heir == b.heir(x, live)
        if heir != "c":
            assert x in plans[heir].take  # beyond the fair share
    # c as heir (a stalled instance whose heartbeat still comes): nobody
    # else takes those in the first round; a round later, room below the
    # fair share does (b's one)
    orphans = {x for x in dead if a.heir(x, live) == "c"}
    assert orphans and not orphans & (set(plans["a"].take) | set(plans["b"].take))
    later = {o.instance_id: o.plan(12.5, table.rows.values(), live) for o in (a, b)}
    assert not orphans & set(later["a"].take) and len(orphans & set(later["b"].take)) == 1
    # with c's heartbeat gone as well (the usual case), every one has an heir
    live = ["a", "b"]
    plans = {o.instance_id: o.plan(10.0, table.rows.values(), live) for o in (a, b)}
    assert set(plans["a"].take) | set(plans["b"].take) == dead
    assert not set(plans["a"].take) & set(plans["b"].take)
    assert plans["a"].take and plans["b"].take


def test_instances_started_together_share_the_buckets_from_their_second_round():
    """Announcing first, the first round only writes the heartbeat: three instances
    starting within a round of each other all count three at their first
    takes, so none takes more than its fair share and none gives back."""
    table = Table(256)
    insts = [Ownership(name, ttl_s=TTL, announce_first=True) for name in "abc"]
    for k, o in enumerate(insts):
        visit(o, table, 0.1 * k)
        assert not o.held and o.next_visit(0.1 * k, table.rows.values()) == pytest.approx(0.1 * k + TTL / 3)
    assert all(row.owner is None for row in table.rows.values())
    for k, o in enumerate(insts):
        visit(o, table, TTL / 3 + 0.1 * k)
    assert sorted(len(o.held) for o in insts) == [84, 86, 86] and not any(o.leaving for o in insts)
    for k, o in enumerate(insts):
        visit(o, table, 2 * TTL / 3 + 0.1 * k)
    assert sum(len(o.held) for o in insts) == 256 and max(len(o.held) for o in insts) == 86


def test_a_renewal_refused_drops_the_bucket_at_once():
    table = Table(4)
    a = Ownership("a", buckets=4, ttl_s=TTL)
    visit(a, table, 0.0)
    # the row was taken over behind a's back (a stalled past its lease)
    table.rows[2] = Lease(2, "b", table.rows[2].epoch + 1, 20.0)
    visit(a, table, 3.0)
    assert 2 not in a.held and a.lost == 1 and a.epoch_of(2, 3.0) is None


def test_expire_forgets_leases_not_renewed_in_time():
    a = Ownership("a", buckets=4, ttl_s=TTL)
    table = Table(4)
    visit(a, table, 0.0)
    assert a.expire(TTL - 0.1) == []
    assert sorted(a.expire(TTL)) == [0, 1, 2, 3] and not a.held


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), kills=st.lists(st.integers(0, 2), min_size=1, max_size=6))
def test_no_bucket_is_ever_acted_for_by_two_instances(seed, kills):
    """Three instances visiting at jittered times, some stalled for longer
    than a lease (a frozen process comes back): at no instant do two of them
    act for the same bucket, and the epoch of a bucket only grows."""
    rng = random.Random(seed)
    table = Table(32)
    insts = [Ownership(name, buckets=32, ttl_s=TTL) for name in "abc"]
    stalled_until = {o.instance_id: 0.0 for o in insts}
    kill_at = {round(rng.uniform(5, 80), 1): insts[k] for k in kills}
    last_epoch = {b: 0 for b in range(32)}
    t = 0.0
    while t < 120.0:
        t = round(t + rng.uniform(0.2, 1.5), 3)
        for at, victim in list(kill_at.items()):
            if t >= at:
                stalled_until[victim.instance_id] = t + rng.uniform(TTL, 3 * TTL)
                del kill_at[at]
        for o in insts:
            if t >= stalled_until[o.instance_id] and rng.random() < 0.5:
                o.expire(t)
                visit(o, table, t)
        for b in range(32):
            acting = [o.instance_id for o in insts if o.epoch_of(b, t) is not None]
            assert len(acting) <= 1, (t, b, acting)
            assert table.rows[b].epoch >= last_epoch[b]
            last_epoch[b] = table.rows[b].epoch
    # every stall is over (the last ends before 107 s): within a lease and
    # two rounds every bucket is held again, none stranded, none twice
    for _ in range(5):
        t += TTL / 3
        for o in insts:
            o.expire(t)
            visit(o, table, t)
    held = [b for o in insts for b in o.held]
    assert sorted(held) == list(range(32)), held


def test_a_bucket_is_given_back_a_round_after_it_stopped_being_acted_for():
    """Above its fair share an instance first stops acting (core is told
    with that round's Owned), and releases the rows only at its next round,
    so a next owner can never act while this one's core still might."""
    table = Table(4)
    a, b = Ownership("a", buckets=4, ttl_s=TTL), Ownership("b", buckets=4, ttl_s=TTL)
    visit(a, table, 0.0)
    visit(b, table, 1.0)  # b is live; every bucket is still a's
    visit(a, table, 3.0)  # fair share 2: a gives up two
    leaving = sorted(a.leaving)
    assert len(a.held) == 2 and len(leaving) == 2 and all(a.epoch_of(x, 3.0) is None for x in leaving)
    assert all(table.rows[x].owner == "a" for x in leaving)  # still a's in the table: nobody may take them
    visit(b, table, 4.0)
    assert not b.held
    visit(a, table, 6.0)  # released now
    assert not a.leaving and all(table.rows[x].owner is None for x in leaving)
    visit(b, table, 7.0)
    assert sorted(b.held) == leaving and a.state(7.0)["leaving"] == 0


def test_a_restart_under_the_same_id_looks_when_its_old_leases_run_out():
    """Rows with this instance's id that it does not hold (a run before a
    restart left them) run out like a dead instance's: the next visit is
    just after, not a round later."""
    o = Ownership("a", buckets=4, ttl_s=9.0)
    old = [Lease(0, "a", 3, 101.0), Lease(1, "b", 1, 108.0)]
    assert 101.0 < o.next_visit(100.0, old) <= 101.1
    o.held[0] = Held(3, 101.0)  # held, renewed by this instance every round: no early visit for it
    assert o.next_visit(100.0, old) == 103.0


def test_buckets_given_back_stop_being_acted_for_at_once_and_are_released_next_round():
    table = Table(4)
    a = Ownership("a", buckets=4, ttl_s=TTL)
    visit(a, table, 0.0)
    a.give_back([1, 2])
    assert sorted(a.held) == [0, 3] and a.epoch_of(1, 0.1) is None and a.epoch_of(2, 0.1) is None
    visit(a, table, 3.0)
    assert table.rows[1].owner is None and table.rows[2].owner is None and not a.leaving
    visit(a, table, 6.0)  # free again: taken back (with a fresh load, in the actor)
    assert sorted(a.held) == [0, 1, 2, 3]


def test_the_next_visit_comes_just_after_another_instances_lease_runs_out_if_before_the_round():
    o = Ownership("a", buckets=4, ttl_s=9.0)  # a round is 3 s
    live = [Lease(0, "a", 1, 109.0), Lease(1, "b", 1, 107.0), Lease(2, None, 0, 0.0)]
    assert o.next_visit(100.0, live) == 103.0  # b renews in time: a round from now
    dead = [*live, Lease(3, "c", 4, 101.5)]  # c stopped renewing: its lease runs out before the round
    assert 101.5 < o.next_visit(100.0, dead) <= 101.6
    # expired already, or held (renewed by this instance): the round as usual
    o.held[0] = Held(1, 100.5)
    assert o.next_visit(100.0, [Lease(3, "c", 4, 99.0), Lease(0, "a", 1, 100.5)]) == 103.0
