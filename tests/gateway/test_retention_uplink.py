"""Retention with the fleet uplink on (issue 14): rows the fleet has go
first; rows it lacks only under size pressure, oldest first, counted."""

from __future__ import annotations

import time

from actors.retention import DAY_S, MB, Retention
from gateway.settings import Settings
from storage import events as event_repo
from storage import prune
from storage import telemetry as telemetry_repo
from storage import uplink as uplink_repo
from storage.db import database
from tests.gateway.test_retention import FakeScheduler, db, ids, rows, run_to_end  # noqa: F401 (fixture)

UPLINK = "mqtt://127.0.0.1:1"


def fill(now: float, devices: int = 6, per: int = 4000) -> list[int]:
    for k in range(devices):
        telemetry_repo.insert_rows(database, rows(f"d{k}", per, now - 100 + k, tag="x" * 100))
    return ids()


def test_under_size_pressure_uplinked_rows_go_first_and_unsent_ones_stay(db):
    before = fill(time.time())
    third = len(before) // 3
    acked = (before[third], before[2 * third - 1])  # the middle third is at the fleet
    uplink_repo.save_cursor({"telemetry": [acked]}, time.time())
    limit_mb = prune.used_bytes() / MB * 0.8
    retention = Retention(Settings(retention_days=0, db_max_mb=limit_mb, uplink_url=UPLINK), FakeScheduler(),
                          batch=1000, pause_s=0)
    run_to_end(retention)
    after = set(ids())
    gone = set(before) - after
    assert gone and all(acked[0] <= i <= acked[1] for i in gone)  # only rows the fleet has
    assert retention.state()["dropped_unsent"] == 0


def test_past_the_uplinked_rows_the_oldest_unsent_go_counted_with_an_event(db):
    before = fill(time.time())
    acked = (before[-1000], before[-1])  # only the newest 1000 are at the fleet
    uplink_repo.save_cursor({"telemetry": [acked]}, time.time())
    limit_mb = prune.used_bytes() / MB / 2
    retention = Retention(Settings(retention_days=0, db_max_mb=limit_mb, uplink_url=UPLINK, gateway_id="gw"),
                          FakeScheduler(), batch=1000, pause_s=0)
    run_to_end(retention)
    after = ids()
    assert not set(range(acked[0], acked[1] + 1)) & set(after)  # the uplinked ones went first
    unsent_gone = [i for i in before if i not in after and not acked[0] <= i <= acked[1]]
    assert unsent_gone == before[:len(unsent_gone)]  # then the oldest unsent
    state = retention.state()
    assert state["dropped_unsent"] == len(unsent_gone) > 0
    (event,) = event_repo.list_events("gw", event="uplink_dropped_unsent")
    assert event.detail["rows"] == len(unsent_gone)


def test_age_alone_never_drops_what_the_fleet_lacks(db):
    now = time.time()
    telemetry_repo.insert_rows(database, rows("old", 2000, now - 40 * DAY_S))
    old = ids()
    uplink_repo.save_cursor({"telemetry": [(old[0], old[999])]}, now)
    retention = Retention(Settings(retention_days=30, db_max_mb=0, uplink_url=UPLINK), FakeScheduler(), batch=500,
                          pause_s=0)
    run_to_end(retention)
    assert ids() == old[1000:]
    assert retention.state()["dropped_unsent"] == 0
