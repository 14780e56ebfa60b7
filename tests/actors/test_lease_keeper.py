"""The LeaseKeeper on a real PostgreSQL: two instances share the buckets,
a dead one's buckets go to the other within a lease, core is told what it
may act for (with the devices and commands of buckets gained), the command
feed is told what it may claim, and the writer's fence follows the table.
Driven round by round with a clock of the test's (no threads, no sleeps)."""

from __future__ import annotations

import time

import pytest

from actors.lease_keeper import LeaseKeeper
from actors.messages import Deadline, FeedOwnership, KnownDevice, Owned, Schedule
from gateway.settings import Settings
from protocol.buckets import bucket_of
from storage import leases
from storage.db import close_database, open_database
from storage.migrations import migrate

BUCKETS = 8


class Channel:
    def __init__(self):
        self.sent = []

    def send(self, message):
        self.sent.append(message)

    def owned(self) -> list[Owned]:
        return [m for m in self.sent if isinstance(m, Owned)]


class Feed:
    def __init__(self):
        self.told = []

    def tell(self, message):
        self.told.append(message)


class Clock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


DEVICES = tuple(KnownDevice(f"dev-{i}", "online") for i in range(20))


def keeper(pg_url, name: str, clock: Clock):
    s = Settings(db_url=pg_url, share_group="depot", instance_id=name, lease_buckets=BUCKETS, lease_s=9.0)
    channel, feed = Channel(), Feed()
    k = LeaseKeeper(s, scheduler=None, channel=channel, load=lambda: (DEVICES, ()), feed=feed, clock=clock)
    k.on_start()
    return k, channel, feed


@pytest.fixture
def pg(pg_url):
    open_database(pg_url)
    migrate()
    yield pg_url
    close_database()


def test_two_instances_share_the_buckets_and_a_dead_ones_go_to_the_other(pg):
    clock = Clock()
    a, a_chan, a_feed = keeper(pg, "a", clock)
    a.visit()  # its first round only announces it
    assert a_chan.owned() == [] and leases.heartbeats() == [("a", clock.now)]
    assert [owner for _, owner, _, _ in leases.read()] == [None] * BUCKETS
    clock.now += 1
    a.visit()
    first = a_chan.owned()[-1]
    assert len(first.epochs) == BUCKETS and first.gained == tuple(range(BUCKETS))
    assert first.act_until == pytest.approx(clock.now + 9.0 - 3.0)
    assert {d.uuid for d in first.devices} == {d.uuid for d in DEVICES}  # every bucket gained: every device loaded
    assert isinstance(a_feed.told[-1], FeedOwnership) and len(a_feed.told[-1].epochs) == BUCKETS

    b, b_chan, _ = keeper(pg, "b", clock)
    clock.now += 1
    b.visit()  # b is live now (its first round), and every bucket is a's
    assert b_chan.owned() == []
    clock.now += 1
    a.visit()  # a sees two instances: stops acting for what is above its fair share
    assert len(a_chan.owned()[-1].epochs) == BUCKETS // 2
    assert [owner for _, owner, _, _ in leases.read()] == ["a"] * BUCKETS  # not given back before core knows
    clock.now += 1
    a.visit()  # and gives it back a round later
    assert sum(owner is None for _, owner, _, _ in leases.read()) == BUCKETS // 2
    assert a.state()["leaving"] == 0
    clock.now += 1
    b.visit()
    b_owned = b_chan.owned()[-1]
    assert len(b_owned.epochs) == BUCKETS // 2
    assert {bucket_of(d.uuid, BUCKETS) for d in b_owned.devices} <= set(b_owned.gained)
    assert not set(dict(a_chan.owned()[-1].epochs)) & set(dict(b_owned.epochs))

    # a dies (no more rounds): within one lease (plus a round) b holds everything
    died_at = clock.now
    while len(b_chan.owned()[-1].epochs) < BUCKETS:
        clock.now += b.rules.round_s
        b.visit()
        assert clock.now - died_at <= 9.0 + b.rules.round_s + 1e-6
    # the epochs moved: a write a decided under its old leases is fenced off
    a_epochs = dict(a_chan.owned()[-1].epochs)
    assert all(not leases.holds(bk, "a", e) for bk, e in a_epochs.items())
    assert all(leases.holds(bk, "b", e) for bk, e in b_chan.owned()[-1].epochs)
    assert b.rules.lost == 0 and a.state()["held"] == BUCKETS // 2  # a never learned: it is dead


def test_a_stalled_instance_stops_acting_before_another_may_take_over(pg):
    clock = Clock()
    a, a_chan, _ = keeper(pg, "a", clock)
    a.visit()
    a.visit()
    act_until = a_chan.owned()[-1].act_until
    b, b_chan, _ = keeper(pg, "b", clock)
    # b can take a's buckets only once they expired, after a stopped acting
    while not b_chan.owned():
        clock.now += 1.0
        b.visit()
    taken_at = clock.now
    assert taken_at >= act_until + 3.0  # a's margin (a third of the lease) before the expiry
    a.visit()  # a comes back: its renewals fail, the buckets are counted lost
    assert a.rules.lost == BUCKETS and len(a_chan.owned()[-1].epochs) == 0


def test_what_other_instances_saw_of_owned_devices_is_passed_on_once(pg):
    from storage import devices as device_repo

    clock = Clock(time.time())
    a, a_chan, _ = keeper(pg, "a", clock)
    a.visit()
    a.visit()  # a holds every bucket
    device_repo.ensure_device("dev-7", clock.now, "v1")
    device_repo.touch_last_seen([("dev-7", clock.now + 1)])  # another instance's write
    clock.now += a.rules.round_s
    a.visit()
    assert a_chan.owned()[-1].seen == (("dev-7", clock.now - a.rules.round_s + 1),)
    clock.now += a.rules.round_s
    a.visit()
    assert a_chan.owned()[-1].seen == ()  # told once


class Scheduler:
    def __init__(self):
        self.told = []

    def tell(self, message):
        self.told.append(message)


@pytest.mark.parametrize("round_takes, next_in", [(0.5, 2.5), (2.0, 1.0), (5.0, 0.0)])
def test_rounds_keep_their_cadence_however_long_one_takes(round_takes, next_in):
    """The next round is due a round after the last one started (at once
    if that has passed): a slow round does not push the ones after it,
    which would let core's acting window (two rounds) run out between them."""
    clock = Clock()
    s = Settings(db_url="postgresql://unused/x", share_group="depot", instance_id="a", lease_buckets=BUCKETS,
                 lease_s=9.0)
    scheduler = Scheduler()
    k = LeaseKeeper(s, scheduler=scheduler, channel=Channel(), load=lambda: ((), ()), clock=clock)
    k.visit = lambda: setattr(clock, "now", clock.now + round_takes)  # type: ignore[method-assign]
    k.handle(Deadline("lease-round", clock.now))
    [schedule] = scheduler.told
    assert isinstance(schedule, Schedule) and schedule.at == pytest.approx(clock.now + next_in)
