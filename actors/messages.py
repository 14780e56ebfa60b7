"""Every message the actors exchange, as frozen dataclasses.

Messages that cross between the core and the store process are registered
with `actors.wire` (the `@wire` decorator) and encoded with msgpack; inside a
process they are passed as they are. Nothing is shared by reference: fields
are immutable (tuples, not lists).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from actors.wire import wire
from protocol.lifecycle import CommandStatus
from protocol.values import (
    CommandSpec,
    DeviceFacts,
    Dialect,
    Discovery,
    Encoding,
    Message,
    Publication,
    RelayState,
    TelemetryRow,
)

# ---------------------------------------------------------------- tokens


@wire
@dataclass(frozen=True, slots=True)
class Token:
    """One received MQTT message that must be completed once its effects are
    committed: `qos` 1 is acknowledged to the broker, `qos` 0 only frees its
    place in the inbound pipeline. `generation` is the MQTT connection it came
    on: an ack for an older connection is dropped (the broker redelivers)."""

    generation: int
    mid: int
    qos: int


# ---------------------------------------------------------------- core, inbound path


@dataclass(frozen=True, slots=True)
class RawInbound:
    topic: str
    payload: bytes
    qos: int
    received_at: float
    token: Token


@dataclass(frozen=True)
class InboundBatch:
    """MqttIO -> Router: every message read in one pass over the socket."""

    messages: tuple[RawInbound, ...]


@dataclass(frozen=True)
class Seen:
    """Router -> Device: what the fast telemetry path saw of one device in one
    batch (no token: the rows travel to the store with theirs)."""

    received_at: float  # the latest message's
    count: int
    dialect: Dialect
    encoding: Encoding
    protocol_version: str | None
    seqs: tuple[tuple[int | None, int], ...] = ()  # (boot_id, seq) in arrival order
    relay_states: tuple[RelayState, ...] = ()
    clock_skew: int = 0


@dataclass(frozen=True, slots=True)
class DeviceMessage:
    """Router -> Device: one decoded message that changes device state
    (announce, availability, response, discovery, events), as protocol/
    decoded it, with when it came and its token. Its readings, if any, are
    already rows, stored in the same transaction as the state change."""

    message: Message
    received_at: float
    token: Token
    rows: tuple[TelemetryRow, ...] = ()
    clock_skew: int = 0  # 1 if the time of any of its readings was overruled


@dataclass(frozen=True)
class Deadline:
    """Scheduler -> owner: a time the owner asked to be woken at has come."""

    key: Any
    at: float


@dataclass(frozen=True)
class Publish:
    """-> MqttIO. `command` publications leave ahead of everything else."""

    publication: Publication
    command: bool = False


@dataclass(frozen=True)
class Complete:
    """-> MqttIO: these messages are done (committed, or nothing to store)."""

    tokens: tuple[Token, ...]


# ---------------------------------------------------------------- core <-> store


@wire
@dataclass(frozen=True)
class CommandTransition:
    """Move command `command_id` to `status` (refused by the store if the
    lifecycle does not allow it)."""

    command_id: int
    status: CommandStatus
    attempts: int | None = None
    result: Any = None
    error_message: str | None = None


@wire
@dataclass(frozen=True)
class CommandState:
    """A command as the device logic holds it."""

    spec: CommandSpec
    status: str
    attempts: int = 0
    sent_at: float | None = None


@wire
@dataclass(frozen=True)
class KnownDevice:
    """What the database knows of a device, handed to core at start-up."""

    uuid: str
    status: str
    device_type: str | None = None
    boot_id: int | None = None
    status_interval: float | None = None
    protocol: Dialect = Dialect.V1
    encoding: Encoding = Encoding.JSON
    last_seen: float | None = None


@wire
@dataclass(frozen=True)
class TelemetryRows:
    """core -> store: telemetry rows with the tokens of the messages they came from."""

    rows: tuple[TelemetryRow, ...]
    tokens: tuple[Token, ...]


@wire
@dataclass(frozen=True)
class DeviceWrite:
    """core -> store: one device's state changes, written in one transaction
    with whatever telemetry is batched beside them. The device logic
    (actors/rules/device.py) builds it; the store applies it as it comes."""

    uuid: str
    at: float
    ensure: Dialect | None = None  # create the device row (of this dialect) if missing
    facts: DeviceFacts | None = None
    discovery: Discovery | None = None
    status: str | None = None
    boot_id: int | None = None
    protocol: Dialect | None = None
    encoding: Encoding | None = None
    last_seen: float | None = None
    events: tuple[tuple[float, str, Any], ...] = ()  # (ts, event, detail)
    transitions: tuple[CommandTransition, ...] = ()
    rows: tuple[TelemetryRow, ...] = ()
    tokens: tuple[Token, ...] = ()
    # Several instances: the lease epoch of the device's bucket it was
    # decided under (None: one instance, nothing to fence). The store
    # applies its state changes and transitions only while that lease holds.
    epoch: int | None = None
    # (command id, publication): a command's sends, published by core once
    # this write (its `sent`) is durable, and only if the store took the
    # command's transition (Committed.publish); command id None: the
    # device's retained availability, published once its status is durable.
    publish: tuple[tuple[int | None, Publication], ...] = ()

    def changes_anything(self) -> bool:
        """Whether the device's state changes (rows aside)."""
        return bool(
            self.ensure or self.facts or self.discovery or self.status or self.protocol or self.encoding
            or self.last_seen is not None or self.events or self.transitions or self.boot_id is not None
        )

    def stores_anything(self) -> bool:
        return bool(self.rows) or self.changes_anything()


