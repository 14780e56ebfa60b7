"""MqttIO's own rules, with paho replaced by a stand-in (the broker is not
what is under test here; tests/integration covers MqttIO on a real one):
commands leave ahead of other traffic, a publish paho refuses for lack of
room stays queued in order until there is room, and acknowledgements go
only to the connection a message came on."""

from collections import deque

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
        self.pending_acks = deque()

    def publish(self, topic, payload, qos=0, retain=False):
        if self.room == 0:
            return Info(mqtt.MQTT_ERR_QUEUE_SIZE)
        self.room -= 1
        self.published.append(topic)
        return Info(mqtt.MQTT_ERR_SUCCESS)


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
    # QoS 0 needs none; connection 1's is redelivered by the broker.
    assert list(io.client.pending_acks) == [(2, 11), (2, 13)]
    assert io.counters["acks_dropped_old_connection"] == 1
    assert io.unacked == 0  # every one of them has left the pipeline


class FakeSocket:
    def __init__(self, takes):
        self.takes = list(takes)  # bytes accepted by each send(); None: would block
        self.sent = b""

    def send(self, data):
        take = self.takes.pop(0) if self.takes else len(data)
        if take is None:
            raise BlockingIOError
        self.sent += data[:take]
        return min(take, len(data))

    def close(self):
        pass


def gateway_client(sock):
    from actors.paho_client import GatewayClient

    client = GatewayClient(mqtt.CallbackAPIVersion.VERSION2, client_id="t", protocol=mqtt.MQTTv5, manual_ack=True)
    client._sock = sock
    return client


def test_pubacks_go_in_one_write_for_the_current_connection_only():
    sock = FakeSocket([])
    client = gateway_client(sock)
    client.pending_acks.extend([(2, 1), (1, 2), (2, 300)])
    assert client.write_acks(generation=2) == 2
    assert sock.sent == bytes([0x40, 2, 0, 1, 0x40, 2, 1, 44])  # packet ids 1 and 300
    assert not client.acks_waiting()


def test_a_half_written_batch_of_pubacks_is_finished_before_anything_else():
    sock = FakeSocket([3, None])
    client = gateway_client(sock)
    client.pending_acks.extend([(1, 1), (1, 2)])
    assert client.write_acks(generation=1) == 2
    assert sock.sent == bytes([0x40, 2, 0])  # the socket took 3 bytes
    client.pending_acks.append((1, 3))
    assert client.write_acks(generation=1) == 0  # would block: nothing new starts
    assert client.write_acks(generation=1) == 1  # the rest of the batch, then the new one
    assert sock.sent == bytes([0x40, 2, 0, 1, 0x40, 2, 0, 2, 0x40, 2, 0, 3])


def test_no_puback_is_written_while_paho_has_a_packet_half_written():
    sock = FakeSocket([])
    client = gateway_client(sock)
    client._out_packet.append({"command": 0x30, "packet": b"xx", "pos": 1, "to_process": 1})
    client.pending_acks.append((1, 9))
    assert client.write_acks(generation=1) == 0
    assert sock.sent == b""
    client._out_packet.clear()
    assert client.write_acks(generation=1) == 1


def test_a_publish_without_properties_is_read_without_paho_s_message_objects():
    import struct

    got = []
    client = gateway_client(FakeSocket([]))
    client.on_message = lambda c, u, m: got.append((m.topic, m.payload, m.qos, m.mid, m.retain))
    topic = "autocore/devices/é-1/telemetry".encode()
    for qos, mid, props, retain in ((1, 7, b"\x00", 0), (0, 0, b"\x00", 1), (1, 8, b"\x02\x01\x01", 0)):
        body = struct.pack("!H", len(topic)) + topic + (struct.pack("!H", mid) if qos else b"") + props + b'{"a":1}'
        client._in_packet["command"] = 0x30 | (qos << 1) | retain
        client._in_packet["packet"] = bytearray(body)
        assert client._handle_publish() == mqtt.MQTT_ERR_SUCCESS
    # The third has a property (payload format indicator): paho's own path, same result.
    assert got == [("autocore/devices/é-1/telemetry", b'{"a":1}', 1, 7, False),
                   ("autocore/devices/é-1/telemetry", b'{"a":1}', 0, 0, True),
                   ("autocore/devices/é-1/telemetry", b'{"a":1}', 1, 8, False)]
