"""Firmware 2.2, device -> gateway: topics, subscriptions and golden decodes
of the payloads the boards in the field send (PROTOCOL.md, "Firmware 2.2
dialect")."""

from __future__ import annotations

import pytest

from protocol import codec, fw22
from protocol.values import (
    BAD_PROTOCOL_VERSION,
    BAD_TOPIC,
    BAD_UUID,
    SCHEMA,
    UUID_MISMATCH,
    Availability,
    DeviceFacts,
    Dialect,
    Encoding,
    Event,
    Kind,
    Message,
    Reading,
    RelayState,
    Rejected,
    Response,
    Topic,
)

RELAY = "esp32-9c1a77b0e2f41d03"
DISPLAY = "esp32-display-7f3a"

# PROTOCOL.md, the two payloads "as the relay board sends them", verbatim.
PROTOCOL_MD_STATUS = b"""{"protocol_version": "2.2.0", "uuid": "esp32-9c1a77b0e2f41d03", "timestamp": "1970-01-01T00:00:09Z",
 "status": "online", "firmware_version": "2.0.0", "ip_address": "0.0.0.0", "wifi_signal": -50,
 "free_memory": 198312, "uptime": 9, "board_id": 1, "type": "esp32_relay", "channels": 16}"""
PROTOCOL_MD_RELAYS_STATE = b"""{"protocol_version": "2.2.0", "uuid": "esp32-9c1a77b0e2f41d03", "timestamp": "1970-01-01T00:00:39Z",
 "board_id": 1, "channels": {"1": false, "2": true, "3": false, "4": false}}"""

# The display's status (PlatformIO firmware, MQTTClient::publishStatus).
DISPLAY_STATUS = b"""{"protocol_version":"2.2.0","uuid":"esp32-display-7f3a","timestamp":"2025-01-01T00:00:12Z",
"status":"online","device_type":"display","firmware_version":"2.2.0","ip_address":"192.168.4.23",
"wifi_signal":-61,"uptime":12,"last_seen":"2025-01-01T00:00:12Z",
"system":{"free_heap":151240,"heap_size":327680,"cpu_freq":240,"flash_size":4194304},
"display":{"type":"touch_2.4","resolution":"320x240","color_depth":"16bit","backlight":true},
"capabilities":{"touch":true,"color":true,"lvgl":true,"ota":true}}"""

# The relay's Last Will (mqtt_create_lwt_payload).
LAST_WILL = b"""{"protocol_version":"2.2.0","uuid":"esp32-9c1a77b0e2f41d03","timestamp":"1970-01-01T00:00:09Z",
"status":"offline","reason":"unexpected_disconnect","last_seen":"1970-01-01T00:00:09Z"}"""

# The relay rejecting a relays/set of ours (mqtt_publish_invalid_command_error:
# context.command is the payload it received, as text).
ERROR_ECHO = (
    b'{"protocol_version":"2.2.0","uuid":"esp32-9c1a77b0e2f41d03","timestamp":"1970-01-01T00:01:40Z",'
    b'"error_code":"ERR_002","error_type":"payload","error_message":"Invalid command received","board_id":1,'
    b'"context":{"command":"{\\"protocol_version\\":\\"2.2.0\\",\\"channel\\":17,\\"command\\":\\"on\\",'
    b'\\"momentary\\":false,\\"source\\":\\"autocore-gateway\\",\\"user\\":\\"gateway\\",\\"command_id\\":\\"42\\"}",'
    b'"reason":"invalid channel"}}'
)

# The relay ~1 s after the last heartbeat (mqtt_publish_heartbeat_timeout_error).
ERROR_HEARTBEAT_TIMEOUT = (
    b'{"protocol_version":"2.2.0","uuid":"esp32-9c1a77b0e2f41d03","timestamp":"1970-01-01T00:02:11Z",'
    b'"error_code":"ERR_003","error_type":"timeout","error_message":"Heartbeat timeout","board_id":1,'
    b'"context":{"channel":3,"elapsed_ms":1100,"timeout_ms":1000}}'
)

