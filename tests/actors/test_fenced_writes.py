"""Several instances: the DbWriter applies a device's state changes and
command transitions only while the lease they were decided under holds;
a stale owner's write changes nothing but its rows and last_seen (counted),
and a claim is made only for devices whose bucket is held. On SQLite and on
PostgreSQL (the writer's code is the same; the table decides)."""

from __future__ import annotations

import time

import pytest

from actors.db_writer import DbWriter
from actors.fencing import NOT_OWNED
from actors.messages import ClaimCommands, CommandsRequested, CommandTransition, DeviceWrite, WriteBatch
from gateway.settings import Settings
from protocol.buckets import bucket_of
from protocol.lifecycle import CommandStatus
from storage import commands as command_repo
from storage import devices as device_repo
from storage import leases
from storage.db import close_database, open_database
from storage.migrations import migrate
from tests.support.recorder import Recorder

BUCKETS = 16


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request, tmp_path):
    if request.param == "sqlite":
        return str(tmp_path / "autocore.db")
    return request.getfixturevalue("pg_url")


@pytest.fixture
def writer(location):
    open_database(location)
    migrate()
    leases.ensure_buckets(BUCKETS)
    settings = Settings(db_url=location if "://" in location else None, db_path=location, share_group="depot",
                        instance_id="a", lease_buckets=BUCKETS)
    channel = Recorder()
    yield DbWriter(settings, channel), channel
    close_database()


def test_a_stale_owners_write_changes_nothing_but_its_facts(writer):
    w, channel = writer
    now = time.time()
    bucket = bucket_of("dev-1", BUCKETS)
    epoch = leases.take(bucket, "a", 0, now, 10.0)
    assert epoch == 1
    w.handle(WriteBatch((), (DeviceWrite("dev-1", now, ensure="v1", status="online", boot_id=3, epoch=epoch),), ()))
    assert device_repo.get_device("dev-1").status == "online"
    cid = command_repo.insert_command("dev-1", "ping", {}, now=now, ttl_s=60)
    command_repo.claim([cid], now)
    # b takes the bucket over (a's lease ran out); a, not yet aware, decides "offline" and "sent"
    assert leases.take(bucket, "b", epoch, now + 20, 10.0) == 2
    stale = DeviceWrite("dev-1", now + 21, status="offline", last_seen=now + 21, epoch=epoch,
                        transitions=(CommandTransition(cid, CommandStatus.SENT, attempts=1),))
    w.handle(WriteBatch((), (stale,), ()))
    record = device_repo.get_device("dev-1")
    assert record.status == "online"  # b's to decide
    assert command_repo.get_command(cid).status == "queued"
    assert w.counters["writes_fenced"] == 1
    # a write decided while not owning at all keeps only last_seen
    w.handle(WriteBatch((), (DeviceWrite("dev-1", now + 22, last_seen=now + 22, epoch=NOT_OWNED),), ()))
    assert device_repo.get_device("dev-1").last_seen == pytest.approx(now + 22)
    assert w.counters["writes_not_owned"] == 1


def test_commands_are_claimed_only_for_devices_whose_bucket_is_held(writer):
    w, channel = writer
    now = time.time()
    mine, theirs = "dev-1", next(f"dev-{i}" for i in range(2, 1000)
                                 if bucket_of(f"dev-{i}", BUCKETS) != bucket_of("dev-1", BUCKETS))
    b_mine, b_theirs = bucket_of(mine, BUCKETS), bucket_of(theirs, BUCKETS)
    e_mine = leases.take(b_mine, "a", 0, now, 10.0)
    e_theirs = leases.take(b_theirs, "b", 0, now, 10.0)
    c1 = command_repo.insert_command(mine, "ping", {}, now=now, ttl_s=60)
    c2 = command_repo.insert_command(theirs, "ping", {}, now=now, ttl_s=60)
    # a believes (stale view) it holds both buckets: only the one it really holds is claimed
    w.handle(ClaimCommands((c1, c2), fences=((c1, b_mine, e_mine), (c2, b_theirs, e_theirs))))
    assert command_repo.get_command(c1).status == "queued"
    assert command_repo.get_command(c2).status == "pending"
    [told] = [m for m in channel.told if isinstance(m, CommandsRequested)]
    assert [c.spec.id for c in told.commands] == [c1]
    assert w.counters["claims_fenced"] == 1
