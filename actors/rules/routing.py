"""What the Router decides, as a pure rule: for a batch of inbound messages,
which are refused (rate-limited before a byte of payload is parsed, or
invalid), which rows go to the store on the fast path, what each device's
actor is told, and which messages need nothing stored. No I/O, no threads:
the time is each message's `received_at`.

The Router actor feeds batches in and sends what comes out
(`RoutedBatch`): the rows to the store, one `Route` to the supervisor, one
`Complete` to MqttIO, and a log line for what was refused.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from actors.messages import DeviceMessage, KnownDevice, RawInbound, Seen, Token
from actors.rules.rate import RateLimiter
from protocol.decode import decode_message, parse_topic
from protocol.timestamps import effective_ts
from protocol import dialects
from protocol.values import RATE_LIMITED, Dialect, Encoding, Kind, Message, RelayState, Rejected, TelemetryRow, new_row

INTERNAL_ERROR = "internal_error"  # the decoder failed where it should have rejected
UNSTORABLE_VALUE = "unstorable_value"  # valid by the schema, but cannot be encoded for the store
MAX_DEVICES_COUNTED = 20000  # per-device rejection counts kept at most (oldest go first)
_UUID_LEVEL_AFTER = ("devices", "discovery", "errors")


def guess_uuid(topic: str) -> str:
    """The uuid level of a rejected topic, for per-device counts ('?' if none)."""
    parts = topic.split("/")
    for i, part in enumerate(parts[:-1]):
        if part in _UUID_LEVEL_AFTER:
            return parts[i + 1][:64] or "?"
    return "?"


def needs_device(msg: Message) -> bool:
    """Messages that change device state go through the device's actor."""
    return bool(msg.facts or msg.availability or msg.response or msg.discovery or msg.events or msg.observed)


def telemetry_rows(msg: Message, received_at: float, skew_s: float) -> tuple[list[TelemetryRow], int]:
    """The message's readings as rows and how many of their times were overruled."""
    rows = []
    skewed = 0
    for idx, r in enumerate(msg.readings):
        if msg.trust_clock:
            ts, bad = effective_ts(r.ts if r.ts is not None else msg.device_ts, received_at, skew_s)
            skewed += bad
        else:
            ts = received_at
        rows.append(new_row((msg.uuid, msg.boot_id, msg.seq, idx, ts, received_at, r.source, r.metric, r.value, r.unit,
                             r.tag, r.raw)))
    return rows, (1 if skewed else 0)


class _SeenAcc:
    """What the fast path saw of one device in one batch, as it accumulates."""

    __slots__ = ("received_at", "count", "dialect", "encoding", "protocol_version", "seqs", "relay_states", "clock_skew")

    def __init__(self) -> None:
        self.received_at = 0.0
        self.count = 0
        self.dialect = Dialect.V1  # each set from the batch's messages before seen() is called
        self.encoding = Encoding.JSON
        self.protocol_version: str | None = None
        self.seqs: list[tuple[int | None, int]] = []
        self.relay_states: list[RelayState] = []
        self.clock_skew = 0

    def seen(self) -> Seen:
        return Seen(self.received_at, self.count, self.dialect, self.encoding, self.protocol_version,
                    tuple(self.seqs), tuple(self.relay_states), self.clock_skew)


@dataclass
class RoutedBatch:
    """What one batch comes to. `rows` (with `row_tokens`, and per message
    in `by_message` for a resend one by one) go to the store; `seen` and
    `devices` to the supervisor; `done` are the tokens that need nothing
    stored (refused, or nothing to store); `refused` is (uuid, topic,
    reason, detail) for each refused message, already counted: plain text,
    not the exception, whose traceback would keep the decoder's frames (and
    the payloads in them) alive for the whole batch."""

    rows: list[TelemetryRow] = field(default_factory=list)
    row_tokens: list[Token] = field(default_factory=list)
    by_message: list[tuple[str, str, list[TelemetryRow], Token]] = field(default_factory=list)  # (uuid, topic, rows, token)
    seen: tuple[tuple[str, Seen], ...] = ()
    devices: tuple[tuple[str, tuple[DeviceMessage, ...]], ...] = ()
    done: list[Token] = field(default_factory=list)
    refused: list[tuple[str, str, str, str]] = field(default_factory=list)


