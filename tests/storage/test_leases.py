"""storage/leases.py on both engines: compare-and-set takes, renewals that
notice a lost bucket, releases, the fencing term, and two writers racing
for the same bucket through their own connections (only one wins)."""

from __future__ import annotations

import threading

import pytest

from storage import leases
from storage.db import close_database, open_database
from storage.models import Device


@pytest.fixture
def lease_db(db):
    leases.create_tables()
    leases.ensure_buckets(8)
    return db


def test_buckets_are_made_once(lease_db):
    assert leases.ensure_buckets(8) == 0
    assert leases.ensure_buckets(10) == 2
    assert [r[0] for r in leases.read()] == list(range(10))
    assert all(owner is None and epoch == 0 for _, owner, epoch, _ in leases.read())


def test_take_is_compare_and_set_on_the_epoch_and_the_expiry(lease_db):
    assert leases.take(3, "a", 0, now=100.0, ttl_s=10.0) == 1
    # b read epoch 0 too: too late
    assert leases.take(3, "b", 0, now=101.0, ttl_s=10.0) is None
    # b read epoch 1, but a's lease is still running
    assert leases.take(3, "b", 1, now=105.0, ttl_s=10.0) is None
    # after the expiry b takes it over, and the epoch moves
    assert leases.take(3, "b", 1, now=110.0, ttl_s=10.0) == 2
    row = leases.read()[3]
    assert row[1:] == ("b", 2, 120.0)


def test_take_many_takes_in_one_go_only_what_is_still_free_or_expired_at_the_epoch_read(lease_db):
    assert leases.take_many("a", {0: 0, 1: 0, 2: 0}, now=100.0, ttl_s=10.0) == {0: 1, 1: 1, 2: 1}
    assert leases.take(3, "c", 0, 100.0, 5.0) == 1  # c's runs out at 105
    # a dead instance's (3, expired), a live one's (0, not yet), a stale epoch (4), a free one (5)
    got = leases.take_many("b", {0: 1, 3: 1, 4: 7, 5: 0}, now=106.0, ttl_s=10.0)
    assert got == {3: 2, 5: 1}
    rows = {r[0]: r[1:] for r in leases.read()}
    assert rows[3] == ("b", 2, 116.0) and rows[5] == ("b", 1, 116.0)
    assert rows[0] == ("a", 1, 110.0) and rows[4] == (None, 0, 0.0)
    assert leases.take_many("b", {}, 106.0, 10.0) == {}


def test_renewal_notices_a_bucket_taken_over(lease_db):
    assert leases.take(1, "a", 0, 0.0, 10.0) == 1
    assert leases.take(2, "a", 0, 0.0, 10.0) == 1
    assert leases.take(2, "b", 1, 10.0, 10.0) == 2  # a stalled; b took bucket 2
    renewed, lost = leases.renew("a", {1: 1, 2: 1}, 11.0, 10.0)
    assert renewed == [1] and lost == [2]
    assert leases.read()[1][3] == 21.0 and leases.read()[2][1] == "b"


def test_release_only_what_is_still_held(lease_db):
    leases.take(4, "a", 0, 0.0, 10.0)
    leases.take(5, "a", 0, 0.0, 10.0)
    assert leases.release("a", {4: 1, 5: 7}) == [4]  # 5 at epoch 7 is not a's lease
    assert leases.read()[4][1] is None and leases.read()[4][2] == 1
    assert leases.take(4, "b", 1, 1.0, 10.0) == 2


def test_a_fenced_write_happens_only_under_the_lease(lease_db):
    Device.insert(uuid="dev-1", device_type="relay_board", status="online", first_seen=0, last_seen=0).execute()
    leases.take(6, "a", 0, 0.0, 10.0)

    def set_status(owner: str, epoch: int, status: str) -> int:
        return (Device.update(status=status)
                .where((Device.uuid == "dev-1") & leases.fenced(6, owner, epoch)).execute())

    assert set_status("a", 1, "offline") == 1
    leases.take(6, "b", 1, 20.0, 10.0)  # a's lease ran out and b took the bucket (epoch 2)
    assert set_status("a", 1, "online") == 0  # a, fenced off
    assert set_status("b", 2, "online") == 1
    assert Device.get(Device.uuid == "dev-1").status == "online"


