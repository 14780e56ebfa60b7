"""The fleet uplink's wire format (issue 14): batches of committed rows from
a vehicle to the fleet broker, and commands from the fleet to a vehicle.

Pure: no I/O. Up, each MQTT message is one `UplinkBatch` in MessagePack,
published on `{prefix}/{vehicle_id}/{lane}`. A batch names the vehicle, the
vehicle's database (a uuid kept in that database, so a restored or replaced
file is told apart), the table and the first and last row id it carries, so
the fleet side stores each row exactly once by (vehicle, database, table,
row id) however often a batch is redelivered. Down, `FleetCommand`s arrive
on `{prefix}/{vehicle_id}/commands`; `origin_id` is unique per fleet
command, so a redelivery inserts nothing.

Row ids of one table only grow: the vehicle side must never reuse one
(storage keeps them with AUTOINCREMENT or an outbox sequence).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import msgpack

UPLINK_VERSION = 1

# Lanes, in the order the vehicle sends them: what happened to devices and
# commands first, then fresh telemetry, then the backlog (paced).
EVENTS, FRESH, BACKLOG = "events", "fresh", "backlog"
LANES = (EVENTS, FRESH, BACKLOG)
# The tables a batch may carry rows of.
TABLES = ("telemetry", "device_events", "command_outcomes")
COMMANDS = "commands"

MAX_ID = 2**63 - 1  # SQLite's and PostgreSQL's largest integer key


class UplinkError(ValueError):
    """A batch or fleet command that does not follow this format; the
    message names the field and what is wrong with it."""


def _check_level(name: str, value: str) -> str:
    if not isinstance(value, str) or not value or any(c in value for c in "/+#\0"):
        raise UplinkError(f"{name} must be a non-empty topic level without '/', '+' or '#', got {value!r}")
    return value


def _check_prefix(prefix: str) -> str:
    if not isinstance(prefix, str) or not prefix or any(c in prefix for c in "+#\0") \
            or prefix.startswith("/") or prefix.endswith("/"):
        raise UplinkError(f"uplink prefix must be a topic prefix without '+', '#' or a leading or trailing '/', "
                          f"got {prefix!r}")
    return prefix


def lane_topic(prefix: str, vehicle_id: str, lane: str) -> str:
    if lane not in LANES:
        raise UplinkError(f"lane must be one of {', '.join(LANES)}, got {lane!r}")
    return f"{_check_prefix(prefix)}/{_check_level('vehicle id', vehicle_id)}/{lane}"


def commands_topic(prefix: str, vehicle_id: str) -> str:
    return f"{_check_prefix(prefix)}/{_check_level('vehicle id', vehicle_id)}/{COMMANDS}"


def ingest_subscriptions(prefix: str, share_group: str = "fleet") -> list[str]:
    """What a fleet-side ingester subscribes to: every vehicle's lanes,
    shared so several ingesters split the work."""
    _check_level("share group", share_group)
    return [f"$share/{share_group}/{_check_prefix(prefix)}/+/{lane}" for lane in LANES]


def parse_topic(prefix: str, topic: str) -> tuple[str, str]:
    """(vehicle id, lane or "commands") of an uplink topic."""
    head = _check_prefix(prefix) + "/"
    if not topic.startswith(head):
        raise UplinkError(f"topic {topic!r} is not under the uplink prefix {prefix!r}")
    levels = topic[len(head):].split("/")
    if len(levels) != 2 or levels[1] not in (*LANES, COMMANDS):
        raise UplinkError(f"topic {topic!r}: expected {prefix}/VEHICLE/{{{','.join((*LANES, COMMANDS))}}}")
    return _check_level("vehicle id", levels[0]), levels[1]


@dataclass(frozen=True)
class UplinkBatch:
    vehicle_id: str
    database_id: str
    table: str
    first_id: int
    last_id: int
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]  # each starts with its row id, in columns' order
    sent_at: float

    def __post_init__(self) -> None:
        check_batch(self)


def check_batch(b: UplinkBatch) -> None:
    _check_level("vehicle_id", b.vehicle_id)
    if not isinstance(b.database_id, str) or not b.database_id:
        raise UplinkError(f"database_id must be a non-empty string, got {b.database_id!r}")
    if b.table not in TABLES:
        raise UplinkError(f"table must be one of {', '.join(TABLES)}, got {b.table!r}")
    for name in ("first_id", "last_id"):
        v = getattr(b, name)
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_ID:
            raise UplinkError(f"{name} must be an integer row id from 1, got {v!r}")
    if b.first_id > b.last_id:
        raise UplinkError(f"first_id {b.first_id} is past last_id {b.last_id}")
    if not b.columns or b.columns[0] != "id" or len(set(b.columns)) != len(b.columns):
        raise UplinkError(f"columns must start with 'id' and name each column once, got {list(b.columns)!r}")
    if not b.rows:
        raise UplinkError("a batch carries at least one row")
    previous = 0
    for i, row in enumerate(b.rows):
        if len(row) != len(b.columns):
            raise UplinkError(f"row {i} has {len(row)} values for {len(b.columns)} columns")
        rid = row[0]
        if isinstance(rid, bool) or not isinstance(rid, int) or not b.first_id <= rid <= b.last_id or rid <= previous:
            raise UplinkError(f"row {i}: id {rid!r} must increase and lie in {b.first_id}..{b.last_id}")
        previous = rid
    if b.rows[0][0] != b.first_id or b.rows[-1][0] != b.last_id:
        raise UplinkError("first_id and last_id must be the ids of the first and last rows")
    if not isinstance(b.sent_at, (int, float)) or isinstance(b.sent_at, bool) or not math.isfinite(b.sent_at):
        raise UplinkError(f"sent_at must be a finite number of seconds, got {b.sent_at!r}")


def encode_batch(b: UplinkBatch) -> bytes:
    return msgpack.packb({
        "v": UPLINK_VERSION, "vehicle": b.vehicle_id, "db": b.database_id, "table": b.table,
        "first": b.first_id, "last": b.last_id, "columns": list(b.columns), "rows": [list(r) for r in b.rows],
        "sent_at": b.sent_at,
    }, use_bin_type=True)


def _unpack(payload: bytes, what: str) -> dict:
    if not isinstance(payload, (bytes, bytearray)):
        raise UplinkError(f"{what}: payload must be bytes")
    try:
        body = msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several types for bad input
        raise UplinkError(f"{what}: not MessagePack ({type(exc).__name__}: {exc})") from None
    if not isinstance(body, dict):
        raise UplinkError(f"{what}: expected a map, got {type(body).__name__}")
    if body.get("v") != UPLINK_VERSION:
        raise UplinkError(f"{what}: version {body.get('v')!r} is not {UPLINK_VERSION}")
    return body


def decode_batch(payload: bytes) -> UplinkBatch:
    body = _unpack(payload, "uplink batch")
    missing = [k for k in ("vehicle", "db", "table", "first", "last", "columns", "rows", "sent_at") if k not in body]
    if missing:
        raise UplinkError(f"uplink batch: missing {', '.join(missing)}")
    if not isinstance(body["columns"], list) or not isinstance(body["rows"], list) \
            or not all(isinstance(r, list) for r in body["rows"]):
        raise UplinkError("uplink batch: columns and rows must be lists (rows of lists)")
    return UplinkBatch(body["vehicle"], body["db"], body["table"], body["first"], body["last"],
                       tuple(body["columns"]), tuple(tuple(r) for r in body["rows"]), body["sent_at"])


@dataclass(frozen=True)
class FleetCommand:
    """A command for one device of a vehicle, from the fleet side."""

    origin_id: str  # unique per command on the fleet side: a redelivery inserts nothing
    device_uuid: str
    command_type: str
    parameters: Any = None
    topic: str = "command"  # the device-side topic kind, as in the commands table
    ttl_s: float | None = None

    def __post_init__(self) -> None:
        for name in ("origin_id", "device_uuid", "command_type", "topic"):
            v = getattr(self, name)
            if not isinstance(v, str) or not v or len(v) > 200:
                raise UplinkError(f"fleet command: {name} must be a non-empty string of at most 200 characters, "
                                  f"got {v!r}")
        if self.ttl_s is not None and (isinstance(self.ttl_s, bool) or not isinstance(self.ttl_s, (int, float))
                                       or not math.isfinite(self.ttl_s) or self.ttl_s <= 0):
            raise UplinkError(f"fleet command: ttl_s must be a positive number of seconds, got {self.ttl_s!r}")


def encode_command(c: FleetCommand) -> bytes:
    return msgpack.packb({"v": UPLINK_VERSION, "origin_id": c.origin_id, "device_uuid": c.device_uuid,
                          "command_type": c.command_type, "parameters": c.parameters, "topic": c.topic,
                          "ttl_s": c.ttl_s}, use_bin_type=True)


def decode_command(payload: bytes) -> FleetCommand:
    body = _unpack(payload, "fleet command")
    missing = [k for k in ("origin_id", "device_uuid", "command_type") if k not in body]
    if missing:
        raise UplinkError(f"fleet command: missing {', '.join(missing)}")
    return FleetCommand(body["origin_id"], body["device_uuid"], body["command_type"], body.get("parameters"),
                        body.get("topic", "command"), body.get("ttl_s"))
