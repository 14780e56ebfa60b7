"""The store process's Retention actor, on a real SQLite file."""

from __future__ import annotations

import threading
import time

import pytest

from actors.messages import Deadline, GetSnapshot, Schedule
from actors.retention import DAY_S, MB, Retention
from gateway.settings import Settings
from storage import migrations, prune
from storage import telemetry as telemetry_repo
from storage.db import WriteWaits, close_database, database, open_database, timed_write_transaction
from tests.support.broker import wait_until


class FakeScheduler:
    def __init__(self) -> None:
        self.scheduled: list[Schedule] = []

    def tell(self, message: Schedule) -> None:
        self.scheduled.append(message)


@pytest.fixture
def db(tmp_path):
    path = str(tmp_path / "autocore.db")
    open_database(path)
    migrations.migrate()
    yield path
    close_database()


def rows(device: str, n: int, ts: float, received_at: float | None = None, start_seq: int = 0, tag: str | None = None):
    received = ts if received_at is None else received_at
    return [(device, 1, start_seq + i, 0, ts, received, "analog", "fuel", float(i), "%", tag, None) for i in range(n)]


def ids() -> list[int]:
    return [i for (i,) in database.execute_sql("SELECT id FROM telemetry ORDER BY id").fetchall()]


def run_to_end(retention: Retention, limit: int = 10000) -> int:
    """Step a run through, keeping the pauses it asks the scheduler for."""
    steps = 0
    retention.step(time.time())
    steps += 1
    while retention.phase is not None:
        wait = retention.scheduler.scheduled[-1].at - time.time()
        if wait > 0:
            time.sleep(wait)
        retention.step(time.time())
        steps += 1
        assert steps < limit
    return steps


def test_old_rows_go_in_small_batches_and_new_ones_stay(db):
    now = time.time()
    telemetry_repo.insert_rows(database, rows("old", 2300, now - 40 * DAY_S))
    telemetry_repo.insert_rows(database, rows("new", 700, now - 3600))
    # a reading a device kept 40 days and sent just now: pruned 30 days after it came
    telemetry_repo.insert_rows(database, rows("replayed", 5, now - 40 * DAY_S, received_at=now))
    scheduler = FakeScheduler()
    retention = Retention(Settings(retention_days=30, db_max_mb=0), scheduler, batch=500, pause_s=0.01,
                          interval_s=60)
    steps = run_to_end(retention)
    assert telemetry_repo.count("old") == 0
    assert telemetry_repo.count("new") == 700
    assert telemetry_repo.count("replayed") == 5
    state = retention.state()
    assert state["pruned_age"] == 2300 and state["pruned_size"] == 0 and state["runs"] == 1
    assert state["batches"] == 5  # 500 at most per transaction
    assert steps <= 8  # walked the old prefix and one window of new rows, not the whole table
    assert state["last_run"]["pruned"] == 2300
    # between batches a short pause; after the run, the next one an interval later
    gaps = [m.at for m in scheduler.scheduled]
    assert all(m.key == "retention" for m in scheduler.scheduled)
    assert gaps[-1] - time.time() == pytest.approx(60, abs=2)
    assert all(g - time.time() < 1 for g in gaps[:-1])


def test_size_limit_prunes_the_oldest_rows_first(db):
    now = time.time()
    for k in range(6):
        telemetry_repo.insert_rows(database, rows(f"d{k}", 4000, now - 100 + k, start_seq=0, tag="x" * 100))
    used = prune.used_bytes()
    limit_mb = used / MB / 2
    before = ids()
    retention = Retention(Settings(retention_days=0, db_max_mb=limit_mb), FakeScheduler(), batch=1000, pause_s=0)
    run_to_end(retention)
    after = ids()
    assert prune.used_bytes() <= limit_mb * MB
    assert 0 < len(after) < len(before)
    assert after == before[-len(after):]  # the newest rows are the ones kept
    state = retention.state()
    assert state["pruned_size"] == len(before) - len(after)
    assert state["db_used_mb"] <= limit_mb + 0.01


def test_over_the_limit_with_nothing_to_prune_stops(db):
    retention = Retention(Settings(retention_days=0, db_max_mb=0.001), FakeScheduler(), batch=100)
    run_to_end(retention)
    assert retention.state()["over_limit_without_telemetry"] is True


def test_off_when_both_limits_are_zero(db):
    scheduler = FakeScheduler()
    retention = Retention(Settings(retention_days=0, db_max_mb=0, db_reserve_mb=0), scheduler)
    retention.on_start()
    assert scheduler.scheduled == []
    assert retention.summary() == "off" and retention.state()["enabled"] is False