SAFETY_SHUTOFF = (
    b'{"protocol_version":"2.2.0","uuid":"esp32-9c1a77b0e2f41d03","timestamp":"1970-01-01T00:02:11Z",'
    b'"board_id":1,"event":"safety_shutoff","channel":3,"reason":"heartbeat_timeout","timeout_ms":1000,'
    b'"source_uuid":"autocore-gateway","last_heartbeat":"1970-01-01T00:02:10Z"}'
)
RELAY_CHANGE = (
    b'{"protocol_version":"2.2.0","uuid":"esp32-9c1a77b0e2f41d03","board_id":1,'
    b'"timestamp":"1970-01-01T00:02:12Z","event":"relay_change","channel":2,"state":true,"trigger":"mqtt"}'
)


def decode(topic: str, payload: bytes) -> Message:
    parsed = fw22.parse_topic(topic)
    assert parsed is not None
    obj, encoding = codec.decode(payload, 65536)
    return fw22.decode(parsed, obj, encoding)


def rejected(topic: str, payload: bytes | dict) -> Rejected:
    if isinstance(payload, dict):
        payload = codec.encode(payload)
    with pytest.raises(Rejected) as info:
        decode(topic, payload)
    return info.value


def fw22_message(**fields) -> Message:
    return Message(dialect=Dialect.FW22, device_ts=None, trust_clock=False, protocol_version="2.2.0", **fields)


# --- topics -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        (f"autocore/devices/{RELAY}/status", Topic(Kind.FW22_STATUS, RELAY, Dialect.FW22)),
        (f"autocore/devices/{RELAY}/relays/state", Topic(Kind.FW22_RELAYS_STATE, RELAY, Dialect.FW22)),
        (f"autocore/devices/{DISPLAY}/status/operational", Topic(Kind.FW22_LEVEL, DISPLAY, Dialect.FW22, "status/operational")),
        (f"autocore/devices/{DISPLAY}/telemetry/data", Topic(Kind.FW22_LEVEL, DISPLAY, Dialect.FW22, "telemetry/data")),
        (f"autocore/devices/{DISPLAY}/diagnostics", Topic(Kind.FW22_LEVEL, DISPLAY, Dialect.FW22, "diagnostics")),
        (f"autocore/devices/{DISPLAY}/display/touch", Topic(Kind.FW22_LEVEL, DISPLAY, Dialect.FW22, "display/touch")),
        (f"autocore/devices/{DISPLAY}/config/ack", Topic(Kind.FW22_LEVEL, DISPLAY, Dialect.FW22, "config/ack")),
        (f"autocore/devices/{DISPLAY}/some/new/level", Topic(Kind.FW22_LEVEL, DISPLAY, Dialect.FW22, "some/new/level")),
        ("autocore/telemetry/relays/data", Topic(Kind.FW22_RELAY_EVENTS, None, Dialect.FW22)),
        (f"autocore/errors/{RELAY}/payload", Topic(Kind.FW22_ERROR, RELAY, Dialect.FW22, "payload")),
        (f"autocore/errors/{DISPLAY}/PROTOCOL_MISMATCH", Topic(Kind.FW22_ERROR, DISPLAY, Dialect.FW22, "PROTOCOL_MISMATCH")),
    ],
)
def test_parse_topic(topic, expected):
    assert fw22.parse_topic(topic) == expected


@pytest.mark.parametrize(
    "topic",
    [
        f"autocore/devices/{RELAY}/announce",
        f"autocore/devices/{RELAY}/telemetry",
        f"autocore/devices/{RELAY}/relay/status",
        f"autocore/devices/{RELAY}/response",
        f"autocore/devices/{RELAY}/command",
        f"autocore/devices/{RELAY}/relay/command",
        f"autocore/devices/{RELAY}/availability",
        f"autocore/discovery/{RELAY}",
        "autocore/gateway/status",
        "autocore/system/broadcast",
        "fleet/devices/x/status",  # another prefix: 2.2 boards always use autocore
        "autocore",
        "autocore/devices",
        "",
    ],
)
def test_parse_topic_not_fw22(topic):
    assert fw22.parse_topic(topic) is None


