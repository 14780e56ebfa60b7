"""The runner over a real Mosquitto (no gateway): connections, Wills,
reboots, flaps, commands through the broker, shared connections, bounds.
Every wait is for a condition, with a deadline."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import paho.mqtt.client as mqtt
import pytest

from simulator import Fleet, FleetConfig, Fw22Options, V1Options
from protocol.codec import decode as decode_payload
from protocol.outbound import command_publication
from protocol.values import CommandSpec

from tests.support.broker import wait_until


@dataclass
class Seen:
    at: float
    topic: str
    payload: bytes
    retain: bool

    @property
    def body(self) -> dict:
        return decode_payload(self.payload, 65536)[0]


class Observer:
    """A client that records everything under `autocore/#` (and can publish)."""

    def __init__(self, port: int) -> None:
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"observer-{port}", protocol=mqtt.MQTTv5)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe("autocore/#", 1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.ready.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.ready.wait(5)

    def _on_message(self, client, userdata, msg) -> None:
        with self.lock:
            self.seen.append(Seen(time.monotonic(), msg.topic, msg.payload, bool(msg.retain)))

    def on(self, topic: str, **fields) -> list[Seen]:
        with self.lock:
            found = [s for s in self.seen if s.topic == topic]
        return [s for s in found if all(s.body.get(k) == v for k, v in fields.items())]

    def wait(self, topic: str, timeout: float = 10, count: int = 1, **fields) -> list[Seen]:
        return wait_until(lambda: (lambda f: f if len(f) >= count else None)(self.on(topic, **fields)),
                          timeout, what=f"{count} x {topic} {fields}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def observer(broker):
    o = Observer(broker.port)
    yield o
    o.close()


def fleet_of(broker, devices: dict, **kw) -> Fleet:
    kw.setdefault("duration", 30)
    return Fleet(FleetConfig(devices=devices, port=broker.port, **kw))


def status_topic(uuid: str) -> str:
    return f"autocore/devices/{uuid}/status"


def test_per_device_connections_carry_each_devices_will_through_flaps_and_reboots(broker, observer):
    fleet = fleet_of(broker, {"relay_board": 1, "fw22_relay": 1}, boot_time=0.2)
    v1, relay = fleet.devices
    fleet.start()
    try:
        boot = v1.boot_id
        observer.wait(status_topic(v1.uuid), status="online", boot_id=boot)
        observer.wait(f"autocore/devices/{v1.uuid}/announce", boot_id=boot)
        observer.wait(status_topic(relay.uuid), status="online")

        fleet.flap(v1.uuid, down=0.3).result(5)  # the connection dies: the broker publishes the Will
        observer.wait(status_topic(v1.uuid), status="offline", boot_id=boot)
        observer.wait(status_topic(v1.uuid), count=2, status="online", boot_id=boot)
        assert len(observer.on(f"autocore/devices/{v1.uuid}/announce")) == 1  # a flap is not a boot

        fleet.reboot(v1.uuid).result(5)
        new_boot = v1.boot_id
        assert new_boot > boot
        observer.wait(f"autocore/devices/{v1.uuid}/announce", boot_id=new_boot)
        offline = observer.on(status_topic(v1.uuid), status="offline", boot_id=boot)
        announce = observer.on(f"autocore/devices/{v1.uuid}/announce", boot_id=new_boot)[0]
        assert offline[-1].at < announce.at  # the Will came at once, before the new boot

        fleet.reboot(relay.uuid).result(5)
        (will,) = observer.wait(status_topic(relay.uuid), status="offline")
        assert "boot_id" not in will.body and will.body["reason"] == "connection_lost"
        observer.wait(status_topic(relay.uuid), count=2, status="online")
    finally:
        fleet.stop()
        assert fleet.join(10)
    # At the end the connections just close: each Will says the device is gone.
    observer.wait(status_topic(v1.uuid), count=3, status="offline")
    observer.wait(status_topic(relay.uuid), count=2, status="offline")


def test_a_late_will_arrives_after_the_new_boot_announced(broker, observer):
    fleet = fleet_of(broker, {"sensor_board": 1}, keepalive=1, late_will=True, boot_time=0.1)
    (device,) = fleet.devices
    fleet.start()
    try:
        old = device.boot_id
        observer.wait(f"autocore/devices/{device.uuid}/announce", boot_id=old)
        fleet.reboot(device.uuid).result(5)
        new = device.boot_id
        (announce,) = observer.wait(f"autocore/devices/{device.uuid}/announce", boot_id=new)
        (stale,) = observer.wait(status_topic(device.uuid), timeout=10, status="offline", boot_id=old)
        assert stale.at > announce.at  # a stale Will: the gateway must ignore it
    finally:
        fleet.stop()
        assert fleet.join(10)


def test_commands_through_the_broker_are_answered_and_a_repeat_gets_the_same_answer(broker, observer):
    fleet = fleet_of(broker, {"relay_board": 1}, v1=V1Options(latency=(0.02, 0.02)))
    (device,) = fleet.devices
    fleet.start()
    try:
        observer.wait(f"autocore/devices/{device.uuid}/announce")
        spec = CommandSpec(id=77, device_uuid=device.uuid, command_type="relay_control",
                           parameters={"relay_id": 2, "state": True})
        for attempt in (1, 2):
            pub = command_publication("autocore", spec, attempt, time.time(), "gw", device.encoding)
            observer.client.publish(pub.topic, pub.payload, pub.qos)
            observer.wait(f"autocore/devices/{device.uuid}/response", count=attempt, command_id="77")
        first, second = observer.on(f"autocore/devices/{device.uuid}/response")
        assert first.payload == second.payload and first.body["success"] is True
        figures = fleet.call(fleet.figures).result(5)
        assert (figures["commands"], figures["duplicates"]) == (2, 1)
        assert device.relays[1].switch_count == 1
        observer.wait(f"autocore/devices/{device.uuid}/relay/status")
    finally:
        fleet.stop()
        assert fleet.join(10)


def test_a_command_asking_for_a_reboot_reboots_the_device(broker, observer):
    fleet = fleet_of(broker, {"mobile": 1}, boot_time=0.1)
    (device,) = fleet.devices
    fleet.start()
    try:
        boot = device.boot_id
        observer.wait(f"autocore/devices/{device.uuid}/announce", boot_id=boot)
        spec = CommandSpec(id=5, device_uuid=device.uuid, command_type="reboot", parameters={})
        pub = command_publication("autocore", spec, 1, time.time(), "gw", device.encoding)
        observer.client.publish(pub.topic, pub.payload, pub.qos)
        observer.wait(f"autocore/devices/{device.uuid}/response", command_id="5", success=True)
        observer.wait(status_topic(device.uuid), status="offline", boot_id=boot)
        (announce,) = observer.wait(f"autocore/devices/{device.uuid}/announce", count=2)[1:]
        assert announce.body["boot_id"] > boot
    finally:
        fleet.stop()
        assert fleet.join(10)


def test_shared_connections_drive_many_devices_and_route_their_commands(broker, observer):
    devices = {"sensor_board": 120, "relay_board": 20, "fw22_relay": 10}
    fleet = fleet_of(broker, devices, connections="shared", shared_connections=3,
                     v1=V1Options(telemetry_interval=0.5), fw22=Fw22Options(state_interval=0.5))
    assert len(fleet.links) == 3 + 3
    fleet.start()
    try:
        uuids = [d.uuid for d in fleet.devices if d.dialect == "v1"]
        wait_until(lambda: all(observer.on(f"autocore/devices/{u}/announce") for u in uuids), 15,
                   what="every v1 device to announce")
        relay = next(d for d in fleet.devices if d.kind == "relay_board")
        spec = CommandSpec(id=9, device_uuid=relay.uuid, command_type="ping", parameters={})
        pub = command_publication("autocore", spec, 1, time.time(), "gw", relay.encoding)
        observer.client.publish(pub.topic, pub.payload, pub.qos)
        observer.wait(f"autocore/devices/{relay.uuid}/response", command_id="9", success=True)
        fw22_relays = [d.uuid for d in fleet.devices if d.dialect == "fw22"]
        wait_until(lambda: all(observer.on(f"autocore/devices/{u}/relays/state") for u in fw22_relays), 15,
                   what="every 2.2 relay's relays/state")
        # A reboot on a shared connection is a silence and a new boot, not a Will.
        fleet.reboot(relay.uuid).result(5)
        observer.wait(f"autocore/devices/{relay.uuid}/announce", count=2)
    finally:
        fleet.stop()
        assert fleet.join(10)
    figures = fleet.snapshot()
    assert figures["devices"] == 150 and figures["connects"] == 6
    assert not observer.on(status_topic(relay.uuid), status="offline")


def test_a_run_stops_by_itself_at_its_duration(broker):
    fleet = fleet_of(broker, {"can_gateway": 2, "fw22_display": 1}, duration=1.0)
    started = time.monotonic()
    figures = fleet.run()
    assert 1.0 <= time.monotonic() - started < 5
    assert figures["connects"] == 3 and figures["telemetry"] >= 15
    assert fleet.finished.is_set()
    with pytest.raises(RuntimeError):
        fleet.call(lambda: None).result(1)


def test_without_a_broker_the_run_ends_with_connect_errors_and_nothing_sent():
    from tests.support.broker import free_port

    fleet = Fleet(FleetConfig(devices={"mobile": 2}, port=free_port(), duration=1.0))
    figures = fleet.run()
    assert figures["connect_errors"] >= 2 and figures["published"] == 0 and not figures.get("connects")
