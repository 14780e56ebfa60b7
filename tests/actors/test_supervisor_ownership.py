"""DeviceSupervisor with several instances (issue 13), with real pykka
actors: it acts only for devices of the buckets it owns; others' messages
are acknowledged (their rows stored) and their sign of life written as
last_seen; owned devices are loaded when their bucket is gained, their
actors stop when it is lost, and what another instance saw reaches them."""

import time

import pykka
import pytest

from actors.device import Device
from actors.encoders import CommandEncoder
from actors.messages import (
    CommandsRequested,
    CommandState,
    Complete,
    DeviceMessage,
    DeviceWrite,
    GetSnapshot,
    KnownDevice,
    Owned,
    Route,
    Seen,
    TelemetryRows,
    Token,
)
from actors.rules.device import DeviceLogic, DeviceRules
from actors.rules.owned import OwnedBuckets
from actors.supervisor import DeviceSupervisor
from protocol.buckets import bucket_of
from protocol.values import CommandSpec, DeviceFacts, Dialect, Encoding, Kind, Message, TelemetryRow
from tests.actors.test_supervisor import Recorder, Settings, StoreStub
from tests.support.broker import wait_until

BUCKETS = 4


def uuid_in(bucket: int, skip: int = 0) -> str:
    found = [f"dev-{i}" for i in range(1000) if bucket_of(f"dev-{i}", BUCKETS) == bucket]
    return found[skip]


@pytest.fixture
def system():
    mqtt = Recorder.start()
    scheduler = Recorder.start()
    store = StoreStub()
    encoder = CommandEncoder(Settings)
    owned = OwnedBuckets(BUCKETS)
    refs = {}

    def make_device(uuid, known, restarts):
        return Device.start(DeviceLogic(uuid, DeviceRules(), known), supervisor=refs["sup"], mqtt=mqtt,
                            scheduler=scheduler, store=store, availability=lambda u, online: (u, online),
                            encode_command=encoder, restarts=restarts, acting=owned.owns)

    refs["sup"] = DeviceSupervisor.start(Settings, make_device, mqtt, store, None, owned, 1.0)
    yield refs["sup"], mqtt, store
    pykka.ActorRegistry.stop_all()


def seen(at):
    return Seen(received_at=at, count=1, dialect=Dialect.V1, encoding=Encoding.JSON, protocol_version=None)


def announce(uuid, token):
    facts = DeviceFacts(device_type="relay_board", firmware_version="1", name="x", boot_id=1)
    return DeviceMessage(Message(uuid, Dialect.V1, Kind.ANNOUNCE, boot_id=1, facts=facts), time.time(), token)


def owned_message(epochs, act_for=30.0, **kw):
    return Owned("a", tuple(epochs), time.time() + act_for, BUCKETS, 10.0, **kw)


def test_only_owned_devices_get_an_actor_and_others_are_acknowledged(system):
    sup, mqtt, store = system
    mine, theirs = uuid_in(0), uuid_in(1)
    sup.tell(owned_message([(0, 5)], gained=(0,)))
    now = time.time()
    t_mine, t_theirs = Token(1, 1, 1), Token(1, 2, 1)
    row = TelemetryRow(theirs, 1, 7, 0, now, now, "analog_sensors", "fuel_level", 1.0, None, None, None)
    theirs_msg = DeviceMessage(announce(theirs, t_theirs).message, now, t_theirs, rows=(row,))
    sup.tell(Route(seen=((mine, seen(now)), (theirs, seen(now))),
                   messages=((mine, (announce(mine, t_mine),)), (theirs, (theirs_msg, announce(theirs, Token(1, 3, 1)))))))
    wait_until(lambda: any(isinstance(m, DeviceWrite) and m.uuid == mine and m.tokens for m in store.sent), 5,
               what="the owned device's announce written")
    refs = sup.proxy().device_refs().get()
    assert set(refs) == {mine}
    # the other's rows go to the store with their token; its rowless message is completed at once
    assert any(isinstance(m, TelemetryRows) and m.tokens == (t_theirs,) and m.rows == (row,) for m in store.sent)
    wait_until(lambda: any(isinstance(m, Complete) and Token(1, 3, 1) in m.tokens for m in mqtt.ask(GetSnapshot())),
               5, what="the other's message acknowledged")
    # and its sign of life becomes a last_seen write (no other change)
    touches = [m for m in store.sent if isinstance(m, DeviceWrite) and m.uuid == theirs]
    assert [(t.last_seen, t.status, t.events) for t in touches] == [(now, None, ())]
    counters = sup.ask(GetSnapshot())["counters"]
    assert counters["seen_not_owned"] == 1 and counters["messages_not_owned"] == 2