class RoutingRules:
    def __init__(self, prefix: str, max_payload: int, skew_s: float, rate: float, burst: float,
                 counters: Counter[str] | None = None) -> None:
        self.prefix = prefix
        self.max_payload = max_payload
        self.skew_s = skew_s
        self.limiter = RateLimiter(rate, burst)
        self.counters: Counter[str] = Counter() if counters is None else counters
        self.rejections: Counter[str] = Counter()
        self.rejections_by_device: dict[str, Counter[str]] = defaultdict(Counter)
        self.batch_sizes: Counter[str] = Counter()
        self.kinds: Counter[Kind] = Counter()  # valid messages by kind
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

    # -- what the database and the operator say ----------------------------------

    def load(self, devices: Iterable[KnownDevice]) -> None:
        """Start-up: what the database knows."""
        for d in devices:
            if dialects.locks_dialect(d.protocol, d.boot_id):
                self.v1_boot[d.uuid] = 0

    def mark(self) -> int:
        """The number of batches routed so far (what `lock(after=)` is judged by)."""
        return self.counters["batches"]

    def lock(self, uuid: str, locked: bool, after: int | None = None) -> bool:
        """The operator's change; True if the device's 2.2 messages go
        through its actor afterwards. An unlock is ignored if a v1 message
        with a boot_id locked the device again after batch `after`."""
        if locked:
            self.v1_boot[uuid] = self.counters["batches"]
        elif uuid in self.v1_boot:
            if after is None or self.v1_boot[uuid] <= after:
                del self.v1_boot[uuid]
        return uuid in self.v1_boot

    def reject(self, uuid: str, rejected: Rejected) -> None:
        """Count a refused message, for the device and overall."""
        self.rejections[rejected.reason] += 1
        self.rejections_by_device[uuid][rejected.reason] += 1
        if len(self.rejections_by_device) > MAX_DEVICES_COUNTED:
            self.rejections_by_device.pop(next(iter(self.rejections_by_device)))

    # -- a batch -------------------------------------------------------------------

    def route(self, messages: Sequence[RawInbound]) -> RoutedBatch:
        out = RoutedBatch()
        rows, row_tokens, by_message, done = out.rows, out.row_tokens, out.by_message, out.done  # the hot loop's
        seen: dict[str, _SeenAcc] = {}
        device_msgs: dict[str, list[DeviceMessage]] = defaultdict(list)
        observed: set[str] = set()  # devices with an observed relay command in this batch
        self.counters["batches"] += 1
        self.counters["messages"] += len(messages)
        kinds = self.kinds
        for raw in messages:
            # The rate decision from the topic alone, before a byte of the
            # payload is parsed: a flooding device's excess costs a topic
            # split and a bucket lookup, not a decode (issue 11). A topic that
            # does not parse is left to decode_message, which says why.
            try:
                parsed = parse_topic(raw.topic, self.prefix)
            except Exception:
                parsed = None
            if parsed is not None and parsed.uuid is not None and not self.limiter.allow(parsed.uuid, raw.received_at):
                self._refuse(out, parsed.uuid, Rejected(RATE_LIMITED, f"over {self.limiter.rate:g} messages/s"), raw)
                continue
            try:
                msg = decode_message(raw.topic, raw.payload, prefix=self.prefix, max_payload=self.max_payload,
                                     parsed=parsed)
            except Rejected as rej:
                self._refuse(out, guess_uuid(raw.topic), rej, raw)
                continue
            except Exception as exc:  # a bug in protocol/: it must not stop routing for every device
                self._refuse(out, guess_uuid(raw.topic), Rejected(INTERNAL_ERROR, f"{type(exc).__name__}: {exc}"), raw)
                continue
            if (parsed is None or parsed.uuid is None) and not self.limiter.allow(msg.uuid, raw.received_at):
                # uuid in the payload only (2.2 telemetry/relays/data)
                self._refuse(out, msg.uuid, Rejected(RATE_LIMITED, f"over {self.limiter.rate:g} messages/s"), raw)
                continue
            kinds[msg.kind] += 1
            msg_rows, skewed = telemetry_rows(msg, raw.received_at, self.skew_s) if msg.readings else ([], 0)
            if msg.observed is not None:
                observed.add(msg.uuid)
            if dialects.locking_boot_id(msg) is not None:
                self.v1_boot[msg.uuid] = self.counters["batches"]
            checked = msg.uuid in self.v1_boot and dialects.refused_when_locked(msg.dialect)
            if checked:
                self.counters["dialect_checked"] += 1
            # A relay state report after an observed relay command of the same
            # batch goes in order with it (the fast path's summary reaches the
            # device before the batch's messages): it may be the board's answer.
            # A 2.2 message for a device that may be a v1 device with a boot_id
            # goes to its actor with its rows, which refuses it or stores them.
            if needs_device(msg) or (msg.relay_states and msg.uuid in observed) or checked:
                device_msgs[msg.uuid].append(DeviceMessage(msg, raw.received_at, raw.token, tuple(msg_rows), skewed))
                continue
            acc = seen.get(msg.uuid)
            if acc is None:
                acc = seen[msg.uuid] = _SeenAcc()
            acc.received_at = raw.received_at
            acc.count += 1
            acc.dialect, acc.encoding, acc.protocol_version = msg.dialect, msg.encoding, msg.protocol_version
            if msg.seq is not None:
                acc.seqs.append((msg.boot_id, msg.seq))
            acc.relay_states.extend(msg.relay_states)
            acc.clock_skew += skewed
            if msg_rows:
                rows.extend(msg_rows)
                row_tokens.append(raw.token)
                by_message.append((msg.uuid, raw.topic, msg_rows, raw.token))
            else:
                done.append(raw.token)
        out.seen = tuple((uuid, acc.seen()) for uuid, acc in seen.items())
        out.devices = tuple((uuid, tuple(msgs)) for uuid, msgs in device_msgs.items())
        size = len(messages)
        self.batch_sizes["1" if size == 1 else "2-99" if size < 100 else "100+"] += 1
        return out

    def _refuse(self, out: RoutedBatch, uuid: str, rejected: Rejected, raw: RawInbound) -> None:
        self.reject(uuid, rejected)
        out.refused.append((uuid, raw.topic, rejected.reason, rejected.detail))
        out.done.append(raw.token)
