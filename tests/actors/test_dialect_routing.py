"""The Router's part in refusing 2.2 messages for a v1 device with a
boot_id: such a device's 2.2 messages never take the fast path (their rows
would be stored before its actor could refuse them); they go to its actor
with their rows, which refuses them or stores them. The Router, the Device
actor and the supervisor's record are called directly, their neighbours
replaced by recorders; no threads, no broker."""

from __future__ import annotations

import orjson

from actors.device import Device
from actors.messages import (
    Complete,
    DeviceInput,
    DeviceStatus,
    DeviceWrite,
    DialectLock,
    DialectMark,
    ForgetDevice,
    Forgotten,
    InboundBatch,
    KnownDevice,
    Publish,
    RawInbound,
    Route,
    SetDialect,
    TelemetryRows,
    Token,
)
from actors.router import Router
from actors.rules.device import DIALECT_CONFLICT, DeviceRules
from actors.supervisor import DeviceSupervisor
from gateway.settings import Settings
from tests.actors.rules.device_inputs import logic
from tests.support.recorder import Recorder

V1 = "sim-relay-board-01"
BOARD = "esp32-9c1a77b0e2f41d03"
ANNOUNCE = orjson.dumps({"device_type": "relay_board", "firmware_version": "1.0", "boot_id": 7})
ANNOUNCE_NO_BOOT = orjson.dumps({"device_type": "relay_board", "firmware_version": "1.0"})
OFFLINE = orjson.dumps({"protocol_version": "2.2.0", "status": "offline", "reason": "lost"})
STATE = orjson.dumps({"protocol_version": "2.2.0", "board_id": 1, "channels": {"1": True, "2": False}})
LEVEL = orjson.dumps({"protocol_version": "2.2.0", "free_heap": 1000})


def raw(topic, payload, mid):
    return RawInbound(topic, payload, 1, 1000.0 + mid / 1000, Token(1, mid, 1))


class Routing:
    def __init__(self, known=()):
        self.supervisor, self.store, self.mqtt = Recorder(), Recorder(), Recorder()
        self.router = Router(Settings(), self.mqtt, self.supervisor, self.store)
        self.router.load(tuple(known))
        self.mid = 0

    def batch(self, *messages):
        self.supervisor.told.clear()
        self.store.told.clear()
        raws = []
        for topic, payload in messages:
            self.mid += 1
            raws.append(raw(topic, payload, self.mid))
        self.router.handle(InboundBatch(tuple(raws)))
        routes = [m for m in self.supervisor.told if isinstance(m, Route)]
        seen = [uuid for r in routes for uuid, _ in r.seen]
        device = {uuid: msgs for r in routes for uuid, msgs in r.messages}
        rows = [m for m in self.store.told if isinstance(m, TelemetryRows)]
        return seen, device, rows


def topic(uuid, level):
    return f"autocore/devices/{uuid}/{level}"


def test_a_2_2_message_for_a_known_v1_device_with_a_boot_goes_to_its_actor_with_its_rows():
    r = Routing([KnownDevice(V1, "online", boot_id=7, protocol="v1")])
    seen, device, rows = r.batch((topic(V1, "relays/state"), STATE), (topic(V1, "diagnostics"), LEVEL))
    assert seen == [] and rows == []  # nothing on the fast path
    assert [m.message.kind for m in device[V1]] == ["fw22_relays_state", "fw22_level"]
    assert all(m.rows for m in device[V1])  # stored only if its actor lets them through
    assert r.router.counters["dialect_checked"] == 2
    # a 2.2 board and a v1 device without a boot keep the fast path
    r2 = Routing([KnownDevice(V1, "online", boot_id=None, protocol="v1"), KnownDevice(BOARD, "online", protocol="fw22")])
    seen, device, rows = r2.batch((topic(V1, "relays/state"), STATE), (topic(BOARD, "relays/state"), STATE))
    assert sorted(seen) == sorted([V1, BOARD]) and device == {} and len(rows) == 1


def test_a_v1_message_with_a_boot_locks_the_device_at_once_in_the_same_batch():
    r = Routing()
    seen, device, rows = r.batch((topic(V1, "relays/state"), STATE), (topic(V1, "announce"), ANNOUNCE),
                                 (topic(V1, "relays/state"), STATE))
    # the report before the announce took the fast path (its order is kept:
    # summaries reach the device first); the one after goes with the announce
    assert seen == [V1] and len(rows) == 1
    assert [m.message.kind for m in device[V1]] == ["announce", "fw22_relays_state"]
    # an announce without a boot does not lock
    r2 = Routing()
    r2.batch((topic(V1, "announce"), ANNOUNCE_NO_BOOT))
    assert r2.batch((topic(V1, "relays/state"), STATE))[0] == [V1]