@wire
@dataclass(frozen=True)
class Committed:
    """store -> core: these tokens' effects are on disk, durably (a power
    cut keeps them: actors/syncer.py). `publish`: command publications
    whose `sent` state is now as durable (and availabilities whose status
    is), to go out now: before, a power cut could have taken the state
    back and the device got the command twice."""

    tokens: tuple[Token, ...]
    publish: tuple[Publication, ...] = ()


@dataclass(frozen=True)
class WhenDurable:
    """store actor -> Syncer: deliver `messages` once everything committed
    before this was sent is durable: to core when `reply_to` is None, else
    told to that actor. `urgent`: sync now (a command waits on it)."""

    messages: tuple[Any, ...]
    reply_to: Any = None
    urgent: bool = False


@wire
@dataclass(frozen=True)
class StoreHealth:
    """store -> core: whether the database can be written. `state` is "ok"
    or "disk_full" (actors/rules/stall.py); sent when it changes."""

    state: str
    reason: str = ""
    since: float | None = None
    free_bytes: int | None = None


@wire
@dataclass(frozen=True)
class TransitionRefused:
    """store -> core: a command transition the database refused (the Config
    App changed the row, or it was already final)."""

    device_uuid: str
    command_id: int
    wanted: str
    actual: str | None


@wire
@dataclass(frozen=True)
class CommandsRequested:
    """store -> core: commands to take up (new `pending` rows, now `queued`,
    or rows in flight at start-up)."""

    commands: tuple[CommandState, ...]


@wire
@dataclass(frozen=True)
class CancelsRequested:
    """store -> core: rows the Config App set to `cancel_requested`."""

    commands: tuple[tuple[str, int], ...]  # (device uuid, command id)


@wire
@dataclass(frozen=True)
class StoreReady:
    """store -> core: the database is open and migrated; what it knows."""

    pid: int
    devices: tuple[KnownDevice, ...] = ()
    commands: tuple[CommandState, ...] = ()


@wire
@dataclass(frozen=True)
class Flush:
    """core -> store: write everything buffered now, then answer `Flushed`."""

    reason: str = "shutdown"


@wire
@dataclass(frozen=True)
class Flushed:
    reason: str = "shutdown"


@wire
@dataclass(frozen=True)
class SnapshotRequest:
    """core -> store: the store actors' snapshots, for the Inspector."""

    request_id: int


@wire
@dataclass(frozen=True)
class SnapshotReply:
    request_id: int
    actors: tuple[Any, ...] = ()


@wire
@dataclass(frozen=True)
class Stop:
    """core -> store: shut down (after the last Flush)."""

    reason: str = "shutdown"


# ---------------------------------------------------------------- inside the store process


