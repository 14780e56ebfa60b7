"""MqttIO's two paho paths on a real Mosquitto: the tuned client (paho's
internals, pinned) and paho's public path (`client.ack`), taken when the
installed paho lacks those internals. On both, a QoS 1 message is
acknowledged only when `Complete` names it (after the store's commit):
what is not completed comes back on the next connection, what is does not."""

import logging

import paho.mqtt.client as mqtt
import pykka
import pytest

from actors import paho_client
from actors.messages import Complete, GetSnapshot
from actors.mqtt_io import MqttIO
from gateway.settings import Settings
from protocol.values import Publication
from tests.support.broker import wait_until
from tests.support.recorder import Recorder

N = 20


@pytest.fixture(params=["tuned", "public"])
def path(request, monkeypatch, caplog):
    if request.param == "public":
        # A paho without one of the internals the tuned client overrides.
        monkeypatch.setattr(paho_client, "HOOK_METHODS", paho_client.HOOK_METHODS + ("_handle_publish_v9",))
    caplog.set_level(logging.WARNING, logger="autocore.mqtt")
    yield request.param
    pykka.ActorRegistry.stop_all()


def start_io(broker):
    settings = Settings(mqtt_port=broker.port, mqtt_client_id="paho-paths")
    router = Recorder()  # stands in for the Router: told each InboundBatch from the network thread
    io = MqttIO.start(settings, [("t/#", 1)], Publication("gw/status", b"offline", 1, retain=True), router)
    io.proxy().start_network().get()
    wait_until(lambda: io.proxy().ever_subscribed.get().is_set(), 10, what="subscribed")
    return io, router


def publish(broker, topics):
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="publisher", protocol=mqtt.MQTTv5)
    pub.connect("127.0.0.1", broker.port)
    pub.loop_start()
    try:
        infos = [pub.publish(topic, b"{}", qos=1) for topic in topics]
        for info in infos:
            info.wait_for_publish(10)
            assert info.is_published()
    finally:
        pub.disconnect()
        pub.loop_stop()


def inbound(router):
    return [m for batch in list(router.told) for m in batch.messages]


def received(router, count, what):
    return wait_until(lambda: (lambda got: got if len(got) >= count else None)(inbound(router)), 10, what=what)


def test_qos1_is_acknowledged_only_after_complete_on_both_paths(broker, path, caplog):
    io, router = start_io(broker)
    state = io.ask(GetSnapshot())["state"]
    assert state["paho_path"] == path
    warned = [r for r in caplog.records if "public path" in r.getMessage()]
    assert bool(warned) == (path == "public")
    publish(broker, [f"t/{n}" for n in range(N)])
    received(router, N, f"{N} messages on the first connection")
    # None completed: the next session gets all of them again.
    io.stop()
    io, router = start_io(broker)
    again = received(router, N, "the uncompleted messages redelivered")
    assert sorted(m.topic for m in again) == sorted(f"t/{n}" for n in range(N))
    # Complete (as after a commit) the first half, and stop cleanly.
    done = [m for m in again if int(m.topic.split("/")[1]) < N // 2]
    io.tell(Complete(tuple(m.token for m in done)))
    wait_until(lambda: io.ask(GetSnapshot())["counters"].get("acks_written", 0) >= N // 2, 10, what="acks written")
    assert io.proxy().publish_and_disconnect(Publication("gw/status", b"offline", 1, retain=True), 5).get()
    io.stop()
    # The next session gets exactly the other half, then a marker published after it.
    io, router = start_io(broker)
    publish(broker, ["t/marker"])
    got = wait_until(lambda: (lambda g: g if any(m.topic == "t/marker" for m in g) else None)(inbound(router)),
                     10, what="the marker")
    assert sorted(m.topic for m in got if m.topic != "t/marker") == sorted(f"t/{n}" for n in range(N // 2, N))
