"""The internal values the wire protocol is decoded into.

Both dialects (v1 and firmware 2.2) map their topics and payloads onto these
same values, so nothing above `protocol/` needs to know which dialect a
message came in. Every value is a frozen dataclass; collections are tuples.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple

# The enums are StrEnums: a member is its text wherever text is written (a
# database column, JSON, an f-string), and compares equal to it. Between
# the processes they travel as themselves (actors/wire.py).


class Dialect(StrEnum):
    V1 = "v1"
    FW22 = "fw22"


class Encoding(StrEnum):
    JSON = "json"
    MSGPACK = "msgpack"


class Kind(StrEnum):
    """What a topic carries."""

    # v1, device -> gateway
    ANNOUNCE = "announce"
    STATUS = "status"
    TELEMETRY = "telemetry"
    RELAY_STATUS = "relay_status"
    RESPONSE = "response"
    DISCOVERY = "discovery"
    # v1, gateway -> devices
    COMMAND = "command"
    RELAY_COMMAND = "relay_command"
    AVAILABILITY = "availability"
    GATEWAY_STATUS = "gateway_status"
    BROADCAST = "broadcast"
    # firmware 2.2, device -> gateway
    FW22_STATUS = "fw22_status"  # the combined status (online report or Last Will)
    FW22_RELAYS_STATE = "fw22_relays_state"
    FW22_LEVEL = "fw22_level"  # status/operational, telemetry/data, diagnostics, ...
    FW22_RELAY_EVENTS = "fw22_relay_events"  # autocore/telemetry/relays/data
    FW22_ERROR = "fw22_error"  # autocore/errors/{uuid}/{type}
    FW22_RELAY_SET = "fw22_relay_set"  # autocore/devices/{uuid}/relays/set, observed (others' commands)


class Rejected(Exception):
    """An inbound message the gateway refuses.

    `reason` is a short stable code used as a counter key (`bad_uuid`,
    `too_large`, `schema`, ...); `detail` is a sentence a person can act on
    (`telemetry.gps.latitude: expected number, got "abc"`).
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


# A device's `status` in gateway_devices (PROTOCOL.md), as liveness
# (actors/rules/liveness.py) writes it and the CLI filters on it.
ONLINE = "online"
OFFLINE = "offline"
DISCOVERED = "discovered"
DEVICE_STATUSES = (ONLINE, OFFLINE, DISCOVERED)

# Stable rejection reasons (counter keys).
BAD_TOPIC = "bad_topic"
BAD_UUID = "bad_uuid"
TOO_LARGE = "too_large"
BAD_ENCODING = "bad_encoding"
SCHEMA = "schema"
UUID_MISMATCH = "uuid_mismatch"
EMPTY = "empty"
BAD_PROTOCOL_VERSION = "bad_protocol_version"
RATE_LIMITED = "rate_limited"


@dataclass(frozen=True)
class Topic:
    """A parsed topic. `level` is the sub-level of a 2.2 level topic
    (`operational`, `telemetry/data`, ...) or the error type of a 2.2 error."""

    kind: Kind
    uuid: str | None
    dialect: Dialect
    level: str = ""


@dataclass(frozen=True, slots=True)
class Reading:
    """One telemetry row before identity and time are attached.
    `ts` is the reading's own device time (epoch seconds) where it has one."""

    source: str
    metric: str
    value: float | None
    unit: str | None = None
    tag: str | None = None
    raw: bytes | None = None
    ts: float | None = None


class TelemetryRow(NamedTuple):
    """One stored reading, as core builds it from a message and the store
    inserts it; the fields are the telemetry table's columns, in order.

    A NamedTuple, not a dataclass: it is the hot path, and a tuple goes to
    `executemany` and COPY as it is and crosses between the processes as a
    plain msgpack array. Built in bulk with `new_row` (a third of the cost
    of calling the class)."""

    device_uuid: str
    boot_id: int | None
    seq: int | None
    idx: int | None
    ts: float
    received_at: float
    source: str
    metric: str
    value: float | None
    unit: str | None
    tag: str | None
    raw: bytes | None


