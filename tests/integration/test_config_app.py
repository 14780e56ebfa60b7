"""The real Config App's database (issue 10): a real SQLite file holding the
Config App's schema and an owner's configuration, a real Mosquitto, the
gateway as a subprocess. What the Config App reads back is read with its
own repository queries (tests/support/config_app.py)."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from datetime import datetime

from tests.integration.helpers import Stream
from tests.support import config_app as app
from tests.support.broker import wait_until

RELAY = "esp32-relay-cfg"  # registered over HTTP in app.user_configuration


def fw22_status(uuid: str, online: bool = True, **extra) -> dict:
    body = {"protocol_version": "2.2.0", "uuid": uuid, "timestamp": "1970-01-01T00:00:09Z",
            "status": "online" if online else "offline"}
    if online:
        body.update({"firmware_version": "2.0.1", "ip_address": "0.0.0.0", "wifi_signal": -50,
                     "free_memory": 198312, "uptime": 9, "board_id": 1, "type": "esp32_relay", "channels": 16})
    body.update(extra)
    return body


def relay_state(uuid: str, **channels: bool) -> dict:
    return {"protocol_version": "2.2.0", "uuid": uuid, "timestamp": "1970-01-01T00:00:39Z", "board_id": 1,
            "channels": {k.lstrip("c"): v for k, v in channels.items()}}


def make_config_app_db(path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    app.create_all(str(path))
    conn = app.connect(str(path))
    try:
        return app.user_configuration(conn, RELAY)
    finally:
        conn.close()


def read(path, fn, *args):
    conn = app.connect(str(path))
    try:
        return fn(conn, *args)
    finally:
        conn.close()


def assert_datetimes_readable(path) -> None:
    """Every DATETIME the Config App reads parses with fromisoformat, and the
    gateway's are all in the one text format, so text order is time order."""
    conn = app.connect(str(path))
    try:
        for table, cols in (("devices", ("last_seen", "created_at", "updated_at")),
                            ("telemetry_data", ("timestamp",)), ("event_logs", ("timestamp",))):
            for col in cols:
                for (value,) in conn.execute(f"SELECT {col} FROM {table}"):
                    if value is None and col == "last_seen":
                        continue
                    assert isinstance(value, str), f"{table}.{col} holds {value!r}"
                    datetime.fromisoformat(value)
                    assert len(value) == 26 and value[10] == " ", f"{table}.{col}: {value!r}"
        stamps = [t for (t,) in conn.execute("SELECT timestamp FROM telemetry_data ORDER BY id")]
        parsed = [datetime.fromisoformat(t) for t in stamps]
        assert sorted(stamps) == [s for _, s in sorted(zip(parsed, stamps))]
    finally:
        conn.close()


