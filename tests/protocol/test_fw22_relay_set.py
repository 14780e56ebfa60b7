"""Firmware 2.2: relay commands others send a board on `relays/set` (the
Config App's UI, a display) are observed, never acted on (PROTOCOL.md,
"Firmware 2.2 dialect", Inbound; "The Config App's database", last bullet)."""

from __future__ import annotations

import orjson
import pytest

from protocol import codec, fw22
from protocol.decode import decode_message, no_local, subscriptions
from protocol.values import (
    BAD_PROTOCOL_VERSION,
    BAD_TOPIC,
    BAD_UUID,
    SCHEMA,
    Dialect,
    Kind,
    Message,
    ObservedCommand,
    Rejected,
    Topic,
)

RELAY = "esp32-9c1a77b0e2f41d03"
TOPIC = f"autocore/devices/{RELAY}/relays/set"
GATEWAY = "autocore-gateway"

# What the Config App's UI publishes (no `command` field).
CONFIG_APP = (b'{"protocol_version": "2.2.0", "channel": 3, "state": true, "function_type": "toggle",'
              b' "user": "config_app", "timestamp": "2025-01-08T10:30:00Z"}')
# What a display publishes.
DISPLAY = b'{"protocol_version":"2.2.0","channel":5,"command":"toggle","source":"esp32-display-7f3a","user":"display"}'
# What the gateway itself publishes (protocol.fw22.relay_set_publication).
OWN = fw22.relay_set_publication(RELAY, 3, "on", "42", GATEWAY).payload


def decode(payload: bytes, prefix: str = "autocore") -> Message:
    return decode_message(TOPIC, payload, prefix=prefix, max_payload=65536)


def rejected(payload: bytes | dict) -> Rejected:
    if isinstance(payload, dict):
        payload = codec.encode(payload)
    with pytest.raises(Rejected) as info:
        decode(payload)
    return info.value


# --- topic and subscription ---------------------------------------------------


def test_relays_set_is_an_observed_topic():
    assert fw22.parse_topic(TOPIC) == Topic(Kind.FW22_RELAY_SET, RELAY, Dialect.FW22)
    assert ("autocore/devices/+/relays/set", 1) in subscriptions("autocore")
    assert ("autocore/devices/+/relays/set", 1) in subscriptions("fleet")  # 2.2 boards always use autocore


def test_only_relays_set_is_subscribed_with_no_local():
    assert [f for f, _ in subscriptions("autocore") if no_local(f)] == ["autocore/devices/+/relays/set"]
    assert not any(no_local(f) for f, _ in subscriptions("fleet") if "relays/set" not in f)


@pytest.mark.parametrize("topic", [f"{TOPIC}/extra", f"autocore/devices/{RELAY}/relays/heartbeat",
                                   f"autocore/devices/{RELAY}/commands/reboot"])
def test_other_board_to_board_topics_stay_unread(topic):
    with pytest.raises(Rejected) as info:
        fw22.parse_topic(topic)
    assert info.value.reason == BAD_TOPIC


@pytest.mark.parametrize("topic", ["autocore/devices/+/relays/set", "autocore/devices/bad.uuid/relays/set",
                                   "autocore/devices//relays/set"])
def test_bad_uuid_level(topic):
    with pytest.raises(Rejected) as info:
        fw22.parse_topic(topic)
    assert info.value.reason == BAD_UUID


# --- golden decodes -----------------------------------------------------------


@pytest.mark.parametrize("prefix", ["autocore", "fleet"])
def test_config_app_command(prefix):
    message = decode(CONFIG_APP, prefix)
    assert message == Message(
        uuid=RELAY, dialect=Dialect.FW22, kind=Kind.FW22_RELAY_SET, protocol_version="2.2.0", device_ts=None,
        trust_clock=False, alive=False,
        observed=ObservedCommand(channel=3, command=None, state=True, function_type="toggle", user="config_app"),
    )
    # no sign of life of the board, nothing stored as telemetry, no other event
    assert not message.readings and not message.events and message.response is None and message.facts is None
    assert message.observed.detail() == {"channel": 3, "command": None, "state": True, "function_type": "toggle",
                                         "user": "config_app", "source": None, "command_id": None}


def test_display_command():
    observed = decode(DISPLAY).observed
    assert observed == ObservedCommand(channel=5, command="toggle", state=None, user="display",
                                       source="esp32-display-7f3a")
    assert observed.toggle


@pytest.mark.parametrize(("fields", "state"), [
    ({"command": "on"}, True),
    ({"command": "off"}, False),
    ({"command": "off", "state": True}, False),  # the relay reads `command`
    ({"command": "toggle", "state": True}, None),
    ({"command": "pulse"}, None),  # kept as sent: the relay will refuse it, and that is worth recording
    ({"state": False}, False),
])
def test_requested_state(fields, state):
    observed = decode(orjson.dumps({"protocol_version": "2.2.0", "channel": 2, **fields})).observed
    assert observed.state is state
    assert observed.command == fields.get("command")


