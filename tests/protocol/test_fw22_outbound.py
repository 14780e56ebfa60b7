"""Firmware 2.2, gateway -> device: the encoders and the command planner."""

from __future__ import annotations

import orjson
import pytest

from protocol import fw22
from protocol.fw22 import Fw22Plan, PlanKind
from protocol.values import SCHEMA, CommandSpec, Publication, Rejected

RELAY = "esp32-9c1a77b0e2f41d03"
GATEWAY = "autocore-gateway"
T_2025 = 1736332200.0  # 2025-01-08T10:30:00Z


def spec(parameters, command_type="relay_control", **fields) -> CommandSpec:
    return CommandSpec(id=42, device_uuid=RELAY, command_type=command_type, parameters=parameters, **fields)


# --- encoders ---------------------------------------------------------------


def test_relay_set_publication_exact():
    assert fw22.relay_set_publication(RELAY, 3, "on", "42", GATEWAY) == Publication(
        topic="autocore/devices/esp32-9c1a77b0e2f41d03/relays/set",
        payload=b'{"protocol_version":"2.2.0","channel":3,"command":"on","momentary":false,'
        b'"source":"autocore-gateway","user":"gateway","command_id":"42"}',
        qos=1,
        retain=False,
    )


def test_relay_set_all_channels():
    publication = fw22.relay_set_publication(RELAY, "all", "off", "43", GATEWAY)
    assert orjson.loads(publication.payload) == {
        "protocol_version": "2.2.0", "channel": "all", "command": "off", "momentary": False,
        "source": "autocore-gateway", "user": "gateway", "command_id": "43",
    }


def test_heartbeat_publication_exact():
    assert fw22.heartbeat_publication(RELAY, 3, 1, GATEWAY, T_2025) == Publication(
        topic="autocore/devices/esp32-9c1a77b0e2f41d03/relays/heartbeat",
        payload=b'{"protocol_version":"2.2.0","uuid":"autocore-gateway","timestamp":"2025-01-08T10:30:00.000Z",'
        b'"channel":3,"source_uuid":"autocore-gateway","target_uuid":"esp32-9c1a77b0e2f41d03","sequence":1}',
        qos=0,
        retain=False,
    )


def test_other_command_publication_exact():
    assert fw22.other_command_publication(RELAY, "reboot", "44", {"delay": 5}) == Publication(
        topic="autocore/devices/esp32-9c1a77b0e2f41d03/commands/reboot",
        payload=b'{"protocol_version":"2.2.0","command":"reboot","command_id":"44","delay":5}',
        qos=1,
        retain=False,
    )


def test_other_command_without_parameters():
    publication = fw22.other_command_publication(RELAY, "status", "45", None)
    assert publication.payload == b'{"protocol_version":"2.2.0","command":"status","command_id":"45"}'


def test_largest_ordinary_payloads_fit():
    uuid, gateway, command_id = "u" * 64, "g" * 64, "9" * 20
    payloads = [
        fw22.relay_set_publication(uuid, "all", "toggle", command_id, gateway).payload,
        fw22.heartbeat_publication(uuid, 64, 10**9, gateway, 4102444800.0).payload,
        fw22.other_command_publication(uuid, "c" * 64, command_id, {"delay": 5}).payload,
    ]
    for payload in payloads:
        assert len(payload) < fw22.MAX_PAYLOAD
        assert orjson.loads(payload)["protocol_version"] == "2.2.0"


def test_payload_of_511_bytes_passes_and_512_fails():
    base = len(fw22.other_command_publication(RELAY, "ota", "1", {"url": ""}).payload)
    fits = fw22.other_command_publication(RELAY, "ota", "1", {"url": "x" * (511 - base)})
    assert len(fits.payload) == 511
    with pytest.raises(ValueError, match="512"):
        fw22.other_command_publication(RELAY, "ota", "1", {"url": "x" * (512 - base)})


def test_long_gateway_id_is_refused():
    with pytest.raises(ValueError, match="512-byte"):
        fw22.relay_set_publication(RELAY, 1, "on", "1", "g" * 450)
    with pytest.raises(ValueError, match="512-byte"):
        fw22.heartbeat_publication(RELAY, 1, 1, "g" * 250, T_2025)


@pytest.mark.parametrize(
    "call",
    [
        lambda: fw22.relay_set_publication("bad uuid", 1, "on", "1", GATEWAY),
        lambda: fw22.relay_set_publication(RELAY, 0, "on", "1", GATEWAY),
        lambda: fw22.relay_set_publication(RELAY, True, "on", "1", GATEWAY),
        lambda: fw22.relay_set_publication(RELAY, 1, "ON", "1", GATEWAY),
        lambda: fw22.relay_set_publication(RELAY, 1, "on", "", GATEWAY),
        lambda: fw22.relay_set_publication(RELAY, 1, "on", "1", ""),
        lambda: fw22.heartbeat_publication(RELAY, "all", 1, GATEWAY, T_2025),
        lambda: fw22.heartbeat_publication(RELAY, 1, 0, GATEWAY, T_2025),
        lambda: fw22.heartbeat_publication(RELAY, 1, 1, GATEWAY, float("nan")),
        lambda: fw22.other_command_publication(RELAY, "a/b", "1", None),
        lambda: fw22.other_command_publication(RELAY, "#", "1", None),
        lambda: fw22.other_command_publication(RELAY, "reboot", "1", {"command_id": "2"}),
        lambda: fw22.other_command_publication(RELAY, "reboot", "1", {"command": "ota"}),
        lambda: fw22.other_command_publication(RELAY, "reboot", "1", {"x": object()}),
    ],
)
def test_encoders_refuse_bad_arguments(call):
    with pytest.raises(ValueError):
        call()