def test_on_the_config_apps_database(gateways, devices, broker, tmp_path):
    db_path = tmp_path / "gw" / "autocore.db"
    relay_id = make_config_app_db(db_path)
    before = read(db_path, app.dump)
    gw = gateways()

    # A 2.2 relay board the owner registered: online, its state, then its Will.
    # Connected as the relay firmware does: its Last Will is the offline status.
    board = devices(RELAY, client_id="fw22-relay", connect=False)
    client = board._make()
    client.will_set(board.topic("status"), json.dumps(fw22_status(RELAY, online=False, reason="connection lost")),
                    qos=1, retain=True)
    board._start(client)
    board.publish("status", fw22_status(RELAY), retain=True)
    board.publish("relays/state", relay_state(RELAY, c1=True, c2=False))

    def relay_row():
        return read(db_path, app.device_by_uuid, RELAY)

    # Its relays/state takes the fast path and may reach the store before the
    # status (through its Device actor): wait for what the status says.
    wait_until(lambda: relay_row()["status"] == "online" and relay_row()["firmware_version"] == "2.0.1", 10,
               what="the relay board online in devices, with its firmware", progress=lambda: dict(relay_row()))
    row = relay_row()
    seen = datetime.fromisoformat(row["last_seen"])
    assert abs((datetime.now() - seen).total_seconds()) < 10
    assert row["ip_address"] == "192.168.4.20"  # 0.0.0.0 from the board never overwrites it
    assert row["firmware_version"] == "2.0.1" and row["id"] == relay_id
    assert RELAY in read(db_path, app.online_devices)
    wait_until(lambda: read(db_path, app.telemetry_latest_by_key, relay_id).get("relay.1.state") == "1", 10,
               what="the relay's state in telemetry_data")

    # A v1 device the Config App never heard of: a row of its own.
    v1 = devices("v1-sensor-01")
    v1.announce(boot_id=3, device_type="sensor_board", name="Rear sensors", mac_address="AA:BB:CC:DD:EE:01",
                ip_address="192.168.4.31")
    v1.telemetry(seq=1, boot_id=3, analog_sensors={"fuel_level": 67.8, "oil_pressure": 45.2})
    v1.telemetry(seq=2, boot_id=3, analog_sensors={"fuel_level": 66.1, "oil_pressure": 45.0})
    v1.telemetry(seq=2, boot_id=3, analog_sensors={"fuel_level": 66.1, "oil_pressure": 45.0})  # redelivery

    def v1_row():
        return read(db_path, app.device_by_uuid, "v1-sensor-01")

    # Its telemetry takes the fast path to the store and may get there before
    # the announce (through its Device actor): the row is then registered
    # with placeholders first, which the announce fills in.
    wait_until(lambda: v1_row() is not None and v1_row()["name"] == "Rear sensors", 10,
               what="the announced v1 device in devices", progress=lambda: v1_row() and dict(v1_row()))
    v1_id = v1_row()["id"]
    assert (v1_row()["name"], v1_row()["type"], v1_row()["status"], v1_row()["is_active"]) == (
        "Rear sensors", "sensor_board", "online", 1)
    assert v1_row()["mac_address"] == "AA:BB:CC:DD:EE:01"
    wait_until(lambda: len(read(db_path, app.telemetry_latest, v1_id)) == 4, 10, what="4 readings in telemetry_data")
    assert read(db_path, app.telemetry_latest_by_key, v1_id) == {"fuel_level": "66.1", "oil_pressure": "45"}
    newest = read(db_path, app.telemetry_latest, v1_id, 2)
    assert {r[3] for r in newest} == {"fuel_level", "oil_pressure"} and {r[2] for r in newest} == {"analog"}

    # The relay drops off: the broker publishes its Last Will; offline there too, with an event.
    board.drop()
    wait_until(lambda: relay_row()["status"] == "offline", 10, what="the relay board offline in devices")
    events = read(db_path, app.events_by_device, relay_id)
    mine = [(e[1], e[2], e[4], e[6]) for e in events if e[2] == "gateway"]
    assert ("device", "gateway", "offline", "success") in mine and ("device", "gateway", "online", "success") in mine
    offline = next(e for e in events if e[2] == "gateway" and e[4] == "offline")
    assert offline[3] == f"device_{relay_id}" and json.loads(offline[5])["uuid"] == RELAY
    assert [e[4] for e in read(db_path, app.events_by_device, v1_id)].count("announce") == 1

    gw.stop()
    after = read(db_path, app.dump)
    # The owner's configuration, byte for byte (the v1 device's new row aside).
    after["devices"] = [r for r in after["devices"] if r[0] in {b[0] for b in before["devices"]}]
    assert after == before
    assert_datetimes_readable(db_path)