def test_the_reserve_is_checked_on_its_own_timer(db):
    scheduler = FakeScheduler()
    retention = Retention(Settings(retention_days=0, db_max_mb=0, db_reserve_mb=64), scheduler)
    retention.on_start()
    assert [s.key for s in scheduler.scheduled] == ["retention-reserve"]


def test_short_of_the_reserve_the_oldest_rows_go_until_there_is_room(db, monkeypatch):
    """The disk's free space is what statvfs says; here it is made to say
    little (the real disk is tested in tests/integration/test_disk_full.py)."""
    now = time.time()
    telemetry_repo.insert_rows(database, rows("dev", 20000, now))
    free = {"bytes": 1 * MB}
    monkeypatch.setattr("actors.retention.free_disk_bytes", lambda path: free["bytes"])
    retention = Retention(Settings(retention_days=0, db_max_mb=0, db_reserve_mb=2), FakeScheduler(),
                          reserve_batch=1000, pause_s=0)
    steps = 0
    while retention.reserve.short_since is not None or steps == 0:
        retention.reserve_step(time.time())
        steps += 1
        assert steps < 100
    state = retention.state()["reserve"]
    assert state["pruned_for_reserve"] > 0 and state["shortages"] == 1
    assert prune.reusable_bytes() >= 1 * MB  # the database has room inside itself again
    assert telemetry_repo.count("dev") == 20000 - state["pruned_for_reserve"]
    assert ids()[0] == state["pruned_for_reserve"] + 1  # the first stored went first


def test_ingest_is_never_held_up_for_long(db):
    """Writes go on while a large backlog of old rows is pruned: every
    insert transaction waits for the write lock at most about one small
    delete. (The wait at BEGIN, not the insert's whole time: on a busy
    machine that grows with the CPU it does not get, lock or no lock.)"""
    now = time.time()
    telemetry_repo.insert_rows(database, rows("old", 20000, now - 40 * DAY_S))
    latencies: list[float] = []
    stop = threading.Event()

    def ingest() -> None:
        seq = 0
        try:
            while not stop.is_set():
                waits = WriteWaits()
                with timed_write_transaction(waits):
                    telemetry_repo.insert_rows(database, rows("live", 50, time.time(), start_seq=seq))
                latencies.append(waits.begin_s)
                seq += 50
                time.sleep(0.002)
        finally:
            database.close()

    writer = threading.Thread(target=ingest)
    writer.start()
    try:
        retention = Retention(Settings(retention_days=30), FakeScheduler(), batch=500, pause_s=0.02)
        run_to_end(retention)
    finally:
        stop.set()
        writer.join(10)
    assert telemetry_repo.count("old") == 0
    assert len(latencies) > 20
    state = retention.state()
    batch_ms_max = state["batch_ms_max"]
    assert state["batches"] >= 20000 // 500  # small deletes, one transaction each
    assert max(latencies) < 0.05 + 2 * batch_ms_max / 1000, (batch_ms_max, sorted(latencies)[-5:])


def test_the_actor_runs_on_its_own_with_the_scheduler(db):
    from actors.scheduler import Scheduler

    now = time.time()
    telemetry_repo.insert_rows(database, rows("old", 1500, now - 40 * DAY_S))
    scheduler = Scheduler.start("store")
    actor = Retention.start(Settings(retention_days=30), scheduler, first_delay_s=0, batch=400, pause_s=0.001)
    try:
        snap = wait_until(lambda: (lambda s: s if s["state"]["runs"] >= 1 else None)(actor.ask(GetSnapshot(), timeout=5)),
                          10, what="the first retention run")
        assert snap["name"] == "Retention" and snap["process"] == "store"
        assert snap["state"]["pruned_age"] == 1500
        assert snap["handled"] >= 4  # one Deadline per batch
        assert snap["summary"].startswith("idle, 1500 rows pruned in 1 runs")
        assert telemetry_repo.count("old") == 0
    finally:
        actor.stop()
        scheduler.stop()


def test_deadline_is_the_only_message_it_takes(db):
    retention = Retention(Settings(retention_days=30), FakeScheduler())
    assert retention.handle(Deadline("retention", time.time())) is None
    assert retention.runs == 1  # nothing to prune, no size limit: one step


def test_a_database_error_gives_the_run_up_and_retries_later(db):
    scheduler = FakeScheduler()
    retention = Retention(Settings(retention_days=30), scheduler, interval_s=60)
    database.execute_sql("DROP TABLE telemetry")
    assert retention.step(time.time()) is False
    assert retention.counters["errors"] == 1 and retention.phase is None
    assert scheduler.scheduled[-1].at - time.time() == pytest.approx(60, abs=2)