@dataclass(frozen=True)
class WriteBatch:
    """TelemetryBatcher -> DbWriter. CAN signal rows (actors/rules/can_rows.py)
    are plain tuples in TelemetryRow's order, made by generated code."""

    rows: tuple[TelemetryRow | tuple, ...]
    writes: tuple[DeviceWrite, ...]
    tokens: tuple[Any, ...]


@dataclass(frozen=True)
class WriterDone:
    """DbWriter -> TelemetryBatcher: a batch is committed (or given up)."""

    rows: int


@dataclass(frozen=True)
class ClaimCommands:
    """CommandFeed -> DbWriter: take these pending rows (pending -> queued)."""

    ids: tuple[int, ...]
    feed: Any = None  # told ClaimDeferred when the claim could not be written now
    # Several instances: (id, bucket, epoch) of each id; a row is claimed
    # only while this instance holds its device's bucket at that epoch.
    fences: tuple[tuple[int, int, int], ...] | None = None


@dataclass(frozen=True)
class ClaimDeferred:
    """DbWriter -> CommandFeed: a claim was rolled back (database busy or
    full); look again on the next poll, whatever the change signal says
    (on PostgreSQL a rolled-back claim sends no NOTIFY)."""


# ---------------------------------------------------------------- in-process control


@dataclass(frozen=True)
class Schedule:
    """-> Scheduler: tell `target` Deadline(key) at `at` (replaces the key's earlier time)."""

    key: Any
    at: float
    target: Any  # pykka.ActorRef


@dataclass(frozen=True)
class GetSnapshot:
    """-> any actor (asked by the Inspector and tests): its snapshot dict."""


@dataclass(frozen=True)
class Route:
    """Router -> DeviceSupervisor: one batch's work for the device actors."""

    seen: tuple[tuple[str, Seen], ...] = ()
    messages: tuple[tuple[str, tuple[DeviceMessage, ...]], ...] = ()


@dataclass(frozen=True)
class DeviceInput:
    """DeviceSupervisor -> Device: one batch's work for this device."""

    seen: Seen | None = None
    messages: tuple[DeviceMessage, ...] = ()


@dataclass(frozen=True)
class TakeCommands:
    commands: tuple[CommandState, ...]


@dataclass(frozen=True)
class CancelCommand:
    command_id: int


@dataclass(frozen=True)
class DeviceStatus:
    """Device -> DeviceSupervisor: its liveness verdict changed."""

    uuid: str
    known: KnownDevice
    idle: bool


@dataclass(frozen=True)
class DeviceFailed:
    """Device -> DeviceSupervisor: handling a message raised; here is the
    work of that message it had not started and the tokens of the message
    that crashed it. The actor stays up, handing back whatever else reaches
    it (`Bounced`), until the supervisor's `Drain` comes through."""

    uuid: str
    unhandled: tuple[Any, ...]
    poison_tokens: tuple[Token, ...]
    error: str


@dataclass(frozen=True)
class Drain:
    """DeviceSupervisor -> a failed Device: the last message the supervisor
    sends it; everything sent before is already handed back when the
    actor answers `Drained` (one mailbox keeps the order)."""


@dataclass(frozen=True)
class Bounced:
    """A failed Device -> DeviceSupervisor: a message it received after it
    failed, not handled, for the actor that replaces it."""

    uuid: str
    message: Any


@dataclass(frozen=True)
class Drained:
    """A failed Device -> DeviceSupervisor: everything is handed back; it stops."""

    uuid: str


@dataclass(frozen=True)
class Retire:
    """DeviceSupervisor -> Device: stop if you hold nothing (cache eviction)."""


@dataclass(frozen=True)
class Retired:
    uuid: str
    known: KnownDevice
    stopped: bool


@dataclass(frozen=True)
class Connected:
    """MqttIO's network thread -> MqttIO: a (re)connection is up."""

    generation: int


@dataclass(frozen=True)
class StopReading:
    """-> MqttIO: stop reading the socket (graceful stop)."""


@wire
@dataclass(frozen=True)
class ReloadCommands:
    """core -> store: send the in-flight commands of this device again (its
    actor was restarted)."""

    device_uuid: str


@dataclass(frozen=True)
class OnlineCount:
    """DeviceSupervisor -> Heartbeat: how many devices are online."""

    devices_online: int