def test_gateway_first_then_the_config_app_creates_its_schema_while_it_runs(gateways, devices, tmp_path):
    gw = gateways()
    db_path = gw.db_path
    v1 = devices("v1-early")
    v1.announce(boot_id=1, device_type="relay_board")
    v1.telemetry(seq=1, boot_id=1)
    wait_until(lambda: read(db_path, lambda c: c.execute("SELECT COUNT(*) FROM telemetry").fetchone()[0]) == 1, 10,
               what="the first reading stored")

    # The Config App starts now: every one of its tables is free to create.
    assert set(app.create_all(str(db_path))) == set(app.TABLES)
    conn = app.connect(str(db_path))
    try:
        # The firmware's own registration (GET finds nothing, POST inserts).
        assert app.device_by_uuid(conn, "esp32-relay-late") is None
        late_id = app.register_device(conn, "esp32-relay-late", "Relays rear", "ESP32_RELAY", mac="AA:00:00:00:00:02",
                                      ip="192.168.4.40", firmware="2.0.0")
    finally:
        conn.close()

    board = devices("esp32-relay-late", client_id="fw22-late")
    board.publish("status", fw22_status("esp32-relay-late"), retain=True)
    wait_until(lambda: read(db_path, app.device_by_uuid, "esp32-relay-late")["status"] == "online", 10,
               what="the registered board online")
    row = read(db_path, app.device_by_uuid, "esp32-relay-late")
    assert row["id"] == late_id and row["name"] == "Relays rear" and row["mac_address"] == "AA:00:00:00:00:02"
    # The device the gateway knew before: a row as soon as it speaks again.
    v1.telemetry(seq=2, boot_id=1)
    wait_until(lambda: read(db_path, app.device_by_uuid, "v1-early") is not None, 10, what="v1-early in devices")
    early_id = read(db_path, app.device_by_uuid, "v1-early")["id"]
    assert read(db_path, app.device_by_uuid, "v1-early")["type"] == "esp32_relay"
    wait_until(lambda: read(db_path, app.telemetry_latest_by_key, early_id) == {"fuel_level": "67.8"}, 10,
               what="v1-early's reading in telemetry_data")
    assert gw.proc.poll() is None
    gw.stop()
    assert_datetimes_readable(db_path)


def test_config_app_writes_never_fail_during_a_stream(gateways, broker, tmp_path):
    """An UPDATE of a relay channel every 100 ms, as the Config App's ORM does
    it (read, then write, commit; its driver waits 5 s for a lock), while
    about 5,000 messages a second stream in."""
    db_path = tmp_path / "gw" / "autocore.db"
    make_config_app_db(db_path)
    gw = gateways(device_rate=100000, device_burst=100000)
    failures: list[str] = []
    waits: list[float] = []
    writes = 0
    stop = threading.Event()

    def config_app_writes() -> None:
        nonlocal writes
        conn = app.connect(str(db_path))
        try:
            while not stop.is_set():
                began = time.monotonic()
                try:
                    (name,) = conn.execute("SELECT name FROM relay_channels WHERE id = 3").fetchone()
                    conn.execute("UPDATE relay_channels SET name = ?, updated_at = ? WHERE id = 3",
                                 (f"Channel 3 ({writes})", app.now_text()))
                    conn.commit()
                    writes += 1
                    waits.append(time.monotonic() - began)
                except sqlite3.Error as exc:
                    failures.append(f"{type(exc).__name__}: {exc}")
                    conn.rollback()
                stop.wait(0.1)
        finally:
            conn.close()

    writer = threading.Thread(target=config_app_writes, daemon=True)
    streams = [Stream(broker.port, f"v1-stream-{i}", 5000, pause_every=250, pause_s=0.1) for i in range(2)]
    writer.start()
    started = time.monotonic()
    for s in streams:
        s.start()
    for s in streams:
        s.wait(60)
    published_s = time.monotonic() - started
    wait_until(lambda: read(db_path, lambda c: c.execute("SELECT COUNT(*) FROM telemetry").fetchone()[0]) == 10000,
               30, what="every reading stored")
    stop.set()
    writer.join(10)
    assert failures == []
    # Every write went through, with room to spare under the driver's 5 s.
    assert writes >= 5 and max(waits) < 2.5, (writes, published_s, sorted(waits)[-5:])
    stored = read(db_path, lambda c: c.execute(
        "SELECT COUNT(*) FROM telemetry_data t JOIN devices d ON d.id = t.device_id WHERE d.uuid LIKE 'v1-stream-%'"
    ).fetchone()[0])
    assert stored == 10000
    gw.stop()
