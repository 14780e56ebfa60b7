"""decode_message: order of checks, routing between dialects, rejections."""

from __future__ import annotations

import orjson
import pytest

from protocol import fw22
from protocol.decode import decode_message, subscriptions
from protocol.outbound import command_publication, gateway_status_publication
from protocol.values import (
    BAD_ENCODING,
    BAD_PROTOCOL_VERSION,
    BAD_TOPIC,
    BAD_UUID,
    EMPTY,
    SCHEMA,
    TOO_LARGE,
    UUID_MISMATCH,
    CommandSpec,
    Dialect,
    Kind,
    Rejected,
)
from tests.protocol.helpers import (
    ANNOUNCE,
    MAX,
    RESPONSE,
    STATUS_ONLINE,
    TELEMETRY,
    UUID,
    decode,
    with_field,
)



def reject(call, *args, **kwargs) -> Rejected:
    with pytest.raises(Rejected) as caught:
        call(*args, **kwargs)
    return caught.value


def test_size_is_checked_before_the_topic():
    error = reject(decode_message, "not/a/topic", b"x" * (MAX + 1), prefix="autocore", max_payload=MAX)
    assert error.reason == TOO_LARGE
    assert error.detail == f"payload of {MAX + 1} bytes is over the limit of {MAX}"


def test_topic_is_checked_before_the_payload():
    assert reject(decode_message, "autocore/devices/+/telemetry", b"\xff", prefix="autocore",
                  max_payload=MAX).reason == BAD_UUID
    assert reject(decode_message, "autocore/nothing", b"\xff", prefix="autocore", max_payload=MAX).reason == BAD_TOPIC


def test_payload_is_decoded_before_the_schema():
    topic = f"autocore/devices/{UUID}/telemetry"
    assert reject(decode_message, topic, b"\xff", prefix="autocore", max_payload=MAX).reason == BAD_ENCODING
    assert reject(decode_message, topic, b"{nope", prefix="autocore", max_payload=MAX).reason == BAD_ENCODING
    assert reject(decode_message, topic, b"", prefix="autocore", max_payload=MAX).reason == BAD_ENCODING


@pytest.mark.parametrize("suffix", [f"devices/{UUID}/command", f"devices/{UUID}/relay/command",
                                    f"devices/{UUID}/availability", "gateway/status", "system/broadcast"])
@pytest.mark.parametrize("prefix", ["autocore", "fleet/a"])
def test_gateway_topics_arriving_inbound_are_bad_topics(suffix, prefix):
    error = reject(decode, suffix, {"status": "online"}, prefix=prefix)
    assert error.reason == BAD_TOPIC
    assert "one the gateway publishes" in error.detail


def test_our_own_publications_are_refused_when_echoed():
    spec = CommandSpec(id=1, device_uuid=UUID, command_type="x", parameters={})
    for publication in (command_publication("autocore", spec, 1, 0.0, "gw"),
                        gateway_status_publication("autocore", "online", "gw", 0.0, 1, 0, 1, 1, "v")):
        error = reject(decode_message, publication.topic, publication.payload, prefix="autocore", max_payload=MAX)
        assert error.reason == BAD_TOPIC


def test_prefix_with_levels():
    message = decode(f"devices/{UUID}/announce", ANNOUNCE, prefix="fleet/a")
    assert (message.uuid, message.kind) == (UUID, Kind.ANNOUNCE)
    assert reject(decode_message, f"autocore/devices/{UUID}/announce", orjson.dumps(ANNOUNCE), prefix="fleet/a",
                  max_payload=MAX).reason == BAD_TOPIC


def test_detail_names_the_field():
    error = reject(decode, f"devices/{UUID}/telemetry", {"gps": {"latitude": "abc"}})
    assert (error.reason, error.detail) == (SCHEMA, 'telemetry.gps.latitude: expected number, got text "abc"')
    error = reject(decode, f"devices/{UUID}/announce", with_field(ANNOUNCE, device_type=None))
    assert (error.reason, error.detail) == (SCHEMA, "announce.device_type: required")
    error = reject(decode, f"devices/{UUID}/telemetry", with_field(TELEMETRY, seq=-1))
    assert (error.reason, error.detail) == (SCHEMA, "telemetry.seq: expected integer >= 0, got number -1")
    error = reject(decode, f"devices/{UUID}/announce", with_field(ANNOUNCE, status_interval=0))
    assert error.detail == "announce.status_interval: expected number greater than 0, got number 0"
    error = reject(decode, f"devices/{UUID}/telemetry", with_field(TELEMETRY, timestamp="yesterday"))
    assert error.detail == "telemetry.timestamp: expected ISO 8601 text or epoch seconds, got 'yesterday'"
    error = reject(decode, f"devices/{UUID}/announce", with_field(ANNOUNCE, capabilities=["relay", 3]))
    assert error.detail == "announce.capabilities[1]: expected text, got number 3"


