"""Router: topic parsing, decoding, validation, rate limits, and routing.

One `InboundBatch` in, at most three messages out: the batch's telemetry rows
to the store (the fast path), one `Route` to the DeviceSupervisor with what
each device saw, and one `Complete` to MqttIO for the messages that need
nothing stored (rejected, rate-limited, or empty of data).
"""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from typing import Any

from actors.base import GatewayActor
from actors.messages import (
    Complete,
    DeviceMessage,
    DialectLock,
    DialectMark,
    InboundBatch,
    KnownDevice,
    Route,
    Seen,
    TelemetryRows,
)
from actors.rules.rate import RateLimiter
from protocol.decode import decode_message, parse_topic
from protocol.timestamps import effective_ts
from protocol.values import RATE_LIMITED, Dialect, Message, Rejected

logger = logging.getLogger("autocore.router")

REJECTION_LOG_INTERVAL_S = 1.0
INTERNAL_ERROR = "internal_error"  # the decoder failed where it should have rejected
UNSTORABLE_VALUE = "unstorable_value"  # valid by the schema, but cannot be encoded for the store
# What the channel's msgpack encoding raises for a value it cannot carry (it
# raises before writing a byte, so sending again in smaller pieces is safe).
UNSENDABLE = (TypeError, ValueError, OverflowError)
_UUID_LEVEL_AFTER = ("devices", "discovery", "errors")


def guess_uuid(topic: str) -> str:
    """The uuid level of a rejected topic, for per-device counts ('?' if none)."""
    parts = topic.split("/")
    for i, part in enumerate(parts[:-1]):
        if part in _UUID_LEVEL_AFTER:
            return parts[i + 1][:64] or "?"
    return "?"


class _SeenAcc:
    __slots__ = ("received_at", "count", "dialect", "encoding", "protocol_version", "seqs", "relay_states", "clock_skew")

    def __init__(self) -> None:
        self.received_at = 0.0
        self.count = 0
        self.dialect = ""  # each set from the batch's messages before seen() is called
        self.encoding = ""
        self.protocol_version: str | None = None
        self.seqs: list[tuple[int | None, int]] = []
        self.relay_states: list = []
        self.clock_skew = 0

    def seen(self) -> Seen:
        return Seen(self.received_at, self.count, self.dialect, self.encoding, self.protocol_version,
                    tuple(self.seqs), tuple(self.relay_states), self.clock_skew)


def needs_device(msg: Message) -> bool:
    """Messages that change device state go through the device's actor."""
    return bool(msg.facts or msg.availability or msg.response or msg.discovery or msg.events or msg.observed)


def v1_boot_id(msg: Message) -> int | None:
    """The boot_id a v1 message carries (top level, announce, availability)."""
    if msg.dialect is not Dialect.V1:
        return None
    if msg.boot_id is not None:
        return msg.boot_id
    if msg.facts is not None and msg.facts.boot_id is not None:
        return msg.facts.boot_id
    return msg.availability.boot_id if msg.availability is not None else None


def telemetry_rows(msg: Message, received_at: float, skew_s: float) -> tuple[list[tuple], int]:
    """The message's readings as rows (storage.telemetry.TELEMETRY_COLUMNS
    order) and how many of their times were overruled."""
    rows = []
    skewed = 0
    for idx, r in enumerate(msg.readings):
        if msg.trust_clock:
            ts, bad = effective_ts(r.ts if r.ts is not None else msg.device_ts, received_at, skew_s)
            skewed += bad
        else:
            ts = received_at
        rows.append((msg.uuid, msg.boot_id, msg.seq, idx, ts, received_at, r.source, r.metric, r.value, r.unit, r.tag, r.raw))
    return rows, (1 if skewed else 0)


