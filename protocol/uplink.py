"""The fleet uplink's wire format (issue 14; PROTOCOL.md, "Fleet uplink"):
batches of committed rows from a vehicle to the fleet broker, and commands
from the fleet to a vehicle.

Pure: no I/O. Up, each MQTT message is one `UplinkBatch` in MessagePack,
published at QoS 1 on `{prefix}/{vehicle_id}/data`: a map with `vehicle`,
`db` (a uuid the vehicle's database keeps for life, so a restored or
replaced file is told apart), `lane` (`events`, `commands` or
`telemetry`), `first` and `last` (the local row ids it covers), `sent_at`
and `rows` (maps keyed by the table's column names). The fleet side stores
each row exactly once by (vehicle, db, lane, row id) however often a batch
is redelivered. In the `commands` lane a row is one state change of a
command: `id` is the change's id (the outbox's), `command_id` the
command's, so a later change of the same command is a new row.

Down, fleet commands arrive on `{prefix}/{vehicle_id}/commands` as a JSON
or MessagePack map; `origin_id` is unique at the sender, so a redelivery
inserts nothing.

Row ids of one lane only grow: the vehicle side never reuses one (SQLite
AUTOINCREMENT, PostgreSQL sequences).

The sender's priorities (`PRIORITIES`: events and command outcomes, fresh
telemetry, the paced backlog) are how it orders its work, not part of the
wire format: fresh and backlog telemetry are both the `telemetry` lane.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import msgpack

UPLINK_VERSION = 1

# Wire lanes: which table a batch carries.
EVENTS_LANE, COMMANDS_LANE, TELEMETRY_LANE = "events", "commands", "telemetry"
WIRE_LANES = (EVENTS_LANE, COMMANDS_LANE, TELEMETRY_LANE)
# The sender's priorities, in the order it serves them: what happened to
# devices and commands first, then fresh telemetry, then the backlog (paced).
EVENTS, FRESH, BACKLOG = "events", "fresh", "backlog"
PRIORITIES = (EVENTS, FRESH, BACKLOG)
DATA = "data"
COMMANDS = "commands"
COMMAND_TOPICS = ("command", "relay/command")

MAX_ID = 2**63 - 1  # SQLite's and PostgreSQL's largest integer key


class UplinkError(ValueError):
    """A batch or fleet command that does not follow this format; the
    message names the field and what is wrong with it."""


def _check_level(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value or any(c in value for c in "/+#\0"):
        raise UplinkError(f"{name} must be a non-empty topic level without '/', '+' or '#', got {value!r}")
    return value


def check_prefix(prefix: Any) -> str:
    if not isinstance(prefix, str) or not prefix or any(c in prefix for c in "+#\0") \
            or prefix.startswith("/") or prefix.endswith("/") or prefix.startswith("$"):
        raise UplinkError(f"uplink prefix must be a topic prefix without '+', '#', a leading '$' or a leading or "
                          f"trailing '/', got {prefix!r}")
    return prefix


def check_vehicle_id(vehicle_id: Any) -> str:
    return _check_level("vehicle id", vehicle_id)


def data_topic(prefix: str, vehicle_id: str) -> str:
    return f"{check_prefix(prefix)}/{check_vehicle_id(vehicle_id)}/{DATA}"


def commands_topic(prefix: str, vehicle_id: str) -> str:
    return f"{check_prefix(prefix)}/{check_vehicle_id(vehicle_id)}/{COMMANDS}"


def ingest_subscriptions(prefix: str, share_group: str = "fleet") -> list[str]:
    """What a fleet-side ingester subscribes to: every vehicle's data,
    shared so several ingesters split the work."""
    _check_level("share group", share_group)
    return [f"$share/{share_group}/{check_prefix(prefix)}/+/{DATA}"]


def parse_topic(prefix: str, topic: str) -> tuple[str, str]:
    """(vehicle id, "data" or "commands") of an uplink topic."""
    head = check_prefix(prefix) + "/"
    if not topic.startswith(head):
        raise UplinkError(f"topic {topic!r} is not under the uplink prefix {prefix!r}")
    levels = topic[len(head):].split("/")
    if len(levels) != 2 or levels[1] not in (DATA, COMMANDS):
        raise UplinkError(f"topic {topic!r}: expected {prefix}/VEHICLE/{{{DATA},{COMMANDS}}}")
    return check_vehicle_id(levels[0]), levels[1]


@dataclass(frozen=True)
class UplinkBatch:
    vehicle_id: str
    database_id: str
    lane: str
    first_id: int
    last_id: int
    rows: tuple[dict[str, Any], ...]  # each has its row "id"; ascending
    sent_at: float

    def __post_init__(self) -> None:
        check_batch(self)


def _is_id(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, int) and 1 <= v <= MAX_ID


def check_batch(b: UplinkBatch) -> None:
    check_vehicle_id(b.vehicle_id)
    if not isinstance(b.database_id, str) or not b.database_id:
        raise UplinkError(f"db must be a non-empty string, got {b.database_id!r}")
    if b.lane not in WIRE_LANES:
        raise UplinkError(f"lane must be one of {', '.join(WIRE_LANES)}, got {b.lane!r}")
    for name in ("first_id", "last_id"):
        if not _is_id(getattr(b, name)):
            raise UplinkError(f"{name} must be an integer row id from 1, got {getattr(b, name)!r}")
    if b.first_id > b.last_id:
        raise UplinkError(f"first_id {b.first_id} is past last_id {b.last_id}")
    if not b.rows:
        raise UplinkError("a batch carries at least one row")
    previous = 0
    for i, row in enumerate(b.rows):
        if not isinstance(row, dict):
            raise UplinkError(f"row {i} must be a map of column names to values")
        rid: Any = row.get("id")
        if not _is_id(rid) or not b.first_id <= rid <= b.last_id or rid <= previous:
            raise UplinkError(f"row {i}: id {rid!r} must increase and lie in {b.first_id}..{b.last_id}")
        previous = rid
    if not isinstance(b.sent_at, (int, float)) or isinstance(b.sent_at, bool) or not math.isfinite(b.sent_at):
        raise UplinkError(f"sent_at must be a finite number of seconds, got {b.sent_at!r}")


def encode_batch(b: UplinkBatch) -> bytes:
    return msgpack.packb({
        "v": UPLINK_VERSION, "vehicle": b.vehicle_id, "db": b.database_id, "lane": b.lane,
        "first": b.first_id, "last": b.last_id, "sent_at": b.sent_at, "rows": list(b.rows),
    }, use_bin_type=True)


def encode_rows(vehicle_id: str, database_id: str, lane: str, rows: list[dict[str, Any]], sent_at: float,
                first_id: int | None = None, last_id: int | None = None) -> bytes:
    """The hot path's encoder: the same map as `encode_batch`, without
    building and checking a dataclass per batch (the rows come from our own
    table, in id order)."""
    return msgpack.packb({
        "v": UPLINK_VERSION, "vehicle": vehicle_id, "db": database_id, "lane": lane,
        "first": rows[0]["id"] if first_id is None else first_id,
        "last": rows[-1]["id"] if last_id is None else last_id,
        "sent_at": sent_at, "rows": rows,
    }, use_bin_type=True)


def _unpack_map(payload: Any, what: str, *, json_allowed: bool) -> dict:
    if not isinstance(payload, (bytes, bytearray)):
        raise UplinkError(f"{what}: payload must be bytes")
    first = payload[:1]
    try:
        if json_allowed and (first == b"{" or first.isspace()):
            body = json.loads(payload)
        else:
            body = msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except Exception as exc:  # both decoders raise several types for bad input
        kinds = "JSON or MessagePack" if json_allowed else "MessagePack"
        raise UplinkError(f"{what}: not {kinds} ({type(exc).__name__}: {exc})") from None
    if not isinstance(body, dict):
        raise UplinkError(f"{what}: expected a map, got {type(body).__name__}")
    if "v" in body and body["v"] != UPLINK_VERSION:
        raise UplinkError(f"{what}: version {body.get('v')!r} is not {UPLINK_VERSION}")
    return body


def decode_batch(payload: bytes) -> UplinkBatch:
    body = _unpack_map(payload, "uplink batch", json_allowed=False)
    missing = [k for k in ("vehicle", "db", "lane", "first", "last", "rows", "sent_at") if k not in body]
    if missing:
        raise UplinkError(f"uplink batch: missing {', '.join(missing)}")
    if not isinstance(body["rows"], list):
        raise UplinkError("uplink batch: rows must be a list of maps")
    return UplinkBatch(body["vehicle"], body["db"], body["lane"], body["first"], body["last"],
                       tuple(body["rows"]), body["sent_at"])


@dataclass(frozen=True)
class FleetCommand:
    """A command for one device of a vehicle, from the fleet side."""

    origin_id: str  # unique at the sender: a redelivery inserts nothing
    device_uuid: str
    command_type: str
    parameters: Any = None
    topic: str = "command"  # the device-side topic kind, as in the commands table
    timeout: float | None = None
    max_attempts: int | None = None
    ttl_s: float | None = None

    def __post_init__(self) -> None:
        for name in ("origin_id", "device_uuid", "command_type", "topic"):
            v = getattr(self, name)
            if not isinstance(v, str) or not v or len(v) > 200:
                raise UplinkError(f"fleet command: {name} must be a non-empty string of at most 200 characters, "
                                  f"got {v!r}")
        if self.topic not in COMMAND_TOPICS:
            raise UplinkError(f"fleet command: topic must be one of {', '.join(COMMAND_TOPICS)}, got {self.topic!r}")
        for name in ("timeout", "ttl_s"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))
                                  or not math.isfinite(v) or v <= 0):
                raise UplinkError(f"fleet command: {name} must be a positive number of seconds, got {v!r}")
        m = self.max_attempts
        if m is not None and (isinstance(m, bool) or not isinstance(m, int) or not 1 <= m <= 100):
            raise UplinkError(f"fleet command: max_attempts must be an integer from 1 to 100, got {m!r}")


def encode_command(c: FleetCommand) -> bytes:
    body: dict[str, Any] = {"v": UPLINK_VERSION, "origin_id": c.origin_id, "device_uuid": c.device_uuid,
                            "command_type": c.command_type, "parameters": c.parameters, "topic": c.topic}
    for name in ("timeout", "max_attempts", "ttl_s"):
        if getattr(c, name) is not None:
            body[name] = getattr(c, name)
    return msgpack.packb(body, use_bin_type=True)


def decode_command(payload: bytes) -> FleetCommand:
    """A fleet command, JSON or MessagePack (told apart by the first byte)."""
    body = _unpack_map(payload, "fleet command", json_allowed=True)
    missing = [k for k in ("origin_id", "device_uuid", "command_type") if k not in body]
    if missing:
        raise UplinkError(f"fleet command: missing {', '.join(missing)}")
    return FleetCommand(body["origin_id"], body["device_uuid"], body["command_type"], body.get("parameters"),
                        body.get("topic") or "command", body.get("timeout"), body.get("max_attempts"),
                        body.get("ttl_s"))
