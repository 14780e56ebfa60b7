"""DeviceSupervisor with real pykka actors: restart after a crash (with
limits), nothing a crashed actor held is lost or left unacknowledged, and the
bounded device cache (eviction of the least recently seen offline devices)."""

import time

import pykka
import pytest

from actors.device import Device
from actors.encoders import CommandEncoder
from actors.messages import (
    Complete,
    DeviceInput,
    DeviceMessage,
    GetSnapshot,
    KnownDevice,
    Route,
    Seen,
    Token,
)
from actors.rules.device import DeviceLogic, DeviceRules
from actors.supervisor import MAX_RESTARTS, DeviceSupervisor
from protocol.values import Availability, DeviceFacts
from tests.support.broker import wait_until


class Recorder(pykka.ThreadingActor):
    """Stands in for MqttIO / Scheduler: records what it is told."""

    def __init__(self):
        super().__init__()
        self.messages = []

    def on_receive(self, message):
        if isinstance(message, GetSnapshot):
            return list(self.messages)
        self.messages.append(message)


class StoreStub:
    """Stands in for the channel to the store process."""

    def __init__(self):
        self.sent = []

    def send(self, message):
        self.sent.append(message)


class Settings:
    max_device_actors = 3
    topic_prefix = "autocore"
    gateway_id = "gw"


class ExplodingLogic(DeviceLogic):
    """A device whose logic raises on an announce naming `boom` (stands in
    for a bug in the real logic: the supervisor is what is under test)."""

    def message(self, now, received_at, dialect, encoding, kind, **kw):
        facts = kw.get("facts")
        if facts is not None and facts.name == "boom":
            raise RuntimeError("bug in device logic")
        return super().message(now, received_at, dialect, encoding, kind, **kw)


@pytest.fixture
def system():
    mqtt = Recorder.start()
    scheduler = Recorder.start()
    store = StoreStub()
    encoder = CommandEncoder(Settings)
    refs = {}

    def make_device(uuid, known, restarts):
        logic = ExplodingLogic(uuid, DeviceRules(), status=known.status if known else None,
                               boot_id=known.boot_id if known else None,
                               device_type=known.device_type if known else None)
        return Device.start(logic, supervisor=refs["sup"], mqtt=mqtt, scheduler=scheduler, store=store,
                            availability=lambda u, online: None, encode_command=encoder, restarts=restarts)

    refs["sup"] = DeviceSupervisor.start(Settings, make_device, mqtt, store)
    yield refs["sup"], mqtt, store
    pykka.ActorRegistry.stop_all()


def announce(uuid, token, name="ok", boot_id=1):
    return DeviceMessage(time.time(), "v1", "json", None, "announce", token, True, boot_id, None,
                         DeviceFacts(device_type="relay_board", firmware_version="1", name=name, boot_id=boot_id))


def completed(mqtt):
    return [t for m in mqtt.ask(GetSnapshot()) if isinstance(m, Complete) for t in m.tokens]


def test_a_crashed_device_is_restarted_and_its_poison_message_completed(system):
    sup, mqtt, store = system
    t_bad, t_next = Token(1, 10, 1), Token(1, 11, 1)
    sup.tell(Route(messages=(("dev-a", (announce("dev-a", t_bad, name="boom"), announce("dev-a", t_next))),)))
    # The message that crashed it is completed (not redelivered forever), counted.
    wait_until(lambda: t_bad in completed(mqtt), 5, what="poison token completed")
    snap = sup.ask(GetSnapshot())
    assert snap["counters"]["device_failures"] == 1
    assert snap["counters"]["poison_messages"] == 1
    # The restarted actor serves the device's next message, which is stored with its token.
    sup.tell(Route(messages=(("dev-a", (announce("dev-a", t_next),)),)))
    wait_until(lambda: any(t_next in getattr(m, "tokens", ()) for m in store.sent), 5, what="next message stored")
    refs = sup.proxy().device_refs().get()
    assert refs["dev-a"].is_alive()
    assert refs["dev-a"].ask(GetSnapshot())["restarts"] == 1
    # Its commands were in its memory: the store is asked for them again.
    assert any(type(m).__name__ == "ReloadCommands" and m.device_uuid == "dev-a" for m in store.sent)


def test_a_device_that_keeps_crashing_is_left_down_and_its_messages_completed(system):
    sup, mqtt, store = system
    for i in range(MAX_RESTARTS + 1):
        token = Token(1, 100 + i, 1)
        sup.tell(Route(messages=(("dev-b", (announce("dev-b", token, name="boom"),)),)))
        wait_until(lambda: token in completed(mqtt), 5, what=f"crash {i} handled")
    snap = sup.ask(GetSnapshot())
    assert snap["state"]["left_down"] == ["dev-b"]
    token = Token(1, 200, 1)
    sup.tell(Route(messages=(("dev-b", (announce("dev-b", token),)),)))
    wait_until(lambda: token in completed(mqtt), 5, what="message to a device left down completed")
    assert sup.ask(GetSnapshot())["counters"]["dropped_device_down"] >= 1
    # Other devices are served meanwhile.
    other = Token(1, 300, 1)
    sup.tell(Route(messages=(("dev-c", (announce("dev-c", other),)),)))
    wait_until(lambda: any(other in getattr(m, "tokens", ()) for m in store.sent), 5, what="other device served")


def offline_will(uuid, token, boot_id=1):
    return DeviceMessage(time.time(), "v1", "json", None, "status", token, False, boot_id, None,
                         availability=Availability(online=False, boot_id=boot_id))


def test_cache_evicts_least_recently_seen_offline_devices_and_rebuilds_them(system):
    sup, mqtt, store = system
    # Three devices announce (online), then go offline by their Wills.
    for n, uuid in enumerate(("d1", "d2", "d3")):
        sup.tell(Route(messages=((uuid, (announce(uuid, Token(1, n, 1), boot_id=7),)),)))
    wait_until(lambda: sup.ask(GetSnapshot())["state"]["online"] == 3, 5, what="all online")
    for n, uuid in enumerate(("d1", "d2", "d3")):
        sup.tell(Route(messages=((uuid, (offline_will(uuid, Token(1, 10 + n, 1), boot_id=7),)),)))
    wait_until(lambda: sup.ask(GetSnapshot())["state"]["online"] == 0, 5, what="all offline")
    # A fourth device: over the bound of 3, the least recently seen offline one (d1) stops.
    sup.tell(Route(seen=(("d4", Seen(time.time(), 1, "v1", "json", None)),)))
    wait_until(lambda: "d1" not in sup.proxy().device_refs().get(), 5, what="d1 evicted")
    assert sup.ask(GetSnapshot())["counters"]["evicted"] == 1
    assert set(sup.proxy().device_refs().get()) == {"d2", "d3", "d4"}
    # d1 comes back on its next message with its state: its boot is known,
    # so the same boot is no reboot and an older boot's Will stays stale.
    sup.tell(Route(messages=(("d1", (offline_will("d1", Token(1, 50, 1), boot_id=6),)),)))
    wait_until(lambda: "d1" in sup.proxy().device_refs().get(), 5, what="d1 rebuilt")
    state = sup.proxy().device_refs().get()["d1"].ask(GetSnapshot())["state"]
    assert state["boot_id"] == 7
    assert state["status"] == "offline"
    assert state["stale_wills"] == 1