class Router(GatewayActor):
    name = "Router"

    def __init__(self, settings: Any, mqtt: Any, supervisor: Any, store: Any) -> None:
        super().__init__()
        self.prefix = settings.topic_prefix
        self.max_payload = settings.max_payload
        self.skew_s = settings.clock_skew_s
        self.mqtt = mqtt
        self.supervisor = supervisor
        self.store = store  # has .send(message): the link to the store process (actors/channel.py StoreLink)
        self.limiter = RateLimiter(settings.device_rate, settings.device_burst)
        self.rejections: Counter[str] = Counter()
        self.rejections_by_device: dict[str, Counter[str]] = defaultdict(Counter)
        self._last_log: dict[str, float] = {}
        self.batch_sizes: Counter[str] = Counter()
        # Devices whose 2.2 messages go through their actor, never the fast
        # path: a v1 device with a boot_id refuses them (actors/rules/device.py),
        # and only its actor knows for sure; a refused message must have
        # nothing stored. A superset of the locked devices: every v1 device
        # with a boot_id the database knew at start, every uuid a v1 message
        # with a boot_id was routed for since (before its actor sees it), and
        # the operator's `dialect v1`; left only by the operator's `dialect
        # fw22` or `forget`, after the actor took it. Grows with the v1
        # devices, as the supervisor's records do. uuid -> the batch that
        # last locked it.
        self.v1_boot: dict[str, int] = {}

    def load(self, devices: tuple[KnownDevice, ...]) -> None:
        """Start-up: what the database knows."""
        for d in devices:
            if d.protocol == Dialect.V1.value and d.boot_id is not None:
                self.v1_boot[d.uuid] = 0

    def handle(self, message: Any) -> Any:
        if isinstance(message, InboundBatch):
            self._route(message)
            return None
        if isinstance(message, DialectMark):
            return self.counters["batches"]
        if isinstance(message, DialectLock):
            return self._dialect_lock(message)
        return super().handle(message)

    def _dialect_lock(self, message: DialectLock) -> bool:
        """The operator's change; True if the device's 2.2 messages go
        through its actor afterwards."""
        if message.locked:
            self.v1_boot[message.uuid] = self.counters["batches"]
        elif message.uuid in self.v1_boot:
            if message.after is None or self.v1_boot[message.uuid] <= message.after:
                del self.v1_boot[message.uuid]
        return message.uuid in self.v1_boot

    def _route(self, batch: InboundBatch) -> None:
        rows: list[tuple] = []
        row_tokens = []
        by_message: list[tuple[str, str, list[tuple], Any]] = []  # (uuid, topic, rows, token)
        done_now = []
        seen: dict[str, _SeenAcc] = {}
        device_msgs: dict[str, list[DeviceMessage]] = defaultdict(list)
        observed: set[str] = set()  # devices with an observed relay command in this batch
        self.counters["batches"] += 1
        self.counters["messages"] += len(batch.messages)
        for raw in batch.messages:
            # The rate decision from the topic alone, before a byte of the
            # payload is parsed: a flooding device's excess costs a topic
            # split and a bucket lookup, not a decode (issue 11). A topic that
            # does not parse is left to decode_message, which says why.
            try:
                parsed = parse_topic(raw.topic, self.prefix)
            except Exception:
                parsed = None
            if parsed is not None and parsed.uuid is not None and not self.limiter.allow(parsed.uuid, raw.received_at):
                self._reject(parsed.uuid, Rejected(RATE_LIMITED, f"over {self.limiter.rate:g} messages/s"), raw.topic)
                done_now.append(raw.token)
                continue
            try:
                msg = decode_message(raw.topic, raw.payload, prefix=self.prefix, max_payload=self.max_payload,
                                     parsed=parsed)
            except Rejected as rej:
                self._reject(guess_uuid(raw.topic), rej, raw.topic)
                done_now.append(raw.token)
                continue
            except Exception as exc:  # a bug in protocol/: it must not stop the Router for every device
                self._reject(guess_uuid(raw.topic), Rejected(INTERNAL_ERROR, f"{type(exc).__name__}: {exc}"), raw.topic)
                done_now.append(raw.token)
                continue
            if (parsed is None or parsed.uuid is None) and not self.limiter.allow(msg.uuid, raw.received_at):
                # uuid in the payload only (2.2 telemetry/relays/data)
                self._reject(msg.uuid, Rejected(RATE_LIMITED, f"over {self.limiter.rate:g} messages/s"), raw.topic)
                done_now.append(raw.token)
                continue
            msg_rows, skewed = telemetry_rows(msg, raw.received_at, self.skew_s) if msg.readings else ([], 0)
            if msg.observed is not None:
                observed.add(msg.uuid)
            if v1_boot_id(msg) is not None:
                self.v1_boot[msg.uuid] = self.counters["batches"]
            checked = msg.dialect is Dialect.FW22 and msg.uuid in self.v1_boot
            if checked:
                self.counters["dialect_checked"] += 1
            # A relay state report after an observed relay command of the same
            # batch goes in order with it (the fast path's summary reaches the
            # device before the batch's messages): it may be the board's answer.
            # A 2.2 message for a device that may be a v1 device with a boot_id
            # goes to its actor with its rows, which refuses it or stores them.
            if needs_device(msg) or (msg.relay_states and msg.uuid in observed) or checked:
                device_msgs[msg.uuid].append(DeviceMessage(
                    raw.received_at, msg.dialect.value, msg.encoding.value, msg.protocol_version, msg.kind.value,
                    raw.token, msg.alive, msg.boot_id, msg.seq, msg.facts, msg.availability, msg.response,
                    msg.discovery, msg.events, msg.relay_states, tuple(msg_rows), skewed, msg.observed,
                ))
                continue
            acc = seen.get(msg.uuid)
            if acc is None:
                acc = seen[msg.uuid] = _SeenAcc()
            acc.received_at = raw.received_at
            acc.count += 1
            acc.dialect, acc.encoding, acc.protocol_version = msg.dialect.value, msg.encoding.value, msg.protocol_version
            if msg.seq is not None:
                acc.seqs.append((msg.boot_id, msg.seq))
            acc.relay_states.extend(msg.relay_states)
            acc.clock_skew += skewed
            if msg_rows:
                rows.extend(msg_rows)
                row_tokens.append(raw.token)
                by_message.append((msg.uuid, raw.topic, msg_rows, raw.token))
            else:
                done_now.append(raw.token)
        if rows:
            try:
                self.store.send(TelemetryRows(tuple(rows), tuple(row_tokens)))
                self.counters["rows"] += len(rows)
            except UNSENDABLE:
                # A value that cannot cross to the store (an integer past 64
                # bits) used to kill the Router, and with it every device's
                # traffic. Send message by message; reject what cannot go.
                self._send_one_by_one(by_message, done_now)
        if seen or device_msgs:
            self.supervisor.tell(Route(
                tuple((uuid, acc.seen()) for uuid, acc in seen.items()),
                tuple((uuid, tuple(msgs)) for uuid, msgs in device_msgs.items()),
            ))
        if done_now:
            self.mqtt.tell(Complete(tuple(done_now)))
        size = len(batch.messages)
        self.batch_sizes["1" if size == 1 else "2-99" if size < 100 else "100+"] += 1

    def _send_one_by_one(self, by_message: list, done_now: list) -> None:
        for uuid, topic, msg_rows, token in by_message:
            try:
                self.store.send(TelemetryRows(tuple(msg_rows), (token,)))
                self.counters["rows"] += len(msg_rows)
            except UNSENDABLE as exc:
                self._reject(uuid, Rejected(UNSTORABLE_VALUE, f"{type(exc).__name__}: {exc}"), topic)
                done_now.append(token)

    def _reject(self, uuid: str, rej: Rejected, topic: str) -> None:
        self.rejections[rej.reason] += 1
        per_device = self.rejections_by_device[uuid]
        per_device[rej.reason] += 1
        if len(self.rejections_by_device) > 20000:  # bound the map; oldest entries go first
            self.rejections_by_device.pop(next(iter(self.rejections_by_device)))
        now = time.monotonic()
        if now - self._last_log.get(uuid, -REJECTION_LOG_INTERVAL_S) >= REJECTION_LOG_INTERVAL_S:
            self._last_log[uuid] = now
            if len(self._last_log) > 20000:
                self._last_log.pop(next(iter(self._last_log)))
            logger.warning("rejected a message on %s (device %s): %s: %s", topic[:200], uuid, rej.reason, rej.detail[:300])

    def summary(self) -> str:
        return f"{sum(self.rejections.values())} rejected, {len(self.limiter)} rate buckets"

    def state(self) -> dict:
        return {
            "rejections": dict(self.rejections),
            "rate_limit": {"rate": self.limiter.rate, "burst": self.limiter.burst, "buckets": len(self.limiter)},
            "batch_sizes": dict(self.batch_sizes),
            "v1_boot_devices": len(self.v1_boot),
        }

    def device_rejections(self, uuid: str) -> dict:
        return dict(self.rejections_by_device.get(uuid, {}))