# ---------------------------------------------------------------- operator changes (control socket)


@dataclass(frozen=True)
class SetDialect:
    """Inspector -> DeviceSupervisor, then -> Device: the operator set the
    device's dialect (`gateway devices dialect UUID v1|fw22`). The database
    is the CLI's to write; this changes only what the running core holds."""

    uuid: str
    dialect: str


@dataclass(frozen=True)
class ForgetDevice:
    """Inspector -> DeviceSupervisor, then -> Device: the operator removed the
    device from the registry (`gateway devices forget UUID`). Its actor
    starts afresh, as for a uuid never seen; the supervisor drops what it
    kept of it once the actor says `Forgotten`."""

    uuid: str


@dataclass(frozen=True)
class Forgotten:
    """Device -> DeviceSupervisor: the actor has dropped its state (every
    DeviceStatus it sent before is already in the supervisor's mailbox)."""

    uuid: str


@dataclass(frozen=True)
class DialectMark:
    """Inspector -> Router (asked): the number of batches routed so far, the
    mark an unlock (`DialectLock(locked=False, after=mark)`) is judged by."""


@dataclass(frozen=True)
class DialectLock:
    """Inspector -> Router (asked): whether the device's 2.2 messages must go
    through its actor (a v1 device with a boot_id refuses them there).
    `locked=False` is ignored if the Router routed a v1 message with a
    boot_id for the device after batch `after`: that message locks it again."""

    uuid: str
    locked: bool
    after: int | None = None


# ---------------------------------------------------------------- several instances (issue 13)


@wire
@dataclass(frozen=True)
class Owned:
    """store (LeaseKeeper) -> core: the buckets this instance may act for,
    each with the epoch of its lease, until `act_until` (a margin before the
    leases run out; the next round's message moves it). Sent every round
    while anything is held, and whenever the holding changes. `devices` and
    `commands` are what the database has of the buckets gained since the
    last message (loaded as at start); `seen` is the latest sign of life of
    owned devices that other instances received ((uuid, last_seen))."""

    instance_id: str
    epochs: tuple[tuple[int, int], ...]  # (bucket, epoch)
    act_until: float
    buckets: int
    lease_s: float
    expires_at: float | None = None
    lost: int = 0
    gained: tuple[int, ...] = ()
    devices: tuple[KnownDevice, ...] = ()
    commands: tuple[CommandState, ...] = ()
    seen: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class FeedOwnership:
    """LeaseKeeper -> CommandFeed (store): the buckets held now, with their
    epochs; pending commands are claimed for those devices only."""

    epochs: tuple[tuple[int, int], ...]
    gained: bool = False  # look at pending commands again: some may be ours now


@dataclass(frozen=True)
class SeenElsewhere:
    """DeviceSupervisor -> Device: another instance received a message of
    this device at `at` (its telemetry went to that instance's share)."""

    at: float
# -- the fleet uplink (issue 14): inside the store process, never on the wire --


@dataclass(frozen=True)
class UplinkLinkUp:
    """paho's thread -> Uplink: the fleet broker accepted the connection."""

    receive_maximum: int  # the broker's, from CONNACK (65535 when it names none)
    session_present: bool


@dataclass(frozen=True)
class UplinkLinkDown:
    """paho's thread -> Uplink: the connection is gone (or never came)."""

    reason: str
    retry_in_s: float


@dataclass(frozen=True)
class UplinkPuback:
    """paho's thread -> Uplink: the fleet broker answered publish `mid`."""

    mid: int
    failed: bool = False
    reason: str = ""


@dataclass(frozen=True)
class FleetCommandIn:
    """paho's thread -> Uplink: a command from the fleet, acknowledged only
    once it is committed."""

    mid: int
    qos: int
    payload: bytes


@dataclass(frozen=True)
class FleetCommandStored:
    """Syncer -> Uplink: `command`'s row is durable; acknowledge it if the
    connection it came on (`connection`, a count of connects) is still up."""

    command: FleetCommandIn
    connection: int


@dataclass(frozen=True)
class DurableHeads:
    """Syncer -> Uplink: the newest ids it read, now durable: what may be sent."""

    newest: tuple[tuple[str, int], ...]  # (lane, newest id)