@pytest.mark.parametrize(
    "topic",
    [
        f"autocore/devices/{RELAY}/relays/heartbeat",
        f"autocore/devices/{RELAY}/relays/set/extra",
        f"autocore/devices/{RELAY}/commands/reboot",
        f"autocore/devices/{RELAY}/commands",
        f"autocore/devices/{RELAY}",
        f"autocore/devices/{RELAY}/",
        f"autocore/devices/{RELAY}/status/",
        f"autocore/devices/{RELAY}/a//b",
        f"autocore/devices/{RELAY}/display/+",
        f"autocore/errors/{RELAY}",
        f"autocore/errors/{RELAY}/payload/more",
        f"autocore/errors/{RELAY}/",
        "autocore/telemetry/can/rpm",
        "autocore/telemetry/relays",
    ],
)
def test_parse_topic_bad_topic(topic):
    with pytest.raises(Rejected) as info:
        fw22.parse_topic(topic)
    assert info.value.reason == BAD_TOPIC
    assert info.value.detail


@pytest.mark.parametrize(
    "topic",
    [
        "autocore/devices/+/status",
        "autocore/devices/#/relays/state",
        "autocore/devices//status",
        "autocore/devices/-leading-dash/status",
        "autocore/devices/has space/diagnostics",
        f"autocore/devices/{'x' * 65}/status",
        "autocore/errors/+/payload",
        "autocore/errors/bad.uuid/payload",
    ],
)
def test_parse_topic_bad_uuid(topic):
    with pytest.raises(Rejected) as info:
        fw22.parse_topic(topic)
    assert info.value.reason == BAD_UUID


def test_level_source_is_the_last_level():
    assert fw22.level_source("status/operational") == "operational"
    assert fw22.level_source("telemetry/data") == "data"
    assert fw22.level_source("diagnostics") == "diagnostics"
    assert fw22.level_source("display/touch") == "touch"
    assert fw22.level_source("config/ack") == "ack"


# --- subscriptions ----------------------------------------------------------


def matches(topic_filter: str, topic: str) -> bool:
    """MQTT topic filter matching (+ one level, # the rest)."""
    f_levels, t_levels = topic_filter.split("/"), topic.split("/")
    for i, level in enumerate(f_levels):
        if level == "#":
            return True
        if i >= len(t_levels) or (level != "+" and level != t_levels[i]):
            return False
    return len(f_levels) == len(t_levels)


def test_subscriptions_are_exactly_the_inbound_table():
    assert fw22.subscriptions() == [
        ("autocore/devices/+/status", 1),
        ("autocore/devices/+/relays/state", 1),
        ("autocore/devices/+/status/operational", 1),
        ("autocore/devices/+/telemetry/data", 1),
        ("autocore/devices/+/diagnostics", 1),
        ("autocore/devices/+/display/touch", 1),
        ("autocore/devices/+/config/ack", 1),
        ("autocore/telemetry/relays/data", 1),
        ("autocore/errors/+/+", 1),
        ("autocore/devices/+/relays/set", 1),  # observed only (No Local): others' relay commands
    ]


@pytest.mark.parametrize(
    "board_topic",
    [
        f"autocore/devices/{RELAY}/relays/heartbeat",
        f"autocore/devices/{RELAY}/commands/reboot",
        f"autocore/devices/{RELAY}/commands/ota",
        f"autocore/devices/{RELAY}/commands",
    ],
)
def test_subscriptions_never_match_board_to_board_topics(board_topic):
    for topic_filter, _ in fw22.subscriptions():
        assert "#" not in topic_filter
        assert not matches(topic_filter, board_topic), topic_filter


