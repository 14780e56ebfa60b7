"""Firmware 2.2 dialect, device -> gateway: topics, subscriptions, decoding.

The AutoCore boards in the field (ESP-IDF relay, PlatformIO display) speak
protocol 2.2.0 under the fixed prefix `autocore` (see PROTOCOL.md, "Firmware
2.2 dialect"). This module maps their topics and payloads onto the values of
`protocol.values`, like `protocol.v1` does for the native dialect.

Rules this module adds where PROTOCOL.md is silent (each one is tested):

* Device clocks are never read: every Message has `device_ts=None` and
  `trust_clock=False`, and `timestamp` is not even validated (a relay that
  never synced sends 1970 dates or seconds since boot).
* "Numeric fields" are numbers and booleans (stored 1.0 / 0.0), found in
  nested objects too (flattened with dots). Text is never a reading, not even
  text that reads as a number (`firmware_version` "2.0" is not a
  measurement); lists are skipped; NaN, infinities and integers too large
  for a float are skipped.
* Identity fields are never readings: `protocol_version`, `uuid`,
  `timestamp`, `board_id` everywhere, and on `status` also `channels` (the
  relay count, kept as `DeviceFacts.relay_count`) and `capabilities` (kept
  as given in `DeviceFacts.capabilities`).
* A `status` without a `status` field is a report: facts and readings as for
  `online`, no availability. Any other `status` value is rejected.
* The source of a level's readings is the level's last topic level:
  `status/operational` -> `operational`, `telemetry/data` -> `data`,
  `display/touch` -> `touch`, `config/ack` -> `ack`, `diagnostics` ->
  `diagnostics` (see `level_source`).
* `autocore/telemetry/relays/data` names its board only in the payload,
  which nothing (topic, ACL) binds to the publisher: its events are recorded
  but the message is not a sign of life (`alive=False`). Its `event` must be
  `safety_shutoff` or `relay_change`.
* `autocore/errors/{uuid}/{type}` is a sign of life of `{uuid}`. When its
  `context.command` holds a payload with a `command_id` (an object, JSON
  text, or JSON text the relay cut short) the message also carries a
  `failed` Response for that id.
* `autocore/devices/{uuid}/relays/set` is read only to observe the relay
  commands others send (the Config App's UI, a display): the message carries
  an `ObservedCommand` for `{uuid}`, is never acted on and is no sign of
  life of `{uuid}` (`alive=False`: the board did not send it). It needs a
  `channel` (a number or "all") and a `command` (text) or a `state` (true or
  false); `user`, `source` (else `source_uuid`, else a `uuid` other than the
  topic's: on this topic a payload's uuid names its sender, never checked
  against the topic) and `function_type` are kept when they are text, cut
  to 64 characters. `is_own_relay_command` tells the gateway's own
  (`user` "gateway" or `source` the gateway id) from others'.
* An `error` payload answers a relays/set when it echoes the payload it
  refused in `context.command` (`refused_command`); errors that echo
  nothing (a hold's heartbeat timeout) answer no relays/set.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from protocol.codec import decode as decode_payload
from protocol.codec import type_name
from protocol.schema import flatten, number_or_tag
from protocol.topics import is_valid_uuid
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
    ObservedCommand,
    Reading,
    RelayState,
    Rejected,
    Response,
    Topic,
)

PREFIX = "autocore"  # hard-coded in the 2.2 firmware, whatever AUTOCORE_TOPIC_PREFIX says

# The levels below a device the gateway subscribes to besides status and
# relays/state (PROTOCOL.md's inbound table).
LEVELS = ("status/operational", "telemetry/data", "diagnostics", "display/touch", "config/ack")

RELAY_EVENTS = ("safety_shutoff", "relay_change")

# Topics read only to observe what others send there, never the gateway's
# own publications: subscribed with MQTT v5 No Local.
OBSERVED = (f"{PREFIX}/devices/+/relays/set",)
GATEWAY_USER = "gateway"  # the `user` of the gateway's own relays/set
_LABEL_MAX = 64
_COMMAND_MAX = 32

# Levels below a device that belong to v1 (device -> gateway and gateway ->
# device): not 2.2 topics, whatever prefix v1 uses.
_V1_LEVELS = frozenset({"announce", "telemetry", "relay/status", "response", "command", "relay/command", "availability"})

_VERSION = re.compile(r"2\.[0-9]+(?:\.[0-9]+)*(?:[-+][0-9A-Za-z.+-]*)?")
_CHANNEL_KEY = re.compile(r"[1-9][0-9]{0,3}")
# The id in a relays/set payload the relay echoed but cut short (not JSON any more).
_ECHOED_ID = re.compile(r'"command_id"\s*:\s*(?:"([^"\\]{1,64})"|([0-9]{1,20}))')

_IDENTITY = frozenset({"protocol_version", "uuid", "timestamp", "board_id"})
_STATUS_NOT_READINGS = _IDENTITY | {"channels", "capabilities"}


# --- topics -----------------------------------------------------------------


def subscriptions() -> list[tuple[str, int]]:
    """The topic filters of the 2.2 inbound table, all at QoS 1, then the
    observed `relays/set` (`OBSERVED`, subscribed with No Local).

    Exact filters, never a `#` below a device: boards talk to each other on
    `relays/heartbeat` and `commands/...`, which the gateway must not
    receive; of `relays/set` it reads only others' commands, to record them.
    """
    device = f"{PREFIX}/devices/+"
    filters = [f"{device}/status", f"{device}/relays/state"]
    filters += [f"{device}/{level}" for level in LEVELS]
    filters += [f"{PREFIX}/telemetry/relays/data", f"{PREFIX}/errors/+/+"]
    filters += OBSERVED
    return [(topic_filter, 1) for topic_filter in filters]


def parse_topic(topic: str) -> Topic | None:
    """The 2.2 meaning of a topic, None when it is not a 2.2 topic.

    Raises Rejected(BAD_TOPIC) for a topic of the 2.2 namespace the gateway
    never reads (boards' `relays/heartbeat`, `commands/...`, levels below
    `relays/set`, malformed `errors` and `telemetry` topics) and
    Rejected(BAD_UUID) for a 2.2 topic whose uuid level is not a valid uuid.
    """
    levels = topic.split("/")
    if len(levels) < 2 or levels[0] != PREFIX:
        return None
    section = levels[1]
    if section == "devices":
        return _parse_device_topic(topic, levels[2:])
    if section == "errors":
        if len(levels) != 4 or not levels[3] or not _clean(levels[3]):
            raise Rejected(BAD_TOPIC, f"{_show(topic)}: expected {PREFIX}/errors/{{uuid}}/{{type}}")
        return Topic(Kind.FW22_ERROR, _uuid_level(levels[2], topic), Dialect.FW22, levels[3])
    if section == "telemetry":
        if levels[2:] == ["relays", "data"]:
            return Topic(Kind.FW22_RELAY_EVENTS, None, Dialect.FW22)
        raise Rejected(BAD_TOPIC, f"{_show(topic)}: of {PREFIX}/telemetry/... the gateway reads only {PREFIX}/telemetry/relays/data")
    return None


def _parse_device_topic(topic: str, rest: list[str]) -> Topic | None:
    if not rest:
        return None
    sub = "/".join(rest[1:])
    if sub in _V1_LEVELS:
        return None  # v1's, whatever its prefix
    if sub == "":
        if len(rest) == 1:
            raise Rejected(BAD_TOPIC, f"{_show(topic)}: no level below the device")
        raise Rejected(BAD_TOPIC, f"{_show(topic)}: empty topic level")
    first = rest[1]
    if sub == "relays/set":
        return Topic(Kind.FW22_RELAY_SET, _uuid_level(rest[0], topic), Dialect.FW22)
    if (first == "relays" and len(rest) > 2 and rest[2] in ("set", "heartbeat")) or first == "commands":
        raise Rejected(
            BAD_TOPIC,
            f"{_show(topic)}: relays/heartbeat and commands/... carry commands between boards; the gateway never reads them",
        )
    if any(not level for level in rest[1:]):
        raise Rejected(BAD_TOPIC, f"{_show(topic)}: empty topic level")
    if not _clean(sub):
        raise Rejected(BAD_TOPIC, f"{_show(topic)}: a topic level holds a wildcard or control character")
    uuid = _uuid_level(rest[0], topic)
    if sub == "status":
        return Topic(Kind.FW22_STATUS, uuid, Dialect.FW22)
    if sub == "relays/state":
        return Topic(Kind.FW22_RELAYS_STATE, uuid, Dialect.FW22)
    return Topic(Kind.FW22_LEVEL, uuid, Dialect.FW22, sub)


def level_source(level: str) -> str:
    """The telemetry source of a level's readings: its last topic level
    (`status/operational` -> `operational`, `telemetry/data` -> `data`)."""
    return level.rsplit("/", 1)[-1]


def _uuid_level(text: str, topic: str) -> str:
    if not is_valid_uuid(text):
        raise Rejected(BAD_UUID, f"{_show(topic)}: {_show(text)} is not a device uuid (1 to 64 of A-Z a-z 0-9 - _)")
    return text


def _clean(text: str) -> bool:
    return not any(ch in "+#" or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text)


def _show(text: str, limit: int = 80) -> str:
    shown = text if len(text) <= limit else text[:limit] + "..."
    return repr(shown)


# --- payloads ---------------------------------------------------------------


def decode(topic: Topic, obj: Mapping[str, Any], encoding: Encoding = Encoding.JSON) -> Message:
    """A valid 2.2 message, or Rejected.

    `topic` comes from `parse_topic`; `obj` is the decoded payload (a map
    with text keys, see `protocol.codec.decode`).
    """
    if topic.dialect is not Dialect.FW22:
        raise ValueError(f"not a 2.2 topic: {topic!r}")
    if not isinstance(obj, Mapping):
        raise Rejected(SCHEMA, f"payload must be an object, got {type_name(obj)}")
    version = _protocol_version(obj)
    try:
        if topic.kind is Kind.FW22_RELAY_EVENTS:
            return _relay_events(obj, version, encoding)
        if topic.kind is Kind.FW22_RELAY_SET:
            base = {"uuid": topic.uuid, "kind": topic.kind, "encoding": encoding, "protocol_version": version}
            return _message(base, alive=False, observed=_observed_command(obj, topic.uuid or ""))
        uuid = _check_uuid(obj, topic.uuid or "")
        base = {"uuid": uuid, "kind": topic.kind, "encoding": encoding, "protocol_version": version}
        if topic.kind is Kind.FW22_STATUS:
            return _status(obj, base)
        if topic.kind is Kind.FW22_RELAYS_STATE:
            return _relays_state(obj, base)
        if topic.kind is Kind.FW22_LEVEL:
            return _message(base, readings=_readings(obj, level_source(topic.level), _IDENTITY))
        if topic.kind is Kind.FW22_ERROR:
            return _error(obj, base, topic.level)
    except RecursionError:
        raise Rejected(SCHEMA, "payload nested too deeply") from None
    raise ValueError(f"not a 2.2 topic kind: {topic.kind!r}")


def _message(base: dict[str, Any], **fields: Any) -> Message:
    return Message(dialect=Dialect.FW22, device_ts=None, trust_clock=False, **base, **fields)


def _protocol_version(obj: Mapping[str, Any]) -> str:
    version = obj.get("protocol_version")
    if version is None:
        raise Rejected(BAD_PROTOCOL_VERSION, 'protocol_version: required on every 2.2 message ("2.2.0")')
    if not isinstance(version, str):
        raise Rejected(BAD_PROTOCOL_VERSION, f'protocol_version: expected text such as "2.2.0", got {type_name(version)}')
    if not _VERSION.fullmatch(version):
        raise Rejected(BAD_PROTOCOL_VERSION, f'protocol_version: expected "2.x" (e.g. "2.2.0"), got {_show(version, 40)}')
    return version


def _check_uuid(obj: Mapping[str, Any], topic_uuid: str) -> str:
    claimed = obj.get("uuid")
    if claimed is None:
        return topic_uuid
    if not isinstance(claimed, str):
        raise Rejected(SCHEMA, f"uuid: expected text, got {type_name(claimed)}")
    if claimed != topic_uuid:
        raise Rejected(UUID_MISMATCH, f"payload uuid {_show(claimed)} is not the topic's {topic_uuid!r}")
    return topic_uuid


def _readings(obj: Mapping[str, Any], source: str, skip: frozenset[str]) -> tuple[Reading, ...]:
    rows = []
    for key, leaf in obj.items():
        if key in skip:
            continue
        pairs = flatten(leaf, key) if isinstance(leaf, Mapping) else ((key, leaf),)
        for metric, value in pairs:
            if isinstance(value, (bool, int, float)):
                number, _ = number_or_tag(value)
                if number is not None:
                    rows.append(Reading(source=source, metric=metric, value=number))
    return tuple(rows)


def _status(obj: Mapping[str, Any], base: dict[str, Any]) -> Message:
    status = obj.get("status")
    if status == "offline":
        reason = obj.get("reason")
        return _message(
            base,
            alive=False,
            availability=Availability(online=False, reason=reason if isinstance(reason, str) else None),
        )
    if status is not None and status != "online":
        shown = _show(status, 40) if isinstance(status, str) else type_name(status)
        raise Rejected(SCHEMA, f'status: expected "online" or "offline", got {shown}')
    return _message(
        base,
        alive=True,
        availability=Availability(online=True) if status == "online" else None,
        facts=_facts(obj),
        readings=_readings(obj, "status", _STATUS_NOT_READINGS),
    )


def _facts(obj: Mapping[str, Any]) -> DeviceFacts:
    device_type = _text(obj, "type")
    if device_type is None:
        device_type = _text(obj, "device_type")
    capabilities = obj.get("capabilities")
    if isinstance(capabilities, Mapping):
        kept: Any = capabilities
    elif isinstance(capabilities, list) and all(isinstance(word, str) for word in capabilities):
        kept = tuple(capabilities)
    else:
        kept = ()
    channels = obj.get("channels")
    relay_count = None
    if isinstance(channels, (int, float)) and not isinstance(channels, bool):
        if 0 <= channels < 10_000 and channels == int(channels):
            relay_count = int(channels)
    return DeviceFacts(
        device_type=device_type,
        firmware_version=_text(obj, "firmware_version"),
        capabilities=kept,
        ip_address=_text(obj, "ip_address"),
        mac_address=_text(obj, "mac_address"),
        relay_count=relay_count,
    )


def _text(obj: Mapping[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise Rejected(SCHEMA, f"{key}: expected text, got {type_name(value)}")
    return value


def _relays_state(obj: Mapping[str, Any], base: dict[str, Any]) -> Message:
    channels = obj.get("channels")
    if channels is None:
        raise Rejected(SCHEMA, 'channels: required, an object of channel number to state ({"1": true, "2": false})')
    if not isinstance(channels, Mapping):
        raise Rejected(SCHEMA, f'channels: expected an object such as {{"1": true}}, got {type_name(channels)}')
    states: dict[int, bool] = {}
    for key, state in channels.items():
        if not isinstance(key, str) or not _CHANNEL_KEY.fullmatch(key):
            shown = _show(key, 20) if isinstance(key, str) else type_name(key)
            raise Rejected(SCHEMA, f"channels: key {shown} is not a channel number (1, 2, ...)")
        if not isinstance(state, bool):
            raise Rejected(SCHEMA, f"channels.{key}: expected true or false, got {type_name(state)}")
        states[int(key)] = state
    ordered = sorted(states.items())
    return _message(
        base,
        alive=True,
        relay_states=tuple(RelayState(relay_id=n, state=s) for n, s in ordered),
        readings=tuple(Reading(source="relay", metric=f"relay.{n}.state", value=1.0 if s else 0.0) for n, s in ordered),
    )


def _relay_events(obj: Mapping[str, Any], version: str, encoding: Encoding) -> Message:
    uuid = obj.get("uuid")
    if uuid is None:
        raise Rejected(SCHEMA, f"uuid: required on {PREFIX}/telemetry/relays/data (the topic names no device)")
    if not isinstance(uuid, str):
        raise Rejected(SCHEMA, f"uuid: expected text, got {type_name(uuid)}")
    if not is_valid_uuid(uuid):
        raise Rejected(BAD_UUID, f"uuid: {_show(uuid)} is not a device uuid (1 to 64 of A-Z a-z 0-9 - _)")
    event = obj.get("event")
    if event not in RELAY_EVENTS:
        shown = "none" if event is None else _show(event, 40) if isinstance(event, str) else type_name(event)
        raise Rejected(SCHEMA, f'event: expected "safety_shutoff" or "relay_change", got {shown}')
    return Message(
        uuid=uuid,
        dialect=Dialect.FW22,
        kind=Kind.FW22_RELAY_EVENTS,
        encoding=encoding,
        protocol_version=version,
        device_ts=None,
        trust_clock=False,
        alive=False,
        events=(Event(event=event, detail=obj, channel=_channel(obj.get("channel"))),),
    )


def _channel(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if value != value or value < 1 or value >= 10_000 or value != int(value):
        return None
    return int(value)


def _error(obj: Mapping[str, Any], base: dict[str, Any], error_type: str) -> Message:
    context = obj.get("context")
    if not isinstance(context, Mapping):
        context = {}
    echoed = _echoed_command(context.get("command"))
    channel = _channel(obj.get("channel"))
    if channel is None:
        channel = _channel(context.get("channel"))
    if channel is None and echoed is not None:
        channel = _channel(echoed.get("channel"))
    response = None
    command_id = _command_id(echoed)
    if command_id is not None:
        response = Response(command_id=command_id, outcome="failed", error_message=_error_text(obj, context, error_type))
    return _message(base, alive=True, events=(Event(event="error", detail=obj, channel=channel),), response=response)


def _echoed_command(command: Any) -> Mapping[str, Any] | None:
    """The payload the relay echoed in `context.command`: an object, JSON
    text, or JSON text cut short by the relay's buffer (then only its id)."""
    if isinstance(command, Mapping):
        return command
    if not isinstance(command, str) or not command.lstrip().startswith("{"):
        return None
    try:
        echoed, _ = decode_payload(command.strip().encode("utf-8", "surrogatepass"), max_payload=65536)
        return echoed
    except Rejected:
        match = _ECHOED_ID.search(command)
        return {"command_id": match.group(1) or match.group(2)} if match else None


