"""The one entry the Router calls: topic + payload bytes -> `Message`.

Checks run cheapest first — size, topic, codec, schema — so an oversize or
misaddressed message is refused before a byte of it is parsed.

Two dialects share the broker. v1 topics live under the configured prefix;
firmware 2.2 topics always under the literal `autocore`, and `protocol.fw22`
owns them. Where the two overlap (the prefix is `autocore`: every
`autocore/devices/{uuid}/...` v1 topic is also a 2.2 level topic, `status`
above all), the payload decides: `protocol_version` "2.x" goes to 2.2.
"""

from __future__ import annotations

from protocol import codec, fw22
from protocol.topics import INBOUND_KINDS, parse_v1, v1_subscriptions
from protocol.v1 import decode_v1
from protocol.values import BAD_TOPIC, TOO_LARGE, Dialect, Message, Rejected, Topic

def decode_message(topic: str, payload: bytes, *, prefix: str, max_payload: int,
                   parsed: Topic | None = None) -> Message:
    """A valid inbound message, or Rejected with a reason and a detail.
    `parsed`: `parse_topic(topic, prefix)` if the caller has it already."""
    if len(payload) > max_payload:
        raise Rejected(TOO_LARGE, f"payload of {len(payload)} bytes is over the limit of {max_payload}")
    if parsed is None:
        parsed = parse_topic(topic, prefix)
    obj, encoding = codec.decode(payload, max_payload)
    if parsed.dialect is Dialect.V1:
        if _says_fw22(obj):
            fw22_topic = fw22.parse_topic(topic)
            if fw22_topic is not None:
                return fw22.decode(fw22_topic, obj, encoding)
        return decode_v1(parsed, obj, encoding)
    return fw22.decode(parsed, obj, encoding)


def parse_topic(topic: str, prefix: str) -> Topic:
    """The Topic of an inbound topic: v1 under `prefix`, else firmware 2.2.
    A topic the gateway itself publishes (command, availability, ...) is
    refused, never handed to 2.2 as an unknown level."""
    try:
        parsed = parse_v1(topic, prefix)
    except Rejected as exc:
        if exc.reason != BAD_TOPIC:
            raise
        fw22_topic = fw22.parse_topic(topic)
        if fw22_topic is None:
            raise
        return fw22_topic
    if parsed.kind not in INBOUND_KINDS:
        raise Rejected(BAD_TOPIC, f"topic {topic!r} is one the gateway publishes ({parsed.kind.value}), not a device's")
    return parsed


def no_local(topic_filter: str) -> bool:
    """Whether a filter is subscribed with MQTT v5 No Local: one the gateway
    reads only to observe what others publish there (2.2 `relays/set`),
    where its own publications must not come back to it."""
    return topic_filter in fw22.OBSERVED


def _says_fw22(obj: dict) -> bool:
    version = obj.get("protocol_version")
    return isinstance(version, str) and version.startswith("2.")


def subscriptions(prefix: str, share_group: str = "") -> list[tuple[str, int]]:
    """Every filter the gateway subscribes to, each once (with the prefix
    `autocore` the two dialects share filters).

    With a share group (several instances, issue 13) the high-rate filters
    (`shared_filters`) become MQTT 5 shared subscriptions,
    `$share/{group}/{filter}`, which the broker spreads over the group's
    instances; control topics (announce, status, availability, response,
    discovery, 2.2 status and errors, the observed `relays/set`) stay plain,
    so every instance gets them. No filter is both: a message never reaches
    one instance twice."""
    wanted = v1_subscriptions(prefix) + list(fw22.subscriptions())
    qos: dict[str, int] = {}
    for topic_filter, level in wanted:
        qos[topic_filter] = max(level, qos.get(topic_filter, 0))
    if not share_group:
        return list(qos.items())
    check_share_group(share_group)
    spread = set(shared_filters(prefix))
    return [(f"$share/{share_group}/{f}" if f in spread else f, level) for f, level in qos.items()]


def shared_filters(prefix: str) -> list[str]:
    """The high-rate filters a share group spreads: v1 `telemetry` and
    `relay/status`; 2.2 `relays/state`, the `status/operational`,
    `telemetry/data` and `diagnostics` levels and `telemetry/relays/data`.
    (Never the observed `relays/set`: MQTT 5 forbids No Local on a shared
    subscription.)"""
    v1 = [f"{prefix}/devices/+/{level}" if prefix else f"devices/+/{level}" for level in ("telemetry", "relay/status")]
    device = f"{fw22.PREFIX}/devices/+"
    return v1 + [f"{device}/relays/state", f"{device}/status/operational", f"{device}/telemetry/data",
                 f"{device}/diagnostics", f"{fw22.PREFIX}/telemetry/relays/data"]


def check_share_group(group: str) -> str:
    """A share group name as MQTT 5 allows it: not empty, no `/`, `+` or `#`."""
    if not group or any(c in group for c in "/+#") or "\x00" in group:
        raise ValueError(f"share group {group!r} must be a non-empty name without '/', '+' or '#'")
    return group