def test_every_subscription_yields_fw22_topics():
    for topic_filter, qos in fw22.subscriptions():
        assert qos == 1
        topic = topic_filter.replace("+", RELAY, 1).replace("+", "payload")
        parsed = fw22.parse_topic(topic)
        assert parsed is not None and parsed.dialect is Dialect.FW22


# --- golden decodes ---------------------------------------------------------


def test_protocol_md_status():
    assert decode(f"autocore/devices/{RELAY}/status", PROTOCOL_MD_STATUS) == fw22_message(
        uuid="esp32-9c1a77b0e2f41d03",
        kind=Kind.FW22_STATUS,
        encoding=Encoding.JSON,
        alive=True,
        availability=Availability(online=True),
        facts=DeviceFacts(
            device_type="esp32_relay", firmware_version="2.0.0", ip_address="0.0.0.0", relay_count=16, capabilities=()
        ),
        readings=(
            Reading(source="status", metric="wifi_signal", value=-50.0),
            Reading(source="status", metric="free_memory", value=198312.0),
            Reading(source="status", metric="uptime", value=9.0),
        ),
    )


def test_protocol_md_relays_state():
    assert decode(f"autocore/devices/{RELAY}/relays/state", PROTOCOL_MD_RELAYS_STATE) == fw22_message(
        uuid="esp32-9c1a77b0e2f41d03",
        kind=Kind.FW22_RELAYS_STATE,
        alive=True,
        relay_states=(
            RelayState(relay_id=1, state=False),
            RelayState(relay_id=2, state=True),
            RelayState(relay_id=3, state=False),
            RelayState(relay_id=4, state=False),
        ),
        readings=(
            Reading(source="relay", metric="relay.1.state", value=0.0),
            Reading(source="relay", metric="relay.2.state", value=1.0),
            Reading(source="relay", metric="relay.3.state", value=0.0),
            Reading(source="relay", metric="relay.4.state", value=0.0),
        ),
    )


def test_relays_state_sixteen_channels_sorted_numerically():
    channels = {str(n): n % 3 == 0 for n in (10, 2, 16, 1, 9)}
    obj = {"protocol_version": "2.2.0", "uuid": RELAY, "board_id": 1, "channels": channels}
    message = decode(f"autocore/devices/{RELAY}/relays/state", codec.encode(obj))
    assert [(r.relay_id, r.state) for r in message.relay_states] == [
        (1, False), (2, False), (9, True), (10, False), (16, False)
    ]
    assert [r.metric for r in message.readings] == [
        "relay.1.state", "relay.2.state", "relay.9.state", "relay.10.state", "relay.16.state"
    ]


def test_display_status_nested_objects():
    assert decode(f"autocore/devices/{DISPLAY}/status", DISPLAY_STATUS) == fw22_message(
        uuid="esp32-display-7f3a",
        kind=Kind.FW22_STATUS,
        alive=True,
        availability=Availability(online=True),
        facts=DeviceFacts(
            device_type="display",
            firmware_version="2.2.0",
            ip_address="192.168.4.23",
            capabilities={"touch": True, "color": True, "lvgl": True, "ota": True},
        ),
        readings=(
            Reading(source="status", metric="wifi_signal", value=-61.0),
            Reading(source="status", metric="uptime", value=12.0),
            Reading(source="status", metric="system.free_heap", value=151240.0),
            Reading(source="status", metric="system.heap_size", value=327680.0),
            Reading(source="status", metric="system.cpu_freq", value=240.0),
            Reading(source="status", metric="system.flash_size", value=4194304.0),
            Reading(source="status", metric="display.backlight", value=1.0),
        ),
    )


def test_display_status_as_msgpack_keeps_encoding():
    obj, _ = codec.decode(DISPLAY_STATUS, 65536)
    message = decode(f"autocore/devices/{DISPLAY}/status", codec.encode(obj, Encoding.MSGPACK))
    assert message.encoding is Encoding.MSGPACK
    assert message.facts.device_type == "display"
    assert len(message.readings) == 7


