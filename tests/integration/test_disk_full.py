"""A full disk (issue 11), on a real small file system (tmpfs), a real broker
and the gateway as a subprocess: back-pressure instead of a crash loop, and
the free-space reserve that keeps the disk from filling at all."""

from __future__ import annotations

import json

from tests.integration.devices import retained
from tests.integration.helpers import Stream, inspect
from tests.support.broker import wait_until
from tests.support.small_disk import fill_until, free_bytes, small_filesystem


def stored(db, uuid: str) -> int:
    return db.one("SELECT COUNT(DISTINCT seq) FROM telemetry WHERE device_uuid = ?", uuid) or 0


def writer_state(gw) -> dict:
    return inspect(gw.socket_path, "stats")["stats"]["writer"]


def gateway_storage(broker) -> dict:
    raw = retained(broker.port, "autocore/gateway/status")
    return json.loads(raw)["storage"] if raw else {}


def test_a_full_disk_holds_back_acknowledgements_and_catches_up_without_a_restart(gateways, broker, tmp_path):
    from tests.integration.helpers import Db

    with small_filesystem(tmp_path / "small", 8) as small:
        gw = gateways(db_path=small / "autocore.db", db_reserve_mb=0, device_rate=100000, device_burst=100000)
        pid = gw.proc.pid
        ballast = fill_until(small, 1 << 20)  # about 1 MiB left
        stream = Stream(broker.port, "v1-disk", 20000).start()
        stream.wait(60)  # the broker has them all, whatever the gateway does
        line = gw.wait_for_line("disk holding the database is full", 30)
        assert "nothing more is acknowledged" in line
        state = wait_until(lambda: writer_state(gw)["store"]["state"] == "disk_full" and writer_state(gw), 10,
                           what="inspect: store state disk_full")
        assert state["store"]["waiting_batches"] >= 1 and state["store"]["disk_free_mb"] < 1
        wait_until(lambda: gateway_storage(broker).get("state") == "disk_full", 10,
                   what="the gateway status saying disk_full")
        assert gw.proc.poll() is None and gw.proc.pid == pid
        db = Db(small / "autocore.db")
        try:
            held = stored(db, "v1-disk")
            assert held < 20000
            ballast.unlink()  # room again
            wait_until(lambda: stored(db, "v1-disk") == 20000, 60, what="every message stored after the disk was freed")
            wait_until(lambda: writer_state(gw)["store"]["state"] == "ok", 10, what="store state ok again")
            wait_until(lambda: inspect(gw.socket_path, "stats")["stats"]["mqtt"]["unacknowledged"] == 0, 10,
                       what="every message acknowledged")
            wait_until(lambda: gateway_storage(broker).get("state") == "ok", 10, what="the gateway status ok again")
        finally:
            db.close()
        assert gw.proc.poll() is None and gw.proc.pid == pid  # no restart, no crash
        assert sum("disk holding the database is full" in l for l in gw.lines) == 1
        assert any("writable again" in l for l in gw.lines)
        assert not any("Traceback" in l for l in gw.lines)
        gw.stop()


def test_the_reserve_prunes_old_telemetry_before_the_disk_fills(gateways, broker, tmp_path):
    from tests.integration.helpers import Db

    with small_filesystem(tmp_path / "small", 24) as small:
        gw = gateways(db_path=small / "autocore.db", db_reserve_mb=8, device_rate=100000, device_burst=100000,
                      db_wal_max_mb=2)
        fill_until(small, 14 << 20)  # 14 MiB left, 8 of them the reserve
        stream = Stream(broker.port, "v1-reserve", 60000).start()
        stream.wait(120)
        wait_until(lambda: inspect(gw.socket_path, "stats")["stats"]["mqtt"]["counters"].get("acked", 0) >= 60000, 90,
                   what="every message acknowledged")
        db = Db(small / "autocore.db")
        try:
            # The reserve is checked every second or two: the event follows the stream.
            events = wait_until(lambda: db.rows("SELECT detail FROM device_events WHERE event = 'disk_reserve'"), 10,
                                what="a disk_reserve event")
            assert json.loads(events[0]["detail"])["state"] == "short"
            wait_until(lambda: inspect(gw.socket_path, "stats")["stats"]["retention"]["reserve"]["short_for_s"] is None,
                       20, what="room inside the database again")
            assert db.one("SELECT MAX(seq) FROM telemetry WHERE device_uuid = 'v1-reserve'") == 60000
            kept = db.one("SELECT COUNT(*) FROM telemetry")
            assert kept < 60000  # the oldest went for the reserve
        finally:
            db.close()
        retention = inspect(gw.socket_path, "stats")["stats"]["retention"]
        assert retention["reserve"]["pruned_for_reserve"] > 0
        assert writer_state(gw)["counters"].get("disk_full", 0) == 0  # it never came to that
        assert free_bytes(small) > 4 << 20
        assert any("below the reserve" in l for l in gw.lines)
        gw.stop()