def _command_id(echoed: Mapping[str, Any] | None) -> str | None:
    command_id = echoed.get("command_id") if echoed is not None else None
    if isinstance(command_id, int) and not isinstance(command_id, bool) and 0 <= command_id < 10**20:
        command_id = str(command_id)
    if not isinstance(command_id, str):
        return None
    text = command_id
    return text if 0 < len(text) <= 64 else None


def _error_text(obj: Mapping[str, Any], context: Mapping[str, Any], error_type: str) -> str:
    message = obj.get("error_message", obj.get("message"))
    code = obj.get("error_code", obj.get("code"))
    reason = context.get("reason")
    text = message if isinstance(message, str) and message else f"the device reported a {error_type} error"
    if isinstance(code, int) and not isinstance(code, bool) and abs(code) < 10**20:
        code = str(code)
    if isinstance(code, str) and code:
        text = f"{code}: {text}"
    if isinstance(reason, str) and reason:
        text = f"{text} ({reason})"
    return text


# --- observed relay commands (relays/set) -------------------------------------


def _observed_command(obj: Mapping[str, Any], target: str) -> ObservedCommand:
    raw = obj.get("channel")
    channel: int | str | None = "all" if raw == "all" else _channel(raw)
    if channel is None:
        shown = "none" if raw is None else _show(raw, 20) if isinstance(raw, str) else type_name(raw)
        raise Rejected(SCHEMA, f'channel: expected a channel number (1, 2, ...) or "all", got {shown}')
    command = obj.get("command")
    if command is not None and (not isinstance(command, str) or not 0 < len(command) <= _COMMAND_MAX
                                or not _clean(command)):
        shown = _show(command, 40) if isinstance(command, str) else type_name(command)
        raise Rejected(SCHEMA, f'command: expected "on", "off" or "toggle", got {shown}')
    state = obj.get("state")
    if state is not None and not isinstance(state, bool):
        raise Rejected(SCHEMA, f"state: expected true or false, got {type_name(state)}")
    if command is None and state is None:
        raise Rejected(SCHEMA, 'relays/set: neither "command" nor "state": no relay command to record')
    if command is not None:
        state = {"on": True, "off": False}.get(command)  # the relay reads `command` first
    source = _label(obj, "source") or _label(obj, "source_uuid")
    if source is None:
        sender = _label(obj, "uuid")
        source = sender if sender != target else None
    return ObservedCommand(
        channel=channel,
        command=command,
        state=state,
        function_type=_label(obj, "function_type"),
        user=_label(obj, "user"),
        source=source,
        command_id=_command_id(obj),
    )


