"""Firmware 2.2: whatever arrives, the dialect answers with a Message, None
or Rejected, never another exception; whatever a commands row holds, the
planner answers with a plan whose publications fit the relay, or Rejected."""

from __future__ import annotations

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import codec, fw22
from protocol.values import CommandSpec, Dialect, Encoding, Kind, Message, Rejected

RELAY = "esp32-9c1a77b0e2f41d03"

TOPICS = [
    f"autocore/devices/{RELAY}/status",
    f"autocore/devices/{RELAY}/relays/state",
    f"autocore/devices/{RELAY}/status/operational",
    f"autocore/devices/{RELAY}/telemetry/data",
    f"autocore/devices/{RELAY}/display/touch",
    "autocore/telemetry/relays/data",
    f"autocore/errors/{RELAY}/payload",
    f"autocore/devices/{RELAY}/relays/set",
]

json_leaf = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | st.text(max_size=12)
json_value = st.recursive(
    json_leaf,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
# Values for the fields the dialect looks at, so the fuzz gets past the first
# checks: mostly a good protocol_version and the topic's uuid, sometimes not.
MISSING = object()
interesting = {
    "uuid": st.sampled_from([RELAY] * 4 + ["other-board", "bad uuid", ""]) | json_value,
    "status": st.sampled_from(["online", "offline", "rebooting"]) | json_value,
    "channels": st.dictionaries(st.sampled_from(["1", "2", "16", "0", "x"]), st.booleans(), max_size=4)
    | st.dictionaries(st.sampled_from(["1", "2", "16", "0", "x"]), json_value, max_size=4)
    | json_value,
    "event": st.sampled_from(["safety_shutoff", "relay_change", "other"]) | json_value,
    "channel": st.sampled_from([1, 3, 16, "all", 0, "3", 3.0, True]) | json_value,
    "type": st.text(max_size=10) | json_value,
    "capabilities": json_value,
    "reason": json_value,
    "error_code": json_value,
    "error_message": json_value,
    "command": st.sampled_from(["on", "off", "toggle", "ON", "", "x" * 40]) | json_value,
    "state": st.booleans() | json_value,
    "user": st.sampled_from(["config_app", "gateway", "display"]) | json_value,
    "source": st.sampled_from(["autocore-gateway", "esp32-display-7f3a"]) | json_value,
    "function_type": st.sampled_from(["toggle", "momentary"]) | json_value,
    "command_id": st.sampled_from(["42", 42, ""]) | json_value,
    "context": st.fixed_dictionaries(
        {},
        optional={
            "command": json_value | st.text(max_size=80).map(lambda t: '{"command_id": "' + t),
            "channel": json_value,
            "reason": json_value,
        },
    )
    | json_value,
}
_good_versions = st.sampled_from(["2.2.0"] * 24 + ["2.0", "1.0", "", "2.", MISSING])
versions = st.one_of(_good_versions, _good_versions, _good_versions, json_value)


def _payload(version, fixed, extra):
    obj = {**extra, **fixed}
    if version is not MISSING:
        obj["protocol_version"] = version
    return obj


payloads = st.builds(
    _payload,
    versions,
    st.fixed_dictionaries({}, optional=interesting),
    st.dictionaries(st.text(max_size=10), json_value, max_size=5),
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(topic=st.sampled_from(TOPICS), obj=payloads, encoding=st.sampled_from(list(Encoding)))
def test_decode_raises_only_rejected(topic, obj, encoding):
    parsed = fw22.parse_topic(topic)
    try:
        message = fw22.decode(parsed, obj, encoding)
    except Rejected as error:
        assert error.reason and error.detail
        return
    assert isinstance(message, Message)
    assert message.dialect is Dialect.FW22
    assert message.trust_clock is False and message.device_ts is None
    assert message.protocol_version.startswith("2.")
    if parsed.uuid is not None:
        assert message.uuid == parsed.uuid
    for reading in message.readings:
        assert reading.value is not None and reading.value == reading.value  # finite, never NaN
    if parsed.kind is Kind.FW22_RELAY_SET:
        observed = message.observed
        assert observed is not None and message.alive is False and not message.readings and not message.events
        assert observed.channel == "all" or (isinstance(observed.channel, int) and observed.channel >= 1)
        assert observed.command is not None or observed.state is not None
        orjson.dumps(observed.detail())  # storable as an event's detail
    else:
        assert message.observed is None
    for event in message.events:
        if event.event == "error":  # whatever it echoes, reading it never raises
            fw22.refused_command(event.detail)


@settings(max_examples=300, deadline=None)
@given(topic=st.sampled_from(TOPICS), payload=st.binary(max_size=200))
def test_bytes_through_codec_and_decode(topic, payload):
    try:
        obj, encoding = codec.decode(payload, 65536)
        fw22.decode(fw22.parse_topic(topic), obj, encoding)
    except Rejected:
        pass


level = st.sampled_from(["autocore", "devices", "errors", "telemetry", "relays", "data", "set", "heartbeat",
                         "commands", "status", RELAY, "+", "#", "", "x y"]) | st.text(max_size=8)


@settings(max_examples=600, deadline=None)
@given(levels=st.lists(level, max_size=6))
def test_parse_topic_returns_topic_none_or_rejected(levels):
    topic = "/".join(levels)
    try:
        parsed = fw22.parse_topic(topic)
    except Rejected as error:
        assert error.reason in ("bad_topic", "bad_uuid")
        return
    if parsed is not None:
        assert parsed.dialect is Dialect.FW22
        # a parsed topic is never one where boards talk to each other, but
        # for relays/set itself, observed (others' relay commands)
        assert "/relays/heartbeat" not in topic
        if "/relays/set" in topic:
            assert parsed.kind is Kind.FW22_RELAY_SET and levels[4:] == ["relays", "set"]
        if levels[1:2] == ["devices"]:
            assert levels[3:4] != ["commands"]


parameters = st.fixed_dictionaries(
    {},
    optional={
        "channel": st.sampled_from([1, 3, 16, 64, 65, 0, "all", "1", 2.0, True]) | json_value,
        "state": st.booleans() | json_value,
        "command": st.sampled_from(["on", "off", "toggle", "ON"]) | json_value,
        "duration": st.sampled_from([250, 5000, 0, -1, 1e308]) | json_value,
        "relay_id": json_value,
    },
).flatmap(lambda fixed: st.dictionaries(st.text(max_size=10), json_value, max_size=4).map(lambda extra: {**extra, **fixed}))


@settings(max_examples=600, deadline=None)
@given(
    command_type=st.sampled_from(["relay_control", "reboot", "status", "ota", "a/b", "", "+"]) | st.text(max_size=10),
    params=parameters | json_value | st.text(max_size=20),
    topic=st.sampled_from(["command", "command", "relay/command"]),
)
def test_plan_command_raises_only_rejected(command_type, params, topic):
    spec = CommandSpec(id=7, device_uuid=RELAY, command_type=command_type, parameters=params, topic=topic)
    try:
        plan = fw22.plan_command(spec)
    except Rejected as error:
        assert error.reason == "schema" and error.detail
        return
    publication = plan.publication("autocore-gateway")
    if plan.kind is fw22.PlanKind.HOLD:
        assert publication is None and plan.hold_s > 0 and isinstance(plan.channel, int)
        publication = fw22.heartbeat_publication(RELAY, plan.channel, 1, "autocore-gateway", 1736332200.0)
    assert len(publication.payload) < fw22.MAX_PAYLOAD
    body = orjson.loads(publication.payload)
    assert body["protocol_version"] == "2.2.0"
    if plan.kind is not fw22.PlanKind.HOLD:
        assert body["command_id"] == "7"
    assert plan.retry_allowed is (plan.command in ("on", "off") and plan.kind is fw22.PlanKind.RELAY_SET)