# --- plan_command: every parameter form ------------------------------------


@pytest.mark.parametrize(
    ("parameters", "channel", "command", "retry", "expected"),
    [
        ({"channel": 3, "state": True}, 3, "on", True, True),
        ({"channel": 3, "state": False}, 3, "off", True, False),
        ({"channel": "all", "state": True}, "all", "on", True, True),
        ({"channel": "all", "state": False}, "all", "off", True, False),
        ({"channel": 5, "command": "on"}, 5, "on", True, True),
        ({"channel": 5, "command": "off"}, 5, "off", True, False),
        ({"channel": 5, "command": "toggle"}, 5, "toggle", False, None),
        ({"channel": "all", "command": "off"}, "all", "off", True, False),
        ({"channel": 2, "state": True, "command": "on"}, 2, "on", True, True),
        ({"channel": 16.0, "state": True}, 16, "on", True, True),
        ({"channel": 1, "state": True, "note": "ignored"}, 1, "on", True, True),
        ({"channel": 1, "state": True, "duration": None}, 1, "on", True, True),
        ('{"channel": 7, "state": false}', 7, "off", True, False),
    ],
)
def test_plan_relays_set(parameters, channel, command, retry, expected):
    plan = fw22.plan_command(spec(parameters))
    assert plan == Fw22Plan(
        kind=PlanKind.RELAY_SET,
        device_uuid=RELAY,
        command_id="42",
        command_type="relay_control",
        channel=channel,
        command=command,
        hold_s=None,
        retry_allowed=retry,
        expected_state=expected,
    )
    publication = plan.publication(GATEWAY)
    assert publication.topic == f"autocore/devices/{RELAY}/relays/set"
    body = orjson.loads(publication.payload)
    assert (body["channel"], body["command"], body["command_id"], body["momentary"]) == (channel, command, "42", False)


@pytest.mark.parametrize(
    ("parameters", "hold_s"),
    [
        ({"channel": 3, "state": True, "duration": 5000}, 5.0),
        ({"channel": 3, "command": "on", "duration": 250}, 0.25),
        ({"channel": 3, "state": True, "duration": 1500.5}, 1.5005),
    ],
)
def test_plan_hold(parameters, hold_s):
    plan = fw22.plan_command(spec(parameters))
    assert plan == Fw22Plan(
        kind=PlanKind.HOLD,
        device_uuid=RELAY,
        command_id="42",
        command_type="relay_control",
        channel=3,
        command="on",
        hold_s=hold_s,
        retry_allowed=False,
        expected_state=None,
    )
    assert plan.publication(GATEWAY) is None


def test_plan_other_command():
    plan = fw22.plan_command(spec({"delay": 5}, command_type="reboot"))
    assert plan == Fw22Plan(
        kind=PlanKind.OTHER,
        device_uuid=RELAY,
        command_id="42",
        command_type="reboot",
        retry_allowed=False,
        parameters={"delay": 5},
    )
    assert plan.publication(GATEWAY) == fw22.other_command_publication(RELAY, "reboot", "42", {"delay": 5})


@pytest.mark.parametrize("parameters", [None, {}, {"command": "status"}, "{}"])
def test_plan_other_command_without_parameters(parameters):
    plan = fw22.plan_command(spec(parameters, command_type="status"))
    assert plan.publication(GATEWAY).payload == b'{"protocol_version":"2.2.0","command":"status","command_id":"42"}'