def test_the_operator_unlocks_only_what_no_later_v1_message_locked():
    r = Routing([KnownDevice(V1, "online", boot_id=7, protocol="v1")])
    mark = r.router.handle(DialectMark())
    assert r.router.handle(DialectLock(V1, False, after=mark)) is False
    assert r.batch((topic(V1, "relays/state"), STATE))[0] == [V1]  # fast path again
    # locked again by a v1 message routed after the mark: an unlock with that mark keeps it
    mark = r.router.handle(DialectMark())
    r.batch((topic(V1, "announce"), ANNOUNCE))
    assert r.router.handle(DialectLock(V1, False, after=mark)) is True
    assert r.batch((topic(V1, "relays/state"), STATE))[1]
    # the operator's `dialect v1` locks whatever the device is
    assert r.router.handle(DialectLock(BOARD, True)) is True
    assert BOARD in r.batch((topic(BOARD, "relays/state"), STATE))[1]


# -- the Device actor around the logic (called directly) ------------------------------


class Refs:
    def __init__(self):
        self.supervisor, self.mqtt, self.scheduler, self.store = Recorder(), Recorder(), Recorder(), Recorder()


def device_actor(logic):
    refs = Refs()
    actor = Device(logic, supervisor=refs.supervisor, mqtt=refs.mqtt, scheduler=refs.scheduler, store=refs.store,
                   availability=lambda u, online: ("availability", u, online), encode_command=None)
    actor.actor_ref.tell = lambda message: None
    return actor, refs


def locked_logic():
    return logic(V1, DeviceRules(), status="online", dialect="v1", boot_id=7, last_seen=999.0)


def test_the_actor_acknowledges_a_refused_message_and_stores_none_of_it():
    r = Routing([KnownDevice(V1, "online", boot_id=7, protocol="v1")])
    _, device, _ = r.batch((topic(V1, "status"), OFFLINE), (topic(V1, "relays/state"), STATE))
    actor, refs = device_actor(locked_logic())
    actor.handle(DeviceInput(messages=device[V1]))
    writes = [m for m in refs.store.told if isinstance(m, DeviceWrite)]
    (write,) = writes  # the first refusal's event, with its token
    assert [e for _, e, _ in write.events] == [DIALECT_CONFLICT]
    assert write.rows == () and write.status is None and write.protocol is None
    # the second: nothing to store, acknowledged at once
    completes = [m for m in refs.mqtt.told if isinstance(m, Complete)]
    assert len(completes) == 1 and len(write.tokens) == 1
    assert not any(isinstance(m, Publish) for m in refs.mqtt.told)  # no availability published
    assert actor.logic.status == "online" and actor.logic.counters[DIALECT_CONFLICT] == 2


def test_the_actor_takes_the_operators_dialect_and_forgets_on_request():
    actor, refs = device_actor(locked_logic())
    answer = actor.handle(SetDialect(V1, "fw22"))
    assert answer == {"dialect": "fw22", "dialect_locked": False, "boot_id": 7}
    (status,) = [m for m in refs.supervisor.told if isinstance(m, DeviceStatus)]
    assert status.known.protocol == "fw22"
    assert actor.handle(ForgetDevice(V1)) is True
    assert actor.logic.status is None and actor.logic.liveness.boot_id is None
    assert isinstance(refs.supervisor.told[-1], Forgotten)


class SupervisorSettings:
    max_device_actors = 10


def test_the_supervisor_changes_its_record_of_a_device_without_an_actor():
    sup = DeviceSupervisor(SupervisorSettings, lambda *a: None, Recorder(), Recorder())
    sup.load((KnownDevice(V1, "online", boot_id=7, protocol="v1"),))
    assert sup.handle(SetDialect(V1, "fw22")) == {"ref": None, "known": True, "dialect": "fw22",
                                                  "dialect_locked": False, "boot_id": 7}
    assert sup.known[V1].protocol == "fw22"
    assert sup.handle(SetDialect("nobody", "v1")) == {"ref": None, "known": False}
    assert sup.handle(ForgetDevice(V1)) == {"ref": None, "known": True}
    assert V1 not in sup.known and V1 not in sup.online
    # a device with an actor: the Inspector asks the actor, which answers Forgotten
    sup.known[BOARD] = KnownDevice(BOARD, "online", protocol="fw22")
    sup.online.add(BOARD)
    sup.handle(Forgotten(BOARD))
    assert BOARD not in sup.known and BOARD not in sup.online
