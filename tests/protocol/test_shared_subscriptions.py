"""Shared subscriptions for several instances (issue 13): which filters a
share group spreads, and, on a real Mosquitto, that two clients subscribed
the way `subscriptions(prefix, group)` says split the telemetry between
them (each message to exactly one) while both get every control message."""

from __future__ import annotations

import threading
from collections import Counter

import paho.mqtt.client as mqtt
import pytest

from protocol.decode import check_share_group, no_local, shared_filters, subscriptions
from tests.support.broker import wait_until


def test_without_a_group_nothing_is_shared():
    assert subscriptions("autocore", "") == subscriptions("autocore")
    assert not any(f.startswith("$share/") for f, _ in subscriptions("autocore"))


def test_a_group_shares_the_high_rate_filters_and_only_those():
    plain = dict(subscriptions("acme"))
    grouped = dict(subscriptions("acme", "depot"))
    assert len(grouped) == len(plain)
    shared = {f for f in grouped if f.startswith("$share/")}
    assert shared == {f"$share/depot/{f}" for f in shared_filters("acme")}
    assert {"$share/depot/acme/devices/+/telemetry", "$share/depot/acme/devices/+/relay/status",
            "$share/depot/autocore/devices/+/relays/state",
            "$share/depot/autocore/devices/+/status/operational"} <= shared
    # control topics reach every instance
    for control in ("acme/devices/+/announce", "acme/devices/+/status", "acme/devices/+/response",
                    "acme/discovery/+", "autocore/devices/+/status",
                    "autocore/errors/+/+", "autocore/devices/+/relays/set"):
        assert control in grouped, control
    # every shared filter is one the gateway subscribes to anyway, and none is No Local
    assert set(shared_filters("acme")) <= set(plain)
    assert not any(no_local(f) for f in shared_filters("acme"))


def test_share_group_names():
    assert check_share_group("depot-1") == "depot-1"
    for bad in ("", "a/b", "a+", "#"):
        with pytest.raises(ValueError, match="share group"):
            check_share_group(bad)
        if bad:  # (empty is no group at all)
            with pytest.raises(ValueError):
                subscriptions("autocore", bad)


def test_mosquitto_spreads_shared_filters_and_copies_control_ones(broker):
    got: dict[str, Counter] = {"i1": Counter(), "i2": Counter()}
    lock = threading.Lock()
    clients = []
    for name in got:
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"share-{name}", protocol=mqtt.MQTTv5)
        subscribed = threading.Event()

        def on_message(client, userdata, msg, name=name):
            with lock:
                got[name][msg.topic] += 1

        c.on_message = on_message
        c.on_subscribe = lambda *a, ev=subscribed: ev.set()
        c.connect("127.0.0.1", broker.port)
        c.loop_start()
        c.subscribe([(f, mqtt.SubscribeOptions(qos=q)) for f, q in subscriptions("autocore", "depot")])
        assert subscribed.wait(10)
        clients.append(c)
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="share-pub", protocol=mqtt.MQTTv5)
    pub.connect("127.0.0.1", broker.port)
    pub.loop_start()
    try:
        for i in range(200):
            pub.publish(f"autocore/devices/dev-{i % 10}/telemetry", b'{"seq": 1}', qos=1).wait_for_publish(5)
        for i in range(10):
            pub.publish(f"autocore/devices/dev-{i}/announce", b"{}", qos=1).wait_for_publish(5)

        def telemetry(name: str) -> int:
            return sum(n for t, n in got[name].items() if t.endswith("/telemetry"))

        def announces(name: str) -> int:
            return sum(n for t, n in got[name].items() if t.endswith("/announce"))

        wait_until(lambda: telemetry("i1") + telemetry("i2") >= 200 and announces("i1") >= 10 and announces("i2") >= 10,
                   10, what="every message delivered")
        # each telemetry message to exactly one instance, both had a share;
        # each control message to both
        assert telemetry("i1") + telemetry("i2") == 200 and telemetry("i1") > 0 and telemetry("i2") > 0
        assert announces("i1") == announces("i2") == 10
    finally:
        for c in (*clients, pub):
            c.loop_stop()
            c.disconnect()
