"""A device's deadline never overtakes what the device sent before it.

With real Router, DeviceSupervisor, Device and Scheduler actors: the Router
is held up (its store link blocks) while a status report that arrived well
inside the device's timeout waits in its mailbox, until the timeout has
passed. The device must not be declared offline: the deadline reaches it
through the Router, behind the report. The control case (the Scheduler
telling the device directly, as before) shows the race is real.
"""

import json
import threading
import time

import pykka
import pytest

from actors.device import Device
from actors.encoders import CommandEncoder
from actors.messages import GetSnapshot, InboundBatch, Publish, RawInbound, Token
from actors.router import Router
from actors.rules.device import DeviceLogic, DeviceRules
from actors.scheduler import Scheduler
from actors.supervisor import DeviceSupervisor
from tests.support.broker import wait_until
from tests.support.recorder import EchoingStore, Recorder

UUID = "dev-deadline"
TIMEOUT_S = 0.6


class BlockingStore(EchoingStore):
    """The link to the store process; `send` waits while it is held. What a
    write publishes (a device's availability) reaches `mqtt` as from the
    store once the write is durable."""

    def __init__(self, mqtt):
        super().__init__(mqtt)
        self.open = threading.Event()
        self.open.set()
        self.waiting = threading.Event()

    def send(self, message):
        if not self.open.is_set():
            self.waiting.set()
            self.open.wait(10)
        super().send(message)


class Settings:
    topic_prefix = "autocore"
    gateway_id = "gw"
    max_payload = 65536
    clock_skew_s = 300.0
    device_rate = 1000.0
    device_burst = 1000.0
    max_device_actors = 10


def inbound(topic: str, payload: dict, mid: int, qos: int = 1) -> InboundBatch:
    return InboundBatch((RawInbound(f"autocore/devices/{UUID}/{topic}", json.dumps(payload).encode(), qos,
                                    time.time(), Token(1, mid, qos)),))


def availability(mqtt) -> list:
    return [m.publication for m in list(mqtt.told) if isinstance(m, Publish) and m.publication[0] == "avail"]


@pytest.fixture
def core():
    def build(through_router: bool):
        mqtt = Recorder()
        store, scheduler = BlockingStore(mqtt), Scheduler.start("core")
        refs = {}
        rules = DeviceRules(device_timeout_s=TIMEOUT_S)

        def make_device(uuid, known, restarts):
            return Device.start(DeviceLogic(uuid, rules), supervisor=refs["sup"], mqtt=mqtt, scheduler=scheduler,
                                store=store, availability=lambda u, online: ("avail", u, online),
                                encode_command=CommandEncoder(Settings), restarts=restarts,
                                deadlines_via=refs["router"] if through_router else None)

        refs["sup"] = DeviceSupervisor.start(Settings, make_device, mqtt, store)
        refs["router"] = Router.start(Settings, mqtt, refs["sup"], store)
        return refs["router"], refs["sup"], mqtt, store

    yield build
    pykka.ActorRegistry.stop_all()


def status_of(sup) -> str | None:
    ref = sup.proxy().device_refs().get().get(UUID)
    return ref.ask(GetSnapshot())["state"]["status"] if ref is not None else None


def run(build, through_router: bool) -> list:
    router, sup, mqtt, store = build(through_router)
    router.tell(inbound("announce", {"device_type": "sensor_board", "firmware_version": "1", "boot_id": 1,
                                     "status_interval": 0.1}, 1))
    wait_until(lambda: status_of(sup) == "online", 5, what="device online")
    announced = time.time()
    # The device keeps reporting (every 0.1 s, as it announced), but the
    # Router is held up (its store link blocks) until the timeout has long
    # passed: every report waits in its mailbox.
    store.open.clear()
    mid = 2
    while time.time() < announced + 2 * TIMEOUT_S:
        router.tell(inbound("status", {"uptime": mid, "free_memory": 1000, "wifi_signal": -60}, mid, qos=0))
        mid += 1
        threading.Event().wait(0.1)  # the device's reporting period
    assert store.waiting.is_set(), "the Router never reached the store link"
    store.open.set()
    # Everything queued is handled: the report, then the deadline.
    wait_until(lambda: router.ask(GetSnapshot())["mailbox"] == 0, 5, what="router caught up")
    sup.ask(GetSnapshot())
    ref = sup.proxy().device_refs().get()[UUID]
    ref.ask(GetSnapshot())
    return availability(mqtt)


def test_a_report_queued_behind_a_busy_router_keeps_the_device_online(core):
    published = run(core, through_router=True)
    assert ("avail", UUID, False) not in published


def test_control_a_deadline_told_directly_overtakes_the_queued_report(core):
    # Without the Router in between the device goes offline although it
    # reported in time: what the first test guards against.
    published = run(core, through_router=False)
    assert ("avail", UUID, False) in published
