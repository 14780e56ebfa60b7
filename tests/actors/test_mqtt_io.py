"""MqttIO's own rules, with paho replaced by a stand-in (the broker is not
what is under test here; tests/integration covers MqttIO on a real one):
commands leave ahead of other traffic, a publish paho refuses for lack of
room stays queued in order until there is room, and acknowledgements go
only to the connection a message came on."""

import paho.mqtt.client as mqtt
import pytest

from actors.messages import Complete, Publish, Token
from actors.mqtt_io import MqttIO
from gateway.settings import Settings
from protocol.values import Publication


class Info:
    def __init__(self, rc):
        self.rc = rc


class FakeClient:
    """Accepts `room` publishes, then answers MQTT_ERR_QUEUE_SIZE until given more room."""

    def __init__(self, room):
        self.room = room
        self.published = []
        self.acked = []

    def publish(self, topic, payload, qos=0, retain=False):
        if self.room == 0:
            return Info(mqtt.MQTT_ERR_QUEUE_SIZE)
        self.room -= 1
        self.published.append(topic)
        return Info(mqtt.MQTT_ERR_SUCCESS)

    def ack(self, mid, qos):
        self.acked.append(mid)


def pub(topic, qos=1):
    return Publication(topic, b"x", qos)


@pytest.fixture
def io():
    actor = MqttIO(Settings(), [], pub("autocore/gateway/status"))
    yield actor
    actor.on_stop()


def test_commands_leave_ahead_of_other_traffic_and_backlog_keeps_order(io):
    io.client = FakeClient(room=1)
    io.handle(Publish(pub("avail/1")))  # goes at once: there is room
    for n in range(3):
        io.handle(Publish(pub(f"avail/{n + 2}")))
    io.handle(Publish(pub("cmd/1"), command=True))
    io.handle(Publish(pub("cmd/2"), command=True))
    assert io.client.published == ["avail/1"]
    assert io.counters["publish_backlogged"] >= 1
    io.client.room = 100  # paho made room (on_publish -> _Drain)
    io._drain()
    assert io.client.published == ["avail/1", "cmd/1", "cmd/2", "avail/2", "avail/3", "avail/4"]
    assert io.state()["outgoing_backlog"] == {"commands": 0, "other": 0}


def test_acks_go_only_to_the_connection_the_message_came_on(io):
    io.client = FakeClient(room=0)
    io.generation = 2
    io.received = 4
    io.handle(Complete((Token(1, 10, 1), Token(2, 11, 1), Token(2, 12, 0), Token(2, 13, 1))))
    assert io.client.acked == [11, 13]  # QoS 0 needs none; connection 1's is redelivered by the broker
    assert io.counters["acks_dropped_old_connection"] == 1
    assert io.unacked == 0  # every one of them has left the pipeline