def test_status_type_wins_over_device_type():
    obj = {"protocol_version": "2.2.0", "status": "online", "type": "esp32_relay", "device_type": "relay"}
    assert decode(f"autocore/devices/{RELAY}/status", codec.encode(obj)).facts.device_type == "esp32_relay"


def test_status_channels_object_is_not_a_relay_count():
    obj = {"protocol_version": "2.2.0", "status": "online", "channels": {"1": True}}
    message = decode(f"autocore/devices/{RELAY}/status", codec.encode(obj))
    assert message.facts.relay_count is None
    assert message.relay_states == () and message.readings == ()


def test_status_without_status_field_is_a_report():
    obj = {"protocol_version": "2.2.0", "uptime": 30, "free_memory": 1000}
    message = decode(f"autocore/devices/{RELAY}/status", codec.encode(obj))
    assert message.availability is None
    assert message.alive is True
    assert [(r.metric, r.value) for r in message.readings] == [("uptime", 30.0), ("free_memory", 1000.0)]


def test_last_will():
    assert decode(f"autocore/devices/{RELAY}/status", LAST_WILL) == fw22_message(
        uuid="esp32-9c1a77b0e2f41d03",
        kind=Kind.FW22_STATUS,
        alive=False,
        availability=Availability(online=False, reason="unexpected_disconnect"),
    )


def test_last_will_without_reason():
    obj = {"protocol_version": "2.2.0", "uuid": RELAY, "status": "offline"}
    message = decode(f"autocore/devices/{RELAY}/status", codec.encode(obj))
    assert message.availability == Availability(online=False, reason=None)
    assert message.readings == () and message.facts is None


def test_level_operational():
    payload = codec.encode(
        {
            "protocol_version": "2.2.0", "uuid": DISPLAY, "timestamp": "2025-01-01T00:00:00Z", "board_id": 2,
            "operational": True, "screen": "home", "metrics": {"fps": 60, "cpu_usage": 23.5},
            "usage_stats": {"touches_today": 14}, "errors": [1, 2],
        }
    )
    assert decode(f"autocore/devices/{DISPLAY}/status/operational", payload) == fw22_message(
        uuid=DISPLAY,
        kind=Kind.FW22_LEVEL,
        alive=True,
        readings=(
            Reading(source="operational", metric="operational", value=1.0),
            Reading(source="operational", metric="metrics.fps", value=60.0),
            Reading(source="operational", metric="metrics.cpu_usage", value=23.5),
            Reading(source="operational", metric="usage_stats.touches_today", value=14.0),
        ),
    )


def test_level_telemetry_data_source_is_data():
    payload = codec.encode({"protocol_version": "2.2.0", "metrics": {"free_heap": 100}})
    message = decode(f"autocore/devices/{DISPLAY}/telemetry/data", payload)
    assert message.readings == (Reading(source="data", metric="metrics.free_heap", value=100.0),)


@pytest.mark.parametrize("level", ["config/ack", "display/touch", "diagnostics", "an/unknown/level"])
def test_level_without_numbers_is_still_a_sign_of_life(level):
    payload = codec.encode({"protocol_version": "2.2.0", "uuid": DISPLAY, "result": "ok", "screen": "home"})
    message = decode(f"autocore/devices/{DISPLAY}/{level}", payload)
    assert message.alive is True
    assert message.readings == ()
    assert message.kind is Kind.FW22_LEVEL


def test_text_numbers_are_not_readings():
    payload = codec.encode({"protocol_version": "2.2.0", "version": "2.0", "count": "12", "n": 3})
    message = decode(f"autocore/devices/{DISPLAY}/diagnostics", payload)
    assert message.readings == (Reading(source="diagnostics", metric="n", value=3.0),)