@pytest.mark.parametrize(
    ("parameters", "detail"),
    [
        ({"state": True}, 'parameters.channel: required, a relay number or "all"'),
        ({"relay_id": 1, "state": True}, "parameters.channel: required, a relay number or \"all\" (a 2.2 board names the relay `channel`, not `relay_id`)"),
        ({"channel": 0, "state": True}, 'parameters.channel: expected a relay number 1..64 or "all", got 0'),
        ({"channel": 65, "state": True}, 'parameters.channel: expected a relay number 1..64 or "all", got 65'),
        ({"channel": "3", "state": True}, "parameters.channel: expected a relay number 1..64 or \"all\", got '3'"),
        ({"channel": 2.5, "state": True}, 'parameters.channel: expected a relay number 1..64 or "all", got 2.5'),
        ({"channel": True, "state": True}, 'parameters.channel: expected a relay number 1..64 or "all", got boolean'),
        ({"channel": None, "state": True}, 'parameters.channel: expected a relay number 1..64 or "all", got null'),
        ({"channel": 1}, 'parameters: relay_control needs "state" (true or false) or "command" ("on", "off", "toggle")'),
        ({"channel": 1, "state": "on"}, "parameters.state: expected true or false, got text"),
        ({"channel": 1, "state": 1}, "parameters.state: expected true or false, got number"),
        ({"channel": 1, "command": "ON"}, "parameters.command: expected \"on\", \"off\" or \"toggle\", got 'ON'"),
        ({"channel": 1, "command": 1}, 'parameters.command: expected "on", "off" or "toggle", got number'),
        ({"channel": 1, "state": True, "command": "off"}, "parameters: state true and command 'off' disagree"),
        ({"channel": 1, "state": False, "command": "toggle"}, "parameters: state false and command 'toggle' disagree"),
        ({"channel": "all", "command": "toggle"}, 'parameters.command: toggle takes one channel number, not "all"'),
        ({"channel": 1, "state": True, "duration": 0}, "parameters.duration: expected a positive finite number of milliseconds, got 0"),
        ({"channel": 1, "state": True, "duration": -5}, "parameters.duration: expected a positive finite number of milliseconds, got -5"),
        ({"channel": 1, "state": True, "duration": float("inf")}, "parameters.duration: expected a positive finite number of milliseconds, got inf"),
        ({"channel": 1, "state": True, "duration": "5000"}, "parameters.duration: expected milliseconds (a number), got text"),
        ({"channel": 1, "state": True, "duration": True}, "parameters.duration: expected milliseconds (a number), got boolean"),
        ({"channel": 1, "state": False, "duration": 500}, "parameters.duration: a hold keeps a relay on; it needs state true or command \"on\", got 'off'"),
        ({"channel": 1, "command": "toggle", "duration": 500}, "parameters.duration: a hold keeps a relay on; it needs state true or command \"on\", got 'toggle'"),
        ({"channel": "all", "state": True, "duration": 500}, 'parameters.duration: a hold keeps one relay on; channel "all" cannot be held'),
        ([1, 3], "parameters: expected an object, got array"),
        ("{nope", "parameters: not valid JSON"),
        ("[1]", "parameters: expected an object, got array"),
    ],
)
def test_plan_relay_control_invalid(parameters, detail):
    with pytest.raises(Rejected) as info:
        fw22.plan_command(spec(parameters))
    assert (info.value.reason, info.value.detail) == (SCHEMA, detail)


@pytest.mark.parametrize(
    ("command_spec", "detail"),
    [
        (spec({"channel": 1, "state": True}, topic="relay/command"), "topic: 'relay/command' is a v1 form"),
        (spec({}, command_type="a/b"), "command_type: 'a/b' must be one topic level"),
        (spec({}, command_type="+"), "command_type: '+' must be one topic level"),
        (spec({}, command_type=""), "command_type: '' must be one topic level"),
        (spec({"command_id": "9"}, command_type="reboot"), "parameters.command_id: set by the gateway"),
        (spec({"protocol_version": "3"}, command_type="reboot"), "parameters.protocol_version: set by the gateway"),
        (spec({"command": "ota"}, command_type="reboot"), "parameters.command: 'ota' disagrees with command_type 'reboot'"),
        (spec({"url": "x" * 600}, command_type="ota"), "parameters: payload of 671 bytes does not fit"),
        (CommandSpec(id=1, device_uuid="bad uuid", command_type="reboot", parameters={}), "device_uuid: 'bad uuid' is not a device uuid"),
    ],
)
def test_plan_invalid_spec(command_spec, detail):
    with pytest.raises(Rejected) as info:
        fw22.plan_command(command_spec)
    assert info.value.reason == SCHEMA
    assert info.value.detail.startswith(detail), info.value.detail


# --- confirmation -----------------------------------------------------------


def test_on_off_confirmed_by_the_requested_state():
    plan = fw22.plan_command(spec({"channel": 2, "state": True}))
    assert plan.confirmed_by({1: False, 2: True})
    assert not plan.confirmed_by({1: True, 2: False})
    assert not plan.confirmed_by({1: True})


def test_all_confirmed_when_every_channel_shows_it():
    plan = fw22.plan_command(spec({"channel": "all", "state": False}))
    assert plan.confirmed_by({1: False, 2: False, 3: False})
    assert not plan.confirmed_by({1: False, 2: True})
    assert not plan.confirmed_by({})


def test_toggle_needs_the_state_before():
    plan = fw22.plan_command(spec({"channel": 2, "command": "toggle"}))
    assert plan.confirmed_by({2: True}, before={2: False})
    assert not plan.confirmed_by({2: False}, before={2: False})
    assert not plan.confirmed_by({2: True})
    assert not plan.confirmed_by({2: True}, before={1: False})


def test_holds_and_other_commands_are_never_confirmed_by_a_state():
    hold = fw22.plan_command(spec({"channel": 2, "state": True, "duration": 1000}))
    other = fw22.plan_command(spec({}, command_type="status"))
    assert not hold.confirmed_by({2: True}, before={2: False})
    assert not other.confirmed_by({2: True})
