"""DeviceSupervisor with real pykka actors: restart after a crash (with
limits), nothing a crashed actor held is lost or left unacknowledged, and the
bounded device cache (eviction of the least recently seen offline devices)."""

import threading
import time

import pykka
import pytest

from actors.device import Device
from actors.encoders import CommandEncoder
from actors.messages import (
    Complete,
    DeviceFailed,
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
from protocol.values import Availability, DeviceFacts, Dialect, Kind, Message
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

    def message(self, now, dm):
        facts = dm.message.facts
        if facts is not None and facts.name == "boom":
            raise RuntimeError("bug in device logic")
        return super().message(now, dm)


@pytest.fixture
def system():
    mqtt = Recorder.start()
    scheduler = Recorder.start()
    store = StoreStub()
    encoder = CommandEncoder(Settings)
    refs = {}

    def make_device(uuid, known, restarts):
        logic = ExplodingLogic(uuid, DeviceRules(), known)
        return Device.start(logic, supervisor=refs["sup"], mqtt=mqtt, scheduler=scheduler, store=store,
                            availability=lambda u, online: None, encode_command=encoder, restarts=restarts)

    refs["sup"] = DeviceSupervisor.start(Settings, make_device, mqtt, store)
    yield refs["sup"], mqtt, store
    pykka.ActorRegistry.stop_all()


def announce(uuid, token, name="ok", boot_id=1):
    facts = DeviceFacts(device_type="relay_board", firmware_version="1", name=name, boot_id=boot_id)
    return DeviceMessage(Message(uuid, Dialect.V1, Kind.ANNOUNCE, boot_id=boot_id, facts=facts), time.time(), token)


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
    will = Availability(online=False, boot_id=boot_id)
    return DeviceMessage(Message(uuid, Dialect.V1, Kind.STATUS, alive=False, boot_id=boot_id, availability=will),
                         time.time(), token)


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


class SlowToReport:
    """The supervisor as a Device sees it, with the report of a crash held
    back until the test lets it through: widens the window between a
    device's crash and the supervisor hearing of it."""

    def __init__(self, sup, reporting, release):
        self.sup = sup
        self.reporting = reporting
        self.release = release

    def tell(self, message):
        if isinstance(message, DeviceFailed):
            self.reporting.set()
            assert self.release.wait(10), "the test never released the crash report"
        self.sup.tell(message)


def test_messages_in_the_crash_window_never_start_a_second_actor():
    mqtt = Recorder.start()
    scheduler = Recorder.start()
    store = StoreStub()
    encoder = CommandEncoder(Settings)
    reporting, release = threading.Event(), threading.Event()
    started: list = []  # every Device actor ever started, in order
    refs = {}

    def make_device(uuid, known, restarts):
        logic = ExplodingLogic(uuid, DeviceRules(), known)
        ref = Device.start(logic, supervisor=SlowToReport(refs["sup"], reporting, release), mqtt=mqtt, scheduler=scheduler,
                           store=store, availability=lambda u, online: None, encode_command=encoder,
                           restarts=restarts)
        started.append(ref)
        return ref

    try:
        sup = refs["sup"] = DeviceSupervisor.start(Settings, make_device, mqtt, store)
        t_bad, t_queued, t_window = Token(1, 10, 1), Token(1, 11, 1), Token(1, 12, 1)
        sup.tell(Route(messages=(("dev-a", (announce("dev-a", t_bad, name="boom"),)),)))
        sup.tell(Route(messages=(("dev-a", (announce("dev-a", t_queued),)),)))
        # The device has crashed and is reporting it (held back) when the
        # next message is routed: it arrives inside the window.
        wait_until(reporting.is_set, 5, what="the crash is being reported")
        sup.tell(Route(messages=(("dev-a", (announce("dev-a", t_window),)),)))
        sup.ask(GetSnapshot())  # the supervisor has handled the routed message
        release.set()
        stored = lambda t: any(t in getattr(m, "tokens", ()) for m in store.sent)  # noqa: E731
        wait_until(lambda: t_bad in completed(mqtt), 5, what="poison token completed")
        wait_until(lambda: stored(t_queued) and stored(t_window), 5, what="both later messages stored")
        # Exactly one actor serves the device: the replacement of the one that crashed.
        wait_until(lambda: sum(r.is_alive() for r in started) == 1, 5, what="one live actor for dev-a")
        live = [r for r in started if r.is_alive()]
        assert sup.proxy().device_refs().get()["dev-a"] is live[0]
        assert live[0].ask(GetSnapshot())["restarts"] == 1
        # Nothing was done twice: each later message stored once, the poison one never.
        assert sum(t_window in getattr(m, "tokens", ()) for m in store.sent) == 1
        assert sum(t_queued in getattr(m, "tokens", ()) for m in store.sent) == 1
        assert not stored(t_bad)
        assert sup.ask(GetSnapshot())["counters"]["device_failures"] == 1
    finally:
        release.set()
        pykka.ActorRegistry.stop_all()


def test_a_message_that_meets_its_device_retiring_reaches_the_next_actor(system):
    sup, mqtt, store = system
    for n, uuid in enumerate(("d1", "d2", "d3")):
        sup.tell(Route(messages=((uuid, (announce(uuid, Token(1, n, 1), boot_id=7),
                                         offline_will(uuid, Token(1, 10 + n, 1), boot_id=7))),)))
    wait_until(lambda: sup.ask(GetSnapshot())["state"]["known"] == 3 and sup.ask(GetSnapshot())["state"]["online"] == 0,
               5, what="three devices offline")
    # One route: d4 pushes d1 out of the cache, and a message for d1 follows
    # its Retire at once. It must be handled by an actor that stays up.
    token = Token(1, 20, 1)
    sup.tell(Route(seen=(("d4", Seen(time.time(), 1, "v1", "json", None)),),
                   messages=(("d1", (announce("d1", token, boot_id=8),)),)))
    wait_until(lambda: any(token in getattr(m, "tokens", ()) for m in store.sent), 5, what="d1's message stored")
    wait_until(lambda: sup.ask(GetSnapshot())["counters"].get("evicted", 0) >= 1, 5, what="d1 evicted")
    refs = sup.proxy().device_refs().get()
    assert refs["d1"].is_alive()
    assert refs["d1"].ask(GetSnapshot())["state"]["boot_id"] == 8
    assert len(device_actors("d1")) == 1


def device_actors(uuid):
    """The running Device actors of a uuid (one being stopped is not counted)."""
    found = []
    for ref in pykka.ActorRegistry.get_by_class(Device):
        try:
            if ref.proxy().uuid.get(timeout=5) == uuid:
                found.append(ref)
        except pykka.ActorDeadError:
            pass
    return found