def new_row(values: tuple) -> TelemetryRow:
    """A TelemetryRow of a tuple already in its field order, without the
    generated `__new__`'s argument handling."""
    return _tuple_new(TelemetryRow, values)


_tuple_new = tuple.__new__


@dataclass(frozen=True)
class DeviceFacts:
    """What a device says about itself (v1 announce, 2.2 online status)."""

    device_type: str | None = None
    firmware_version: str | None = None
    capabilities: Any = ()  # a tuple of words (v1) or a mapping kept as given (2.2)
    ip_address: str | None = None
    mac_address: str | None = None
    relay_count: int | None = None
    hardware_revision: str | None = None
    serial_number: str | None = None
    name: str | None = None
    boot_id: int | None = None
    status_interval: float | None = None


@dataclass(frozen=True)
class Availability:
    online: bool
    boot_id: int | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Response:
    """A device's answer to a command. `outcome` is `accepted` (not final),
    `succeeded` or `failed`."""

    command_id: str
    outcome: str
    result: Any = None
    error_message: str | None = None
    execution_time: float | None = None


@dataclass(frozen=True)
class Discovery:
    discovery_type: str | None = None
    ip_address: str | None = None
    mac_address: str | None = None
    device_type: str | None = None
    signal_strength: float | None = None


@dataclass(frozen=True)
class Event:
    """A `device_events` row the message asks for (2.2 `error`,
    `safety_shutoff`, `relay_change`). `channel` is the relay channel the
    event is about, where it names one."""

    event: str
    detail: Any = None
    channel: int | None = None


@dataclass(frozen=True)
class ObservedCommand:
    """A relay command another client (the Config App's UI, a display)
    published on a 2.2 board's `relays/set`: recorded, never acted on.

    `channel` is a channel number or "all"; `command` the word as sent (None
    when the payload had only `state`, as the Config App's UI sends it);
    `state` the state it asks for (None for a toggle, or for a word the relay
    does not know). The other fields are the payload's, where it gave text."""

    channel: int | str
    command: str | None = None
    state: bool | None = None
    function_type: str | None = None
    user: str | None = None
    source: str | None = None
    command_id: str | None = None

    @property
    def toggle(self) -> bool:
        return self.command == "toggle"

    def detail(self) -> dict[str, Any]:
        """The `relay_command` event's detail."""
        return {
            "channel": self.channel,
            "command": self.command,
            "state": self.state,
            "function_type": self.function_type,
            "user": self.user,
            "source": self.source,
            "command_id": self.command_id,
        }


@dataclass(frozen=True, slots=True)
class RelayState:
    relay_id: int
    state: bool


@dataclass(frozen=True)
class Message:
    """One valid inbound message, whatever its dialect.

    `device_ts` is the device's own time for the message (epoch seconds) or
    None; `trust_clock` is False where the dialect's clocks are never trusted
    (2.2: every row takes `received_at`). `alive` says whether the message is
    a sign of life of `uuid`.
    """

    uuid: str
    dialect: Dialect
    kind: Kind
    encoding: Encoding = Encoding.JSON
    protocol_version: str | None = None
    device_ts: float | None = None
    trust_clock: bool = True
    alive: bool = True
    boot_id: int | None = None
    seq: int | None = None
    facts: DeviceFacts | None = None
    availability: Availability | None = None
    readings: tuple[Reading, ...] = ()
    relay_states: tuple[RelayState, ...] = ()
    response: Response | None = None
    discovery: Discovery | None = None
    events: tuple[Event, ...] = field(default=())
    observed: ObservedCommand | None = None  # a relay command someone else sent the device


@dataclass(frozen=True)
class Publication:
    """Something the gateway publishes."""

    topic: str
    payload: bytes
    qos: int
    retain: bool = False


@dataclass(frozen=True)
class CommandSpec:
    """A row of the `commands` table, as the device logic needs it."""

    id: int
    device_uuid: str
    command_type: str
    parameters: Any
    topic: str = "command"  # "command" or "relay/command"
    timeout: float = 5.0
    max_attempts: int = 3
    created_at: float = 0.0
    expires_at: float = 0.0