def test_safety_shutoff():
    obj, _ = codec.decode(SAFETY_SHUTOFF, 65536)
    assert decode("autocore/telemetry/relays/data", SAFETY_SHUTOFF) == fw22_message(
        uuid="esp32-9c1a77b0e2f41d03",
        kind=Kind.FW22_RELAY_EVENTS,
        alive=False,
        events=(Event(event="safety_shutoff", detail=obj, channel=3),),
    )


def test_relay_change():
    obj, _ = codec.decode(RELAY_CHANGE, 65536)
    message = decode("autocore/telemetry/relays/data", RELAY_CHANGE)
    assert message.events == (Event(event="relay_change", detail=obj, channel=2),)
    assert message.relay_states == () and message.readings == ()
    assert message.uuid == RELAY and message.alive is False


def test_error_with_echoed_command_fails_our_command():
    obj, _ = codec.decode(ERROR_ECHO, 65536)
    assert decode(f"autocore/errors/{RELAY}/payload", ERROR_ECHO) == fw22_message(
        uuid="esp32-9c1a77b0e2f41d03",
        kind=Kind.FW22_ERROR,
        alive=True,
        events=(Event(event="error", detail=obj, channel=17),),
        response=Response(
            command_id="42", outcome="failed", error_message="ERR_002: Invalid command received (invalid channel)"
        ),
    )


def test_error_echo_as_object():
    obj = {
        "protocol_version": "2.2.0", "uuid": RELAY, "error_code": "ERR_001", "error_message": "Relay busy",
        "context": {"command": {"channel": 4, "command": "on", "command_id": "7"}},
    }
    message = decode(f"autocore/errors/{RELAY}/command", codec.encode(obj))
    assert message.response == Response(command_id="7", outcome="failed", error_message="ERR_001: Relay busy")
    assert message.events[0].channel == 4


def test_error_echo_cut_short_still_names_the_command():
    echo = '{"protocol_version":"2.2.0","channel":3,"command":"on","momentary":false,"command_id":"99","source":"autocore-ga'
    obj = {"protocol_version": "2.2.0", "error_code": "ERR_002", "context": {"command": echo}}
    message = decode(f"autocore/errors/{RELAY}/payload", codec.encode(obj))
    assert message.response == Response(
        command_id="99", outcome="failed", error_message="ERR_002: the device reported a payload error"
    )


def test_error_without_a_command_is_only_an_event():
    obj, _ = codec.decode(ERROR_HEARTBEAT_TIMEOUT, 65536)
    message = decode(f"autocore/errors/{RELAY}/timeout", ERROR_HEARTBEAT_TIMEOUT)
    assert message == fw22_message(
        uuid=RELAY, kind=Kind.FW22_ERROR, alive=True, events=(Event(event="error", detail=obj, channel=3),)
    )


@pytest.mark.parametrize("command", ["heartbeat", "", 5, None, {"channel": 1}, "{not json", ["x"]])
def test_error_context_command_without_id(command):
    obj = {"protocol_version": "2.2.0", "error_code": 8, "context": {"command": command}}
    message = decode(f"autocore/errors/{DISPLAY}/PROTOCOL_MISMATCH", codec.encode(obj))
    assert message.response is None
    assert message.events[0].event == "error"


def test_display_error_numeric_code():
    obj = {
        "protocol_version": "2.2.0", "uuid": DISPLAY, "error_code": 8, "error_type": "PROTOCOL_MISMATCH",
        "error_message": "Missing or invalid protocol_version", "device_type": "display",
        "context": {"command": '{"command_id": 12}'},
    }
    message = decode(f"autocore/errors/{DISPLAY}/PROTOCOL_MISMATCH", codec.encode(obj))
    assert message.response == Response(
        command_id="12", outcome="failed", error_message="8: Missing or invalid protocol_version"
    )


# --- bad input --------------------------------------------------------------

