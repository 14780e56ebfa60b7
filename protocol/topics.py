"""v1 topics: `{prefix}/devices/{uuid}/...`, `{prefix}/discovery/{uuid}`,
`{prefix}/gateway/status`, `{prefix}/system/broadcast`.

The prefix is configurable and may itself hold several levels ("fleet/a").
A uuid level is checked here, once, so nothing above `protocol/` ever sees a
wildcard, an empty level or a uuid too long for the `devices` table.
"""

from __future__ import annotations

import re

from protocol.values import BAD_TOPIC, BAD_UUID, Dialect, Kind, Rejected, Topic

UUID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")

# The levels after `{prefix}/devices/{uuid}/` for each per-device kind.
DEVICE_LEVELS: dict[Kind, str] = {
    Kind.ANNOUNCE: "announce",
    Kind.STATUS: "status",
    Kind.TELEMETRY: "telemetry",
    Kind.RELAY_STATUS: "relay/status",
    Kind.RESPONSE: "response",
    Kind.COMMAND: "command",
    Kind.RELAY_COMMAND: "relay/command",
    Kind.AVAILABILITY: "availability",
}
_KIND_OF_LEVELS = {levels: kind for kind, levels in DEVICE_LEVELS.items()}

# What a `commands` row's `topic` may name: the level its command goes out on.
COMMAND_TOPICS: tuple[str, ...] = (DEVICE_LEVELS[Kind.COMMAND], DEVICE_LEVELS[Kind.RELAY_COMMAND])

# What a device publishes and the gateway subscribes to; the rest the
# gateway publishes itself, so one of those arriving inbound is refused.
INBOUND_KINDS = frozenset({Kind.ANNOUNCE, Kind.STATUS, Kind.TELEMETRY, Kind.RELAY_STATUS, Kind.RESPONSE, Kind.DISCOVERY})


def is_valid_uuid(s: object) -> bool:
    return isinstance(s, str) and UUID_RE.fullmatch(s) is not None


def check_uuid(uuid: object) -> str:
    if not is_valid_uuid(uuid):
        raise Rejected(
            BAD_UUID,
            f"device id {uuid!r} is not 1 to 64 characters of A-Z a-z 0-9 - _ starting with a letter or digit",
        )
    return uuid  # type: ignore[return-value]


def _join(prefix: str, *levels: str) -> str:
    return "/".join((prefix, *levels)) if prefix else "/".join(levels)


def parse_v1(topic: str, prefix: str) -> Topic:
    """The Topic of a v1 topic under `prefix`, or Rejected (BAD_TOPIC for an
    unknown shape, BAD_UUID for a bad uuid level)."""
    head = prefix + "/" if prefix else ""
    if not isinstance(topic, str) or not topic.startswith(head):
        raise Rejected(BAD_TOPIC, f"topic {topic!r} is not under the prefix {prefix!r}")
    levels = topic[len(head) :].split("/")
    # The shape is checked before the uuid, so a topic of an unknown shape is
    # a bad topic even when one of its levels would also be a bad uuid.
    if levels[0] == "devices" and len(levels) >= 3:
        kind = _KIND_OF_LEVELS.get("/".join(levels[2:]))
        if kind is not None:
            return Topic(kind, check_uuid(levels[1]), Dialect.V1)
    elif levels[0] == "discovery" and len(levels) == 2:
        return Topic(Kind.DISCOVERY, check_uuid(levels[1]), Dialect.V1)
    elif levels == ["gateway", "status"]:
        return Topic(Kind.GATEWAY_STATUS, None, Dialect.V1)
    elif levels == ["system", "broadcast"]:
        return Topic(Kind.BROADCAST, None, Dialect.V1)
    raise Rejected(BAD_TOPIC, f"topic {topic!r} is not a v1 topic")


def device_topic(prefix: str, uuid: str, kind: Kind) -> str:
    """`{prefix}/devices/{uuid}/{level}` for a per-device kind."""
    levels = DEVICE_LEVELS.get(kind)
    if levels is None:
        raise Rejected(BAD_TOPIC, f"{kind.value} is not a per-device topic")
    return _join(prefix, "devices", check_uuid(uuid), levels)


def discovery_topic(prefix: str, uuid: str) -> str:
    return _join(prefix, "discovery", check_uuid(uuid))


def gateway_status_topic(prefix: str) -> str:
    return _join(prefix, "gateway", "status")


def broadcast_topic(prefix: str) -> str:
    return _join(prefix, "system", "broadcast")


def v1_subscriptions(prefix: str) -> list[tuple[str, int]]:
    """Every device -> gateway topic at QoS 1 ('+' for the uuid level)."""
    filters = [_join(prefix, "devices", "+", DEVICE_LEVELS[kind]) for kind in DEVICE_LEVELS if kind in INBOUND_KINDS]
    filters.append(_join(prefix, "discovery", "+"))
    return [(f, 1) for f in filters]