def _label(obj: Mapping[str, Any], key: str) -> str | None:
    """A descriptive text field of an observed command: kept when it is
    non-empty text (cut to 64 characters), else left out, never a reason to
    lose the command from the record."""
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        return None
    return value[:_LABEL_MAX]


def is_own_relay_command(command: ObservedCommand, gateway_id: str) -> bool:
    """Whether an observed relays/set is one the gateway sent itself (the
    No Local subscription should already keep those away)."""
    return command.user == GATEWAY_USER or (command.source is not None and command.source == gateway_id)


@dataclass(frozen=True)
class RefusedCommand:
    """What an `error` payload says of the relays/set it refused.

    `echo` is the payload it echoed (None when the echo is too damaged to
    read), `command_id` that payload's id, `error_code` and `error_message`
    the error's own."""

    echo: Mapping[str, Any] | None
    command_id: str | None
    error_code: str | None
    error_message: str | None


def refused_command(detail: Any) -> RefusedCommand | None:
    """The relays/set an `error` event's payload (`Event.detail`) refuses,
    or None when it echoes no command in `context.command`."""
    if not isinstance(detail, Mapping):
        return None
    context = detail.get("context")
    command = context.get("command") if isinstance(context, Mapping) else None
    if not (isinstance(command, Mapping) or (isinstance(command, str) and command.strip())):
        return None
    echo = _echoed_command(command)
    code = detail.get("error_code", detail.get("code"))
    if isinstance(code, int) and not isinstance(code, bool) and abs(code) < 10**20:
        code = str(code)
    message = detail.get("error_message", detail.get("message"))
    return RefusedCommand(
        echo=echo,
        command_id=_command_id(echo),
        error_code=code[:_LABEL_MAX] if isinstance(code, str) and code else None,
        error_message=message[:256] if isinstance(message, str) and message else None,
    )
