"""A small simulated fleet (v1 and firmware 2.2) against a real Mosquitto and
the gateway as a subprocess: devices come online, telemetry is stored,
commands of both dialects end as they should, and the Wills take the
devices offline at the end. Read back from the SQLite file."""

from __future__ import annotations

import sqlite3
import time

import pytest

from simulator import Fleet, FleetConfig, Fw22Options, V1Options
from storage.commands import get_command, insert_command
from storage.db import close_database, open_database

from tests.support.broker import wait_until
from tests.support.gateway import GatewayProcess

FLEET = {"can_gateway": 1, "sensor_board": 1, "mobile": 1, "relay_board": 1, "display_small": 1,
         "fw22_relay": 1, "fw22_relay_switching": 1, "fw22_display": 1}
SOURCES = {
    "can_gateway": {"can", "can_raw", "status"},
    "sensor_board": {"analog", "sensor", "status"},
    "mobile": {"gps", "system", "status"},
    "relay_board": {"relay", "sensor", "status"},
    "display_small": {"system", "status"},
    "fw22_relay": {"relay", "status"},
    "fw22_relay_switching": {"relay", "status"},
    "fw22_display": {"status"},
}


@pytest.fixture
def gateway(broker, tmp_path):
    gw = GatewayProcess(tmp_path / "gw", broker.port, fw22_periods="esp32_relay=2,esp32_display=1",
                        device_timeout_s=5, command_timeout_s=3)
    gw.start()
    yield gw
    if gw.proc is not None and gw.proc.poll() is None:
        gw.kill()


@pytest.fixture
def commands(gateway):
    open_database(str(gateway.db_path))
    yield
    close_database()


def query(path, sql: str, args: tuple = ()) -> list[tuple]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        return conn.execute(sql, args).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def finished(command_id: int):
    row = get_command(command_id)
    return row if row is not None and row.is_final else None


def test_a_mixed_fleet_comes_online_stores_telemetry_and_answers_commands(broker, gateway, commands):
    config = FleetConfig(
        devices=FLEET, port=broker.port, duration=60, msgpack_fraction=0.5, seed=3,
        v1=V1Options(telemetry_interval=0.2, can_hz=10, status_interval=1, relay_status_interval=1,
                     latency=(0.01, 0.05)),
        fw22=Fw22Options(state_interval=0.5, display_interval=0.5),
    )
    fleet = Fleet(config)
    kinds = {d.uuid: d.kind for d in fleet.devices}
    db = gateway.db_path
    fleet.start()
    try:
        def every_device_online():
            rows = query(db, "SELECT uuid, protocol, status FROM gateway_devices")
            online = {uuid: protocol for uuid, protocol, status in rows if status == "online"}
            return online if set(online) >= set(kinds) else None

        online = wait_until(every_device_online, 20, what="every simulated device online in the database")
        assert {online[u] for u in kinds if kinds[u].startswith("fw22")} == {"fw22"}
        assert {online[u] for u in kinds if not kinds[u].startswith("fw22")} == {"v1"}

        def every_source_stored():
            rows = query(db, "SELECT device_uuid, source FROM telemetry GROUP BY device_uuid, source")
            have: dict[str, set] = {}
            for uuid, source in rows:
                have.setdefault(uuid, set()).add(source)
            return have if all(SOURCES[kind] <= have.get(uuid, set()) for uuid, kind in kinds.items()) else None

        wait_until(every_source_stored, 20, what="telemetry of every section from every device")

        # Commands, as the Config App writes them.
        by_kind = {kind: uuid for uuid, kind in kinds.items()}
        now = time.time()
        v1 = insert_command(by_kind["relay_board"], "relay_control", {"relay_id": 1, "state": True}, now=now, ttl_s=60)
        switched = insert_command(by_kind["fw22_relay_switching"], "relay_control", {"channel": 3, "state": True},
                                  now=now, ttl_s=60)
        held = insert_command(by_kind["fw22_relay"], "relay_control", {"channel": 2, "state": True, "duration": 1500},
                              now=now, ttl_s=60)
        row = wait_until(lambda: finished(v1), 15, what="the v1 command to finish")
        assert (row.status, row.result) == ("succeeded", {"relay_id": 1, "state": True})
        row = wait_until(lambda: finished(switched), 15, what="the 2.2 relays/set command to finish")
        assert row.status == "succeeded"
        row = wait_until(lambda: finished(held), 15, what="the 2.2 hold to finish")
        assert row.status == "succeeded"
        relay = fleet.devices[[d.uuid for d in fleet.devices].index(by_kind["fw22_relay"])]
        assert relay.counters["heartbeats"] >= 2
        wait_until(lambda: query(db, "SELECT detail FROM device_events WHERE device_uuid = ? AND event = ?",
                                 (by_kind["fw22_relay"], "safety_shutoff")), 10,
                   what="the relay's safety_shutoff after the hold")
    finally:
        fleet.stop()
        assert fleet.join(10)

    # The 2.2 boards' 1970 clocks are never used: their rows take received_at.
    fw22_uuids = tuple(u for u, k in kinds.items() if k.startswith("fw22"))
    skewed = query(db, f"SELECT COUNT(*) FROM telemetry WHERE device_uuid IN ({','.join('?' * len(fw22_uuids))}) "
                       "AND ts != received_at", fw22_uuids)
    assert skewed == [(0,)]
    # v1 telemetry is keyed by this boot and numbered from 1 without gaps.
    can = next(d for d in fleet.devices if d.kind == "can_gateway")
    seqs = [s for (s,) in query(db, "SELECT DISTINCT seq FROM telemetry WHERE device_uuid = ? AND boot_id = ? "
                                    "AND source = 'can' ORDER BY seq", (can.uuid, can.boot_id))]
    assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) >= 10

    # The fleet's connections closed without DISCONNECT: every Will takes its device offline.
    wait_until(lambda: all(s == "offline" for (s,) in query(db, "SELECT status FROM gateway_devices")), 15,
               what="every device offline after the fleet stopped")
    assert gateway.stop() == 0