def test_a_gained_bucket_loads_its_devices_and_a_lost_one_stops_them(system):
    sup, mqtt, store = system
    dev = uuid_in(2)
    known = KnownDevice(dev, "online", last_seen=time.time() - 1)
    sup.tell(owned_message([(2, 1)], gained=(2,), devices=(known,)))
    wait_until(lambda: dev in sup.proxy().device_refs().get(), 5, what="the online device's actor")
    ref = sup.proxy().device_refs().get()[dev]
    # what another instance saw of it reaches its actor
    sup.tell(owned_message([(2, 1)], seen=((dev, time.time()),)))
    wait_until(lambda: ref.ask(GetSnapshot())["handled"] >= 1, 5, what="SeenElsewhere handled")
    # the bucket goes to another instance: the actor stops
    sup.tell(owned_message([]))
    wait_until(lambda: not ref.is_alive(), 5, what="the actor of a lost bucket stopped")
    assert sup.proxy().device_refs().get() == {}
    snap = sup.ask(GetSnapshot())
    assert snap["counters"]["buckets_lost"] == 1 and snap["state"]["ownership"]["held"] == 0
    assert snap["state"]["online"] == 0


def test_commands_claimed_while_not_acting_wait_until_it_acts_again(system):
    """A renewal late past the margin stops acting, not holding: the store
    may still claim commands for the bucket (its fence reads the epoch);
    they wait for acting to resume, and go (to the new owner, from the
    database) if the bucket is lost meanwhile."""
    sup, mqtt, store = system
    dev, other = uuid_in(0), uuid_in(1)
    known = KnownDevice(dev, "online", last_seen=time.time())
    sup.tell(owned_message([(0, 5), (1, 2)], act_for=-0.5, gained=(0, 1), devices=(known,)))
    spec = CommandSpec(id=7, device_uuid=dev, command_type="relay_control", parameters={"relay_id": 1, "state": True},
                       timeout=30.0)
    lost = CommandSpec(id=8, device_uuid=other, command_type="relay_control", parameters=None, timeout=30.0)
    sup.tell(CommandsRequested((CommandState(spec, "queued"), CommandState(lost, "queued"))))
    snap = sup.ask(GetSnapshot())
    assert snap["counters"]["commands_parked"] == 2 and snap["state"]["parked"] == 2
    # acting again at the same epochs, bucket 1 gone: the command of bucket 0 reaches its device's actor
    sup.tell(owned_message([(0, 5)]))
    wait_until(lambda: dev in sup.proxy().device_refs().get(), 5, what="the device's actor")
    ref = sup.proxy().device_refs().get()[dev]

    def held_by_actor():
        commands = ref.ask(GetSnapshot())["state"].get("commands") or {}
        return [c["id"] for c in commands.get("out", [])] + [q["id"] for q in commands.get("queued", [])]

    wait_until(lambda: held_by_actor() == [7], 5, what="command 7 in the device's window")
    snap = sup.ask(GetSnapshot())
    assert snap["state"]["parked"] == 0 and snap["counters"]["commands_not_owned"] == 1


def test_messages_that_come_while_not_acting_wait_until_it_acts_again(system):
    """A device's messages during such a pause (a command's response, say)
    are not acknowledged as another owner's: they reach the device's actor
    when acting resumes, or, if the bucket was lost, are acknowledged then."""
    sup, mqtt, store = system
    dev, other = uuid_in(0), uuid_in(1)
    sup.tell(owned_message([(0, 5), (1, 2)], act_for=-0.5, gained=(0, 1)))
    t_dev, t_other = Token(1, 11, 1), Token(1, 12, 1)
    sup.tell(Route(messages=((dev, (announce(dev, t_dev),)), (other, (announce(other, t_other),)))))
    snap = sup.ask(GetSnapshot())
    assert snap["counters"]["messages_parked"] == 2 and snap["state"]["parked"] == 2
    assert sup.proxy().device_refs().get() == {}
    sup.tell(owned_message([(0, 5)]))  # acting again; bucket 1 went elsewhere
    wait_until(lambda: any(isinstance(m, DeviceWrite) and m.uuid == dev and t_dev in m.tokens for m in store.sent), 5,
               what="the parked announce handled by the device's actor")
    wait_until(lambda: any(isinstance(m, Complete) and t_other in m.tokens for m in mqtt.ask(GetSnapshot())), 5,
               what="the lost bucket's message acknowledged as another owner's")
    assert set(sup.proxy().device_refs().get()) == {dev}
    assert sup.ask(GetSnapshot())["state"]["parked"] == 0
