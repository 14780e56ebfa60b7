from __future__ import annotations

import pytest

from protocol.topics import (
    broadcast_topic,
    device_topic,
    discovery_topic,
    gateway_status_topic,
    is_valid_uuid,
    parse_v1,
    v1_subscriptions,
)
from protocol.values import BAD_TOPIC, BAD_UUID, Dialect, Kind, Rejected, Topic

U = "550e8400-e29b-41d4-a716-446655440000"

TABLE = [
    ("devices/{u}/announce", Kind.ANNOUNCE),
    ("devices/{u}/status", Kind.STATUS),
    ("devices/{u}/telemetry", Kind.TELEMETRY),
    ("devices/{u}/relay/status", Kind.RELAY_STATUS),
    ("devices/{u}/response", Kind.RESPONSE),
    ("discovery/{u}", Kind.DISCOVERY),
    ("devices/{u}/command", Kind.COMMAND),
    ("devices/{u}/relay/command", Kind.RELAY_COMMAND),
    ("devices/{u}/availability", Kind.AVAILABILITY),
]


@pytest.mark.parametrize("prefix", ["autocore", "fleet/a", "x/y/z"])
@pytest.mark.parametrize("shape, kind", TABLE)
def test_every_device_topic_of_the_table(prefix, shape, kind):
    assert parse_v1(f"{prefix}/" + shape.format(u=U), prefix) == Topic(kind, U, Dialect.V1)


@pytest.mark.parametrize("prefix", ["autocore", "fleet/a"])
def test_gateway_topics(prefix):
    assert parse_v1(f"{prefix}/gateway/status", prefix) == Topic(Kind.GATEWAY_STATUS, None, Dialect.V1)
    assert parse_v1(f"{prefix}/system/broadcast", prefix) == Topic(Kind.BROADCAST, None, Dialect.V1)


@pytest.mark.parametrize(
    "topic",
    [
        "autocore/devices/x",
        "autocore/devices/x/foo",
        "autocore/devices/x/relay",
        "autocore/devices/x/relay/foo",
        "autocore/devices/x/telemetry/extra",
        "autocore/devices/x/status/operational",
        "autocore/devices",
        "autocore/discovery",
        "autocore/discovery/x/y",
        "autocore/gateway",
        "autocore/gateway/status/x",
        "autocore/system/foo",
        "autocore",
        "autocore/",
        "other/devices/x/telemetry",
        "autocorex/devices/x/telemetry",
        "/autocore/devices/x/telemetry",
        "",
    ],
)
def test_unknown_shape_is_bad_topic(topic):
    with pytest.raises(Rejected) as caught:
        parse_v1(topic, "autocore")
    assert caught.value.reason == BAD_TOPIC


@pytest.mark.parametrize("level", ["", "+", "#", "a" * 65, "a.b", "ção", "-abc", "_abc", "a b", "a\n", "a\x00"])
@pytest.mark.parametrize("shape", ["devices/{u}/telemetry", "devices/{u}/relay/status", "discovery/{u}"])
def test_bad_uuid_level(level, shape):
    with pytest.raises(Rejected) as caught:
        parse_v1("autocore/" + shape.format(u=level), "autocore")
    assert caught.value.reason == BAD_UUID
    assert "not 1 to 64 characters" in caught.value.detail


@pytest.mark.parametrize("uuid", ["esp32-relay-01", U, "a", "A" * 64, "0_x", "9"])
def test_valid_uuids(uuid):
    assert is_valid_uuid(uuid)


@pytest.mark.parametrize("uuid", ["", "A" * 65, "-a", "a/b", "a+", None, 5, "é"])
def test_invalid_uuids(uuid):
    assert not is_valid_uuid(uuid)


def test_builders():
    assert device_topic("autocore", U, Kind.TELEMETRY) == f"autocore/devices/{U}/telemetry"
    assert device_topic("fleet/a", U, Kind.RELAY_COMMAND) == f"fleet/a/devices/{U}/relay/command"
    assert discovery_topic("fleet/a", U) == f"fleet/a/discovery/{U}"
    assert gateway_status_topic("fleet/a") == "fleet/a/gateway/status"
    assert broadcast_topic("autocore") == "autocore/system/broadcast"


def test_builders_refuse_bad_uuid_and_non_device_kind():
    with pytest.raises(Rejected) as caught:
        device_topic("autocore", "+", Kind.COMMAND)
    assert caught.value.reason == BAD_UUID
    with pytest.raises(Rejected) as caught:
        device_topic("autocore", U, Kind.DISCOVERY)
    assert caught.value.reason == BAD_TOPIC


def test_subscriptions():
    assert v1_subscriptions("autocore") == [
        ("autocore/devices/+/announce", 1),
        ("autocore/devices/+/status", 1),
        ("autocore/devices/+/telemetry", 1),
        ("autocore/devices/+/relay/status", 1),
        ("autocore/devices/+/response", 1),
        ("autocore/discovery/+", 1),
    ]
    assert v1_subscriptions("fleet/a")[0] == ("fleet/a/devices/+/announce", 1)
