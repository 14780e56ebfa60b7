"""The plumbing of observed 2.2 relay commands around the pure rules: the
No Local subscription in MqttIO's on_connect, and the Router keeping a
board's answer in order with the command it answers (actors called
directly, their neighbours replaced by recorders; no threads, no broker)."""

from __future__ import annotations

import orjson
import paho.mqtt.client as mqtt
import pytest

from actors.messages import InboundBatch, RawInbound, Route, TelemetryRows, Token
from actors.mqtt_io import MqttIO
from actors.router import Router
from gateway.settings import Settings
from protocol.decode import subscriptions
from protocol.values import Publication
from tests.support.recorder import Recorder

RELAY = "esp32-9c1a77b0e2f41d03"
CONFIG_APP = orjson.dumps({"protocol_version": "2.2.0", "channel": 3, "state": True, "function_type": "toggle",
                           "user": "config_app", "timestamp": "2025-01-08T10:30:00Z"})
STATE = orjson.dumps({"protocol_version": "2.2.0", "uuid": RELAY, "board_id": 1, "channels": {"3": True}})


class SubscribingClient:
    def __init__(self):
        self.subscribed = []

    def subscribe(self, topics):
        self.subscribed.extend(topics)


class Flags:
    pass


class ReasonCode:
    is_failure = False


@pytest.fixture
def io():
    actor = MqttIO(Settings(), subscriptions("autocore"), Publication("autocore/gateway/status", b"x", 1))
    yield actor
    actor.on_stop()


def test_on_connect_subscribes_relays_set_with_no_local_and_nothing_else(io):
    client = SubscribingClient()
    io.actor_ref.tell = lambda message: None  # not started: Connected goes nowhere
    io._on_connect(client, None, Flags(), ReasonCode(), None)
    options = {topic: opts for topic, opts in client.subscribed}
    assert set(options) == {topic for topic, _ in subscriptions("autocore")}
    no_local = sorted(topic for topic, opts in options.items() if opts.noLocal)
    assert no_local == ["autocore/devices/+/relays/set"]
    set_options = options["autocore/devices/+/relays/set"]
    assert set_options.QoS == 1
    assert set_options.retainHandling == mqtt.SubscribeOptions.RETAIN_SEND_IF_NEW_SUB
    # heartbeats and commands/... stay unsubscribed
    assert not any("heartbeat" in topic or "/commands" in topic for topic in options)


def raw(topic, payload, mid):
    return RawInbound(topic, payload, 1, 1000.0 + mid / 1000, Token(1, mid, 1))


def route(*messages):
    supervisor, store, mqtt_io = Recorder(), Recorder(), Recorder()
    router = Router(Settings(), mqtt_io, supervisor, store)
    router.handle(InboundBatch(tuple(raw(t, p, n) for n, (t, p) in enumerate(messages, 1))))
    routes = [m for m in supervisor.told if isinstance(m, Route)]
    return routes, [m for m in store.told if isinstance(m, TelemetryRows)], router


def test_observed_command_goes_to_the_target_device_as_a_device_message():
    routes, rows, router = route((f"autocore/devices/{RELAY}/relays/set", CONFIG_APP))
    assert len(routes) == 1 and routes[0].seen == ()
    (uuid, msgs), = routes[0].messages
    assert uuid == RELAY and len(msgs) == 1
    m = msgs[0].message
    assert m.observed.state is True and m.alive is False and m.kind == "fw22_relay_set"
    assert rows == [] and not router.rejections


def test_a_state_report_after_an_observed_command_in_one_batch_stays_in_order():
    routes, rows, _ = route((f"autocore/devices/{RELAY}/relays/state", STATE),
                            (f"autocore/devices/{RELAY}/relays/set", CONFIG_APP),
                            (f"autocore/devices/{RELAY}/relays/state", STATE))
    (route_,) = routes
    # the report before the command takes the fast path; the one after goes with the command, in order
    assert [uuid for uuid, _ in route_.seen] == [RELAY]
    (uuid, msgs), = route_.messages
    assert [m.message.kind for m in msgs] == ["fw22_relay_set", "fw22_relays_state"]
    assert msgs[1].message.relay_states and msgs[1].rows  # its telemetry rows are stored with it
    assert len(rows) == 1 and len(rows[0].rows) == 1  # the first report's row


def test_a_malformed_relays_set_is_a_counted_rejection():
    _, _, router = route((f"autocore/devices/{RELAY}/relays/set", b'{"protocol_version": "2.2.0", "channel": 3}'))
    assert router.rejections == {"schema": 1}
    assert router.device_rejections(RELAY) == {"schema": 1}
