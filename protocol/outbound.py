"""What the gateway publishes in v1: commands, availability, its own status
and broadcasts. Time comes in as an argument; nothing here reads a clock."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from protocol.codec import encode
from protocol.timestamps import iso
from protocol.topics import broadcast_topic, device_topic, gateway_status_topic
from protocol.values import SCHEMA, CommandSpec, Encoding, Kind, Publication, Rejected

COMMAND_QOS = 2


def command_publication(
    prefix: str, spec: CommandSpec, attempt: int, now: float, gateway_id: str, encoding: Encoding = Encoding.JSON
) -> Publication:
    """A Command on `command`, or a RelayCommand on `relay/command` when the
    row's topic says so (its `relays` taken from `parameters["relays"]`).
    Rejected(SCHEMA) for a row that cannot become a valid payload, so the
    caller can fail that command instead of publishing garbage."""
    common = {
        "command_id": str(spec.id),
        "timestamp": iso(now),
        "timeout": _plain(spec.timeout),
        "gateway_id": gateway_id,
        "attempt": attempt,
    }
    if spec.expires_at > 0:
        common["expires_at"] = iso(spec.expires_at)
    if spec.topic == "relay/command":
        relays = spec.parameters.get("relays") if isinstance(spec.parameters, Mapping) else None
        if not isinstance(relays, (list, tuple)) or not relays:
            raise Rejected(SCHEMA, f"command {spec.id}: a relay/command needs parameters.relays, a non-empty list")
        kind, payload = Kind.RELAY_COMMAND, {"command_id": common["command_id"], "relays": relays, **common}
    elif spec.topic == "command":
        kind = Kind.COMMAND
        payload = {"command_id": common["command_id"], "command_type": spec.command_type,
                   "parameters": spec.parameters, **common}
    else:
        raise Rejected(SCHEMA, f'command {spec.id}: topic must be "command" or "relay/command", got {spec.topic!r}')
    return Publication(device_topic(prefix, spec.device_uuid, kind), _encode(payload, encoding, spec.id), COMMAND_QOS)


def availability_publication(prefix: str, uuid: str, online: bool) -> Publication:
    """The gateway's verdict on a device, plain text, retained."""
    word = b"online" if online else b"offline"
    return Publication(device_topic(prefix, uuid, Kind.AVAILABILITY), word, qos=1, retain=True)


def gateway_status_publication(
    prefix: str,
    status: str,
    gateway_id: str,
    now: float,
    uptime: float,
    devices_online: int,
    ram_mb: float,
    cpu_percent: float,
    version: str,
    storage: dict | None = None,
    instance_id: str | None = None,
) -> Publication:
    """GatewayStatus, retained (the heartbeat, and with status "offline" the
    Last Will). Always JSON: every device reads it, whatever it speaks.
    `storage` (optional, an extra field): whether the database can be
    written, e.g. {"state": "disk_full", "since": ..., "free_mb": ...}."""
    if status not in ("online", "offline"):
        raise Rejected(SCHEMA, f'gateway status must be "online" or "offline", got {status!r}')
    payload = {
        "timestamp": iso(now),
        "status": status,
        "gateway_id": gateway_id,
        "uptime": _plain(uptime),
        "devices_online": devices_online,
        "memory_usage": {"ram_mb": _plain(ram_mb), "cpu_percent": _plain(cpu_percent)},
        "version": version,
    }
    if storage is not None:
        payload["storage"] = storage
    # Several instances: each its own `{prefix}/gateway/{instance_id}/status`
    # (its Last Will included); the shared topic is kept online by one.
    topic = gateway_status_topic(prefix) if instance_id is None else f"{prefix}/gateway/{instance_id}/status"
    return Publication(topic, _encode(payload, Encoding.JSON, "gateway status"), qos=1, retain=True)


def broadcast_publication(prefix: str, message_type: str, data: Any, now: float) -> Publication:
    """A Broadcast, not retained (a device that connects later must not act
    on an old one). JSON, for the same reason as the gateway status."""
    payload = {"message_type": message_type, "timestamp": iso(now), "data": data}
    return Publication(broadcast_topic(prefix), _encode(payload, Encoding.JSON, "broadcast"), qos=1, retain=False)


def _plain(number: float) -> float | int:
    # 30 reads better than 30.0 for a firmware parser expecting an integer.
    if isinstance(number, float) and number.is_integer():
        return int(number)
    return number


def _encode(payload: dict, encoding: Encoding, what: Any) -> bytes:
    try:
        return encode(payload, encoding)
    except (TypeError, ValueError, OverflowError) as exc:
        raise Rejected(SCHEMA, f"{what}: cannot be encoded as {encoding.value}: {exc}") from None
