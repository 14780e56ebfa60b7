"""The v1 dialect, inbound: a decoded payload on a v1 topic -> `Message`.

One function per topic kind. Unknown extra fields are ignored everywhere;
a field with the wrong type is refused with a detail naming it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from protocol import schema
from protocol.processors import relay_readings, status_readings, telemetry_readings
from protocol.schema import describe, join
from protocol.timestamps import parse_timestamp
from protocol.values import (
    BAD_PROTOCOL_VERSION,
    BAD_TOPIC,
    EMPTY,
    SCHEMA,
    UUID_MISMATCH,
    Availability,
    Dialect,
    DeviceFacts,
    Discovery,
    Encoding,
    Kind,
    Message,
    Rejected,
    Response,
    Topic,
)

DEFAULT_STATUS_INTERVAL = 5.0
MAX_STATUS_INTERVAL = 86400.0  # a day: a longer period is a firmware bug, not a plan


def decode_v1(topic: Topic, obj: dict, encoding: Encoding) -> Message:
    decoder = _DECODERS.get(topic.kind)
    if decoder is None or topic.uuid is None:
        raise Rejected(BAD_TOPIC, f"{topic.kind.value} is not a topic the gateway receives")
    return decoder(topic, obj, encoding)


def _message(topic: Topic, obj: Mapping, encoding: Encoding, **fields: Any) -> Message:
    """A Message with what every v1 payload may carry: `uuid` (must match the
    topic's), `protocol_version` (1.x or absent) and `timestamp`."""
    path = topic.kind.value
    assert topic.uuid is not None  # decode_v1 refused a topic without a device id
    uuid = obj.get("uuid")
    if uuid is not None and uuid != topic.uuid:
        raise Rejected(UUID_MISMATCH, f"{path}.uuid: {describe(uuid)} is not the topic's device id \"{topic.uuid}\"")
    return Message(
        uuid=topic.uuid,
        dialect=Dialect.V1,
        kind=topic.kind,
        encoding=encoding,
        protocol_version=_protocol_version(obj.get("protocol_version"), path),
        device_ts=parse_timestamp(obj.get("timestamp"), join(path, "timestamp")),
        **fields,
    )


def _protocol_version(value: Any, path: str) -> str | None:
    # A v1 device may name its version (1, "1.0", "1.2.3"); anything else on
    # a v1 topic is a device speaking another protocol, not a v1 message.
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str) and (value == "1" or value.startswith("1.")):
        return value
    raise Rejected(BAD_PROTOCOL_VERSION, f"{path}.protocol_version: expected 1.x on a v1 topic, got {describe(value)}")


def _boot_id(obj: Mapping, path: str) -> int | None:
    return schema.get_int(obj, "boot_id", path, minimum=0)


def announce(topic: Topic, obj: dict, encoding: Encoding) -> Message:
    path = "announce"
    boot_id = _boot_id(obj, path)
    capabilities = schema.get_list(obj, "capabilities", path) or []
    for i, word in enumerate(capabilities):
        if not isinstance(word, str):
            raise schema.fail(f"{path}.capabilities[{i}]", "text", word)
    facts = DeviceFacts(
        device_type=schema.get_str(obj, "device_type", path, required=True),
        firmware_version=schema.get_str(obj, "firmware_version", path, required=True),
        capabilities=tuple(capabilities),
        ip_address=schema.get_str(obj, "ip_address", path),
        mac_address=schema.get_str(obj, "mac_address", path),
        relay_count=schema.get_int(obj, "relay_count", path, minimum=0),
        hardware_revision=schema.get_str(obj, "hardware_revision", path),
        serial_number=schema.get_str(obj, "serial_number", path),
        name=schema.get_str(obj, "name", path),
        boot_id=boot_id,
        status_interval=schema.get_number(
            obj, "status_interval", path, default=DEFAULT_STATUS_INTERVAL, positive=True,
            maximum=MAX_STATUS_INTERVAL
        ),
    )
    return _message(topic, obj, encoding, boot_id=boot_id, facts=facts)