def test_heartbeats_and_the_cluster_view(lease_db):
    leases.heartbeat("a", 100.0, {"share_group": "g"})
    leases.heartbeat("b", 101.0)
    leases.heartbeat("a", 102.0, {"share_group": "g"})
    assert sorted(leases.heartbeats()) == [("a", 102.0), ("b", 101.0)]
    for b in (0, 1, 2):
        leases.take(b, "a", 0, 100.0, 10.0)
    leases.take(3, "b", 0, 95.0, 10.0)  # expires at 105
    view = {i["instance_id"]: i for i in leases.cluster(now=104.0)}
    assert view["a"]["buckets"] == 3 and view["a"]["expires_in_s"] == 6.0 and view["a"]["detail"] == {"share_group": "g"}
    assert view["b"]["buckets"] == 1 and view["b"]["heartbeat_age_s"] == 3.0
    later = {i["instance_id"]: i for i in leases.cluster(now=106.0)}
    assert later["b"]["buckets"] == 0 and later["b"]["expires_in_s"] is None
    assert leases.forget_instances(["b"]) == 1 and [i["instance_id"] for i in leases.cluster(106.0)] == ["a"]
    # a clean stop: no heartbeat any more (not live), the row kept with when
    leases.leave("a", 107.0, {"share_group": "g"})
    assert leases.heartbeats() == [("a", 0.0)]
    [a] = leases.cluster(108.0)
    assert a["heartbeat_age_s"] is None and a["stopped_at"] == 107.0 and a["detail"]["share_group"] == "g"
    # started again: a heartbeat of a first round moves started_at, and the stop is forgotten
    leases.heartbeat("a", 110.0, {"share_group": "g"}, starting=True)
    [a] = leases.cluster(111.0)
    assert a["started_at"] == 110.0 and a["heartbeat_age_s"] == 1.0 and a["stopped_at"] is None
    leases.heartbeat("a", 112.0, {"share_group": "g"})
    assert leases.cluster(112.0)[0]["started_at"] == 110.0


def test_two_connections_racing_for_one_bucket_only_one_wins(lease_db, db_url):
    """Each thread has its own connection (peewee's are per thread); both
    read epoch 0 and try to take every bucket at once: each bucket ends with
    exactly one owner, and each thread's answers agree with the table."""
    close_database()
    open_database(db_url)
    wins: dict[str, list[int]] = {"a": [], "b": []}
    start = threading.Barrier(2)

    def racer(name: str) -> None:
        start.wait()
        for bucket in range(8):
            if leases.take(bucket, name, 0, 50.0, 10.0) is not None:
                wins[name].append(bucket)

    threads = [threading.Thread(target=racer, args=(n,)) for n in wins]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(wins["a"] + wins["b"]) == list(range(8))
    table = {b: owner for b, owner, _, _ in leases.read()}
    assert all(table[b] == name for name, won in wins.items() for b in won)


def test_holds_is_the_fence_of_one_bucket_at_one_epoch(lease_db):
    leases.take(2, "a", 0, 0.0, 10.0)
    assert leases.holds(2, "a", 1)
    assert not leases.holds(2, "a", 0) and not leases.holds(2, "b", 1) and not leases.holds(3, "a", 1)
    leases.take(2, "b", 1, 20.0, 10.0)
    assert not leases.holds(2, "a", 1) and leases.holds(2, "b", 2)


def test_renewal_of_many_buckets_at_once(lease_db):
    leases.ensure_buckets(600)
    held = {b: leases.take(b, "a", 0, 0.0, 10.0) for b in range(600)}
    assert set(held.values()) == {1}
    leases.take(7, "b", 1, 10.0, 10.0)  # a stalled; b took 7
    leases.release("a", {9: 1})  # and a gave 9 back
    renewed, lost = leases.renew("a", {**held, 599: 5}, 11.0, 10.0)  # 599 at an epoch a never had
    assert lost == [7, 9, 599] and renewed == [b for b in range(599) if b not in (7, 9)]
    rows = leases.read()
    assert rows[0][3] == 21.0 and rows[598][3] == 21.0 and rows[599][3] == 10.0
    assert rows[7][1:] == ("b", 2, 20.0) and rows[9][1] is None


@pytest.mark.postgresql_only
def test_instances_taking_and_releasing_overlapping_sets_at_once_never_deadlock(lease_db, db_url):
    """Four connections, each round: read the table, take a random part of
    what is free or expired, give back a random part of their own, in no
    order. Row locks taken in different orders used to deadlock (one
    statement lost after a second, its round failed); takes skip rows
    locked by others now, so none fails, and every take moved an epoch by
    exactly one."""
    import random

    leases.ensure_buckets(64)
    close_database()
    open_database(db_url)
    errors: list[str] = []
    takes: dict[int, int] = {}
    lock = threading.Lock()
    start = threading.Barrier(4)

    def instance(name: str, seed: int) -> None:
        rng = random.Random(seed)
        start.wait()
        for i in range(100):
            now = 1000.0 + i
            rows = leases.read()
            wanted = {b: e for b, o, e, x in rows if (o is None or x <= now) and rng.random() < 0.6}
            mine = [(b, e) for b, o, e, _ in rows if o == name]
            rng.shuffle(mine)
            try:
                got = leases.take_many(name, wanted, now, 0.5)
                leases.release(name, dict(mine[:rng.randint(0, len(mine))]))
            except Exception as exc:  # noqa: BLE001 - any failure is the finding
                errors.append(f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
                continue
            with lock:
                errors.extend(f"{name} took {b} at epoch {e}, read {wanted[b]}" for b, e in got.items()
                              if e != wanted[b] + 1)
                for b in got:
                    takes[b] = takes.get(b, 0) + 1

    threads = [threading.Thread(target=instance, args=(n, k)) for k, n in enumerate("abcd")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert sum(takes.values()) > 100
    assert {b: e for b, _, e, _ in leases.read() if e} == takes