EVERY_TOPIC = [
    f"autocore/devices/{RELAY}/status",
    f"autocore/devices/{RELAY}/relays/state",
    f"autocore/devices/{RELAY}/status/operational",
    f"autocore/devices/{RELAY}/diagnostics",
    "autocore/telemetry/relays/data",
    f"autocore/errors/{RELAY}/payload",
]
GOOD = {
    "uuid": RELAY, "status": "online", "channels": {"1": True}, "event": "relay_change", "channel": 1,
}


@pytest.mark.parametrize("topic", EVERY_TOPIC)
def test_every_topic_accepts_the_good_payload(topic):
    assert decode(topic, codec.encode({"protocol_version": "2.2.0", **GOOD})).uuid == RELAY


@pytest.mark.parametrize("topic", EVERY_TOPIC)
@pytest.mark.parametrize(
    ("version", "detail"),
    [
        (None, "protocol_version: required"),
        ("1.0.0", 'expected "2.x"'),
        ("3.0.0", 'expected "2.x"'),
        ("2", 'expected "2.x"'),
        ("2.", 'expected "2.x"'),
        ("v2.2.0", 'expected "2.x"'),
        (2.2, "expected text"),
    ],
)
def test_protocol_version_required(topic, version, detail):
    obj = dict(GOOD)
    if version is not None:
        obj["protocol_version"] = version
    error = rejected(topic, obj)
    assert error.reason == BAD_PROTOCOL_VERSION
    assert detail in error.detail


@pytest.mark.parametrize("version", ["2.2.0", "2.0", "2.10.3", "2.2.0-beta"])
def test_protocol_version_accepted(version):
    obj = {**GOOD, "protocol_version": version}
    assert decode(f"autocore/devices/{RELAY}/status", codec.encode(obj)).protocol_version == version


@pytest.mark.parametrize("topic", [t for t in EVERY_TOPIC if "telemetry/relays" not in t])
def test_uuid_mismatch(topic):
    error = rejected(topic, {"protocol_version": "2.2.0", **GOOD, "uuid": "esp32-other"})
    assert error.reason == UUID_MISMATCH
    assert "esp32-other" in error.detail and RELAY in error.detail


def test_uuid_of_wrong_type():
    error = rejected(f"autocore/devices/{RELAY}/status", {"protocol_version": "2.2.0", "uuid": 5})
    assert (error.reason, error.detail) == (SCHEMA, "uuid: expected text, got number")


@pytest.mark.parametrize(
    ("channels", "detail"),
    [
        (None, "channels: required"),
        ([True, False], "channels: expected an object"),
        (16, "channels: expected an object"),
        ({"one": True}, "channels: key 'one' is not a channel number"),
        ({"0": True}, "channels: key '0' is not a channel number"),
        ({"01": True}, "channels: key '01' is not a channel number"),
        ({"-1": True}, "channels: key '-1' is not a channel number"),
        ({"1": 1}, "channels.1: expected true or false, got number"),
        ({"1": "on"}, "channels.1: expected true or false, got text"),
        ({"2": {"state": True}}, "channels.2: expected true or false, got object"),
    ],
)
def test_relays_state_wrong_shape(channels, detail):
    obj = {"protocol_version": "2.2.0", "uuid": RELAY}
    if channels is not None:
        obj["channels"] = channels
    error = rejected(f"autocore/devices/{RELAY}/relays/state", obj)
    assert error.reason == SCHEMA
    assert error.detail.startswith(detail), error.detail


def test_status_unknown_value():
    error = rejected(f"autocore/devices/{RELAY}/status", {"protocol_version": "2.2.0", "status": "rebooting"})
    assert (error.reason, error.detail) == (SCHEMA, "status: expected \"online\" or \"offline\", got 'rebooting'")


@pytest.mark.parametrize("field", ["type", "device_type", "firmware_version", "ip_address"])
def test_status_fact_of_wrong_type(field):
    error = rejected(f"autocore/devices/{RELAY}/status", {"protocol_version": "2.2.0", "status": "online", field: 5})
    assert (error.reason, error.detail) == (SCHEMA, f"{field}: expected text, got number")