def status(topic: Topic, obj: dict, encoding: Encoding) -> Message:
    """Availability (`status` online/offline, retained, the Last Will) or a
    periodic report (no `status` field; its numbers become rows)."""
    path = "status"
    boot_id = _boot_id(obj, path)
    if obj.get("status") is None:
        # A report with no numbers is still a heartbeat, so never EMPTY.
        return _message(topic, obj, encoding, boot_id=boot_id, readings=tuple(status_readings(obj, path)))
    word = obj["status"]
    if not isinstance(word, str) or word not in ("online", "offline"):
        raise schema.fail(join(path, "status"), '"online" or "offline"', word)
    availability = Availability(
        online=word == "online", boot_id=boot_id, reason=schema.get_str(obj, "reason", path)
    )
    return _message(topic, obj, encoding, boot_id=boot_id, availability=availability, alive=availability.online)


def telemetry(topic: Topic, obj: dict, encoding: Encoding) -> Message:
    path = "telemetry"
    seq = schema.get_int(obj, "seq", path, minimum=0)
    boot_id = _boot_id(obj, path)
    rows = telemetry_readings(obj, path)
    if not rows:
        raise Rejected(EMPTY, f"{path}: no readings in any section (can_data, analog_sensors, system_status, gps, "
                              f"readings, can_frames) nor a top-level number")
    return _message(topic, obj, encoding, seq=seq, boot_id=boot_id, readings=tuple(rows))


def relay_status(topic: Topic, obj: dict, encoding: Encoding) -> Message:
    # `seq` belongs to the telemetry topic alone (it numbers telemetry
    # messages), so a RelayStatus's rows are stored without one.
    path = "relay_status"
    rows, states = relay_readings(obj, path)
    if not rows:
        raise Rejected(EMPTY, f"{path}: no relays and no numbers")
    return _message(
        topic, obj, encoding, boot_id=_boot_id(obj, path), readings=tuple(rows), relay_states=tuple(states)
    )


def response(topic: Topic, obj: dict, encoding: Encoding) -> Message:
    path = "response"
    command_id = _command_id(obj.get("command_id"), join(path, "command_id"))
    success = schema.get_bool(obj, "success", path)
    if success is not None:
        outcome = "succeeded" if success else "failed"
    elif obj.get("status") == "accepted":
        outcome = "accepted"
    else:
        raise Rejected(SCHEMA, f'{path}: needs "success" (true or false) or "status": "accepted"')
    answer = Response(
        command_id=command_id,
        outcome=outcome,
        result=obj.get("result"),
        # "" is how some firmware writes "no error"
        error_message=None if obj.get("error_message") == "" else schema.get_str(obj, "error_message", path),
        execution_time=schema.get_number(obj, "execution_time", path, minimum=0),
    )
    return _message(topic, obj, encoding, boot_id=_boot_id(obj, path), response=answer)


def _command_id(value: Any, path: str) -> str:
    # The gateway sends ids as text; a device that echoes it as a number
    # (42 or 42.0) still names the same command.
    if value is None:
        raise Rejected(SCHEMA, f"{path}: required")
    if isinstance(value, str) and value:
        return value
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise schema.fail(path, "text or an integer", value)


def discovery(topic: Topic, obj: dict, encoding: Encoding) -> Message:
    path = "discovery"
    info = schema.get_map(obj, "device_info", path) or {}
    where = join(path, "device_info")
    found = Discovery(
        discovery_type=schema.get_str(obj, "discovery_type", path),
        ip_address=schema.get_str(info, "ip_address", where),
        mac_address=schema.get_str(info, "mac_address", where),
        device_type=schema.get_str(info, "device_type", where),
        signal_strength=schema.get_number(info, "signal_strength", where),
    )
    return _message(topic, obj, encoding, discovery=found)


_DECODERS: dict[Kind, Callable[[Topic, dict, Encoding], Message]] = {
    Kind.ANNOUNCE: announce,
    Kind.STATUS: status,
    Kind.TELEMETRY: telemetry,
    Kind.RELAY_STATUS: relay_status,
    Kind.RESPONSE: response,
    Kind.DISCOVERY: discovery,
}