def test_uuid_in_payload_must_match_topic():
    error = reject(decode, f"devices/{UUID}/announce", with_field(ANNOUNCE, uuid="someone-else"))
    assert (error.reason, error.detail) == (
        UUID_MISMATCH, f'announce.uuid: text "someone-else" is not the topic\'s device id "{UUID}"')
    assert decode(f"devices/{UUID}/announce", with_field(ANNOUNCE, uuid=UUID)).uuid == UUID


def test_empty_telemetry():
    error = reject(decode, f"devices/{UUID}/telemetry", {"seq": 1, "timestamp": "2025-01-08T10:30:00Z"})
    assert error.reason == EMPTY
    assert error.detail.startswith("telemetry: no readings")
    assert reject(decode, f"devices/{UUID}/relay/status", {"relays": []}).reason == EMPTY


def test_status_report_without_numbers_is_a_heartbeat():
    message = decode(f"devices/{UUID}/status", {"last_restart_reason": "normal"})
    assert message.readings == () and message.alive and message.availability is None


def test_status_word_must_be_online_or_offline():
    error = reject(decode, f"devices/{UUID}/status", {"status": "ok"})
    assert error.detail == 'status.status: expected "online" or "offline", got text "ok"'


def test_response_needs_success_or_accepted():
    error = reject(decode, f"devices/{UUID}/response", {"command_id": "42"})
    assert error.detail == 'response: needs "success" (true or false) or "status": "accepted"'
    error = reject(decode, f"devices/{UUID}/response", with_field(RESPONSE, command_id=None))
    assert error.detail == "response.command_id: required"
    error = reject(decode, f"devices/{UUID}/response", with_field(RESPONSE, command_id=4.5))
    assert error.detail == "response.command_id: expected text or an integer, got number 4.5"
    assert decode(f"devices/{UUID}/response", with_field(RESPONSE, command_id=42.0)).response.command_id == "42"


def test_v1_protocol_versions():
    assert decode(f"devices/{UUID}/telemetry", with_field(TELEMETRY, protocol_version="1.0")).protocol_version == "1.0"
    error = reject(decode, f"devices/{UUID}/telemetry", with_field(TELEMETRY, protocol_version="3.0"))
    assert error.reason == BAD_PROTOCOL_VERSION
    # 2.x on a topic 2.2 does not share (telemetry) is not v1 either
    error = reject(decode, f"devices/{UUID}/telemetry", with_field(TELEMETRY, protocol_version="2.2.0"))
    assert error.reason == BAD_PROTOCOL_VERSION


def test_status_without_2x_version_is_v1():
    message = decode(f"devices/{UUID}/status", STATUS_ONLINE)
    assert (message.dialect, message.kind) == (Dialect.V1, Kind.STATUS)


def test_status_with_2x_version_goes_to_fw22():
    payload = {"protocol_version": "2.2.0", "uuid": UUID, "status": "online", "firmware_version": "2.0.0",
               "type": "esp32_relay", "uptime": 9}
    message = decode(f"devices/{UUID}/status", payload)
    assert (message.dialect, message.kind, message.uuid) == (Dialect.FW22, Kind.FW22_STATUS, UUID)


def test_fw22_topics_under_autocore_whatever_the_prefix():
    payload = orjson.dumps({"protocol_version": "2.2.0", "channels": {"1": True}})
    message = decode_message(f"autocore/devices/{UUID}/relays/state", payload, prefix="fleet/a", max_payload=MAX)
    assert (message.dialect, message.kind) == (Dialect.FW22, Kind.FW22_RELAYS_STATE)


def test_subscriptions_are_v1_plus_fw22_each_once():
    subs = subscriptions("autocore")
    filters = [f for f, _ in subs]
    assert len(filters) == len(set(filters))
    assert all(qos == 1 for _, qos in subs)
    assert filters[:6] == [
        "autocore/devices/+/announce",
        "autocore/devices/+/status",
        "autocore/devices/+/telemetry",
        "autocore/devices/+/relay/status",
        "autocore/devices/+/response",
        "autocore/discovery/+",
    ]
    assert set(fw22.subscriptions()) <= set(subs)
    assert "fleet/a/devices/+/status" in [f for f, _ in subscriptions("fleet/a")]