@pytest.mark.parametrize(
    ("uuid", "reason", "detail"),
    [
        (None, SCHEMA, "uuid: required on autocore/telemetry/relays/data"),
        (17, SCHEMA, "uuid: expected text, got number"),
        ("bad uuid!", BAD_UUID, "uuid: 'bad uuid!' is not a device uuid"),
        ("+", BAD_UUID, "uuid: '+' is not a device uuid"),
    ],
)
def test_relay_events_uuid(uuid, reason, detail):
    obj = {"protocol_version": "2.2.0", "event": "safety_shutoff", "channel": 3}
    if uuid is not None:
        obj["uuid"] = uuid
    error = rejected("autocore/telemetry/relays/data", obj)
    assert error.reason == reason
    assert error.detail.startswith(detail), error.detail


@pytest.mark.parametrize(("event", "shown"), [(None, "none"), ("reboot", "'reboot'"), (3, "number")])
def test_relay_events_unknown_event(event, shown):
    obj = {"protocol_version": "2.2.0", "uuid": RELAY}
    if event is not None:
        obj["event"] = event
    error = rejected("autocore/telemetry/relays/data", obj)
    assert (error.reason, error.detail) == (SCHEMA, f'event: expected "safety_shutoff" or "relay_change", got {shown}')


def test_deep_nesting_is_rejected_not_crashing():
    obj: dict = {"v": 1}
    for _ in range(5000):
        obj = {"x": obj}
    parsed = fw22.parse_topic(f"autocore/devices/{RELAY}/diagnostics")
    with pytest.raises(Rejected) as info:
        fw22.decode(parsed, {"protocol_version": "2.2.0", "deep": obj}, Encoding.JSON)
    assert info.value.reason == SCHEMA


@pytest.mark.parametrize(
    "value", [float("nan"), float("inf"), -float("inf"), 10**400, None, [1, 2], "12"]
)
def test_unstorable_numbers_are_skipped(value):
    parsed = fw22.parse_topic(f"autocore/devices/{RELAY}/diagnostics")
    message = fw22.decode(parsed, {"protocol_version": "2.2.0", "x": value, "ok": 1}, Encoding.MSGPACK)
    assert message.readings == (Reading(source="diagnostics", metric="ok", value=1.0),)


def test_decode_refuses_a_v1_topic():
    with pytest.raises(ValueError):
        fw22.decode(Topic(Kind.STATUS, RELAY, Dialect.V1), {"protocol_version": "2.2.0"}, Encoding.JSON)


# --- through the Router's single entry --------------------------------------


@pytest.mark.parametrize("prefix", ["autocore", "fleet"])
def test_decode_message_routes_2_2_payloads_here(prefix):
    from protocol.decode import decode_message

    status = decode_message(f"autocore/devices/{RELAY}/status", PROTOCOL_MD_STATUS, prefix=prefix, max_payload=65536)
    assert status == decode(f"autocore/devices/{RELAY}/status", PROTOCOL_MD_STATUS)
    state = decode_message(
        f"autocore/devices/{RELAY}/relays/state", PROTOCOL_MD_RELAYS_STATE, prefix=prefix, max_payload=65536
    )
    assert state.kind is Kind.FW22_RELAYS_STATE and len(state.relay_states) == 4
    with pytest.raises(Rejected) as info:
        decode_message(
            f"autocore/devices/{RELAY}/relays/heartbeat", b'{"protocol_version":"2.2.0"}', prefix=prefix,
            max_payload=65536,
        )
    assert info.value.reason == BAD_TOPIC
    # relays/set is read, to observe others' commands: one without a channel is refused as such.
    with pytest.raises(Rejected) as info:
        decode_message(
            f"autocore/devices/{RELAY}/relays/set", b'{"protocol_version":"2.2.0"}', prefix=prefix, max_payload=65536
        )
    assert info.value.reason == SCHEMA