def test_all_channels_command_id_and_msgpack():
    payload = codec.encode({"protocol_version": "2.2.0", "channel": "all", "command": "off", "command_id": 7})
    observed = decode(payload).observed
    assert (observed.channel, observed.state, observed.command_id) == ("all", False, "7")


def test_own_command_decodes_and_is_told_apart():
    observed = decode(OWN).observed
    assert observed.command_id == "42" and observed.user == "gateway" and observed.source == GATEWAY
    assert fw22.is_own_relay_command(observed, GATEWAY)
    assert fw22.is_own_relay_command(ObservedCommand(channel=1, state=True, source=GATEWAY), GATEWAY)
    assert fw22.is_own_relay_command(ObservedCommand(channel=1, state=True, user="gateway"), "another-id")
    assert not fw22.is_own_relay_command(decode(CONFIG_APP).observed, GATEWAY)
    assert not fw22.is_own_relay_command(decode(DISPLAY).observed, GATEWAY)


def test_payload_uuid_names_the_sender_and_is_not_checked():
    body = {"protocol_version": "2.2.0", "channel": 1, "command": "on", "uuid": "esp32-display-7f3a"}
    assert decode(orjson.dumps(body)).observed.source == "esp32-display-7f3a"
    body["uuid"] = RELAY  # the board's own uuid names no other sender
    assert decode(orjson.dumps(body)).observed.source is None


def test_descriptive_fields_of_other_types_are_left_out_never_a_rejection():
    body = {"protocol_version": "2.2.0", "channel": 1, "state": True, "user": 5, "source": ["x"],
            "function_type": {"a": 1}, "command_id": None}
    observed = decode(orjson.dumps(body)).observed
    assert (observed.user, observed.source, observed.function_type, observed.command_id) == (None, None, None, None)
    body["user"] = "u" * 200
    assert decode(orjson.dumps(body)).observed.user == "u" * 64


# --- malformed: counted rejections with a reason --------------------------------


@pytest.mark.parametrize(("body", "reason", "words"), [
    ({"channel": 3, "state": True}, BAD_PROTOCOL_VERSION, "protocol_version"),
    ({"protocol_version": "2.2.0", "state": True}, SCHEMA, "channel"),
    ({"protocol_version": "2.2.0", "channel": "3", "state": True}, SCHEMA, "channel"),
    ({"protocol_version": "2.2.0", "channel": 0, "state": True}, SCHEMA, "channel"),
    ({"protocol_version": "2.2.0", "channel": True, "state": True}, SCHEMA, "channel"),
    ({"protocol_version": "2.2.0", "channel": 3}, SCHEMA, "neither"),
    ({"protocol_version": "2.2.0", "channel": 3, "state": "on"}, SCHEMA, "state"),
    ({"protocol_version": "2.2.0", "channel": 3, "command": 1}, SCHEMA, "command"),
    ({"protocol_version": "2.2.0", "channel": 3, "command": ""}, SCHEMA, "command"),
    ({"protocol_version": "2.2.0", "channel": 3, "command": "x" * 33}, SCHEMA, "command"),
])
def test_malformed(body, reason, words):
    error = rejected(body)
    assert error.reason == reason
    assert words in error.detail


@pytest.mark.parametrize("payload", [b"", b"not json", b"[1, 2]", b'{"protocol_version": "2.2.0", "channel": '])
def test_undecodable(payload):
    assert rejected(payload).reason


# --- errors that answer a relays/set ----------------------------------------------


def error_detail(command, **extra):
    return {"protocol_version": "2.2.0", "uuid": RELAY, "error_code": "ERR_002", "error_message": "missing command field",
            "context": {"command": command, "topic": "relays/set"}, **extra}


def test_refused_command_from_the_echoed_text():
    refused = fw22.refused_command(error_detail(CONFIG_APP.decode()))
    assert refused.echo["channel"] == 3 and refused.echo["user"] == "config_app"
    assert (refused.command_id, refused.error_code, refused.error_message) == (None, "ERR_002", "missing command field")


def test_refused_command_cut_short_keeps_the_id():
    refused = fw22.refused_command(error_detail(OWN.decode()[:-1]))
    assert refused.command_id == "42"
    refused = fw22.refused_command(error_detail('{"protocol_version":"2.2.0","channel":3,"st'))
    assert refused.echo is None and refused.command_id is None  # unreadable, but an echo


@pytest.mark.parametrize("detail", [
    {"error_code": "ERR_003", "context": {"channel": 3, "timeout_ms": 1000}},  # a hold's heartbeat timeout
    {"error_code": "ERR_003"},
    {"context": {"command": ""}},
    {"context": "x"},
    "text",
    None,
])
def test_errors_that_echo_nothing_refuse_nothing(detail):
    assert fw22.refused_command(detail) is None
