"""Everything one device's actor decides, as a pure state machine.

The `Device` actor is a thin shell around `DeviceLogic`: it feeds in what
arrives (with the time) and sends what the returned `DeviceStep` holds: its
`write` to the store as it is (the logic builds the `DeviceWrite` itself,
rows and tokens included), publications to MqttIO, and asks the Scheduler
for the next wake-up. A device's state between actors is one `KnownDevice`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from actors.messages import CommandTransition, DeviceMessage, DeviceWrite, KnownDevice, Seen
from actors.rules.commands import DEFAULT_PLAN, CommandStep, CommandWindow, Plan
from actors.rules.liveness import DISCOVERED, OFFLINE, ONLINE, Liveness, timeout_for
from actors.rules.observed import ObservedCommands
from protocol import dialects
from protocol.fw22 import refused_command
from protocol.values import CommandSpec, DeviceFacts, Dialect, Discovery, Encoding, Event, Kind, RelayState

LAST_SEEN_WRITE_S = 5.0  # `devices.last_seen` is refreshed at most this often per device
# A v1 device with a boot_id refuses 2.2 messages (PROTOCOL.md, "Firmware 2.2
# dialect"): every one is counted, but a `dialect_conflict` event is written
# at most this often per device, so a flood cannot flood `device_events`.
DIALECT_CONFLICT_EVENT_S = 60.0
DIALECT_CONFLICT = "dialect_conflict"


@dataclass(frozen=True)
class DeviceRules:
    device_timeout_s: float = 15.0
    command_window: int = 1
    fw22_periods: tuple[tuple[str, float], ...] = (("esp32_relay", 30.0), ("display", 5.0), ("esp32_display", 5.0))
    fw22_default_period: float = 30.0
    fw22_heartbeat_s: float = 0.25
    command_timeout_s: float = 5.0  # also how long an observed relay command waits for the board's answer
    gateway_id: str = "autocore-gateway"  # its own relays/set are never recorded as observed

    def period(self, dialect: Dialect, device_type: str | None, status_interval: float | None) -> float:
        return dialects.report_period(dialect, device_type, status_interval, dict(self.fw22_periods),
                                      self.fw22_default_period)


@dataclass
class DeviceStep:
    """What one input led to: `write` for the store (sent only if it
    `stores_anything`), and what the actor itself sends."""

    write: DeviceWrite
    sends: list[tuple[CommandSpec, int]] = field(default_factory=list)
    beats: list[tuple[CommandSpec, int, int]] = field(default_factory=list)  # heartbeats of holds
    availability: str | None = None  # publish this retained verdict
    refused: str | None = None  # the message was refused (the reason): nothing of it is stored

    def change(self, **fields: Any) -> None:
        self.write = replace(self.write, **fields)

    def event(self, at: float, name: str, detail: Any) -> None:
        self.write = replace(self.write, events=self.write.events + ((at, name, detail),))

    def add_commands(self, cmd: CommandStep, counters: Counter) -> None:
        if cmd.transitions:
            self.change(transitions=self.write.transitions + tuple(
                CommandTransition(cid, status, **fields) for cid, status, fields in cmd.transitions))
        self.sends.extend(cmd.sends)
        self.beats.extend(cmd.beats)
        counters.update(cmd.counters)


class DeviceLogic:
    def __init__(
        self,
        uuid: str,
        rules: DeviceRules,
        known: KnownDevice | None = None,  # what the database knew of it; None: never seen
        *,
        plan: Callable[[str, CommandSpec], Plan] | None = None,
    ) -> None:
        self.uuid = uuid
        self.rules = rules
        k = known or KnownDevice(uuid, "")  # never seen: no status yet
        self.dialect: Dialect = k.protocol
        self.device_type = k.device_type
        self.status_interval = k.status_interval
        self.encoding: Encoding = k.encoding
        last_seen = k.last_seen
        self.liveness = Liveness(status=k.status or None, boot_id=k.boot_id, last_seen=last_seen)
        self.liveness.timeout_s = self._timeout()
        self.relays: dict[int, bool] = {}
        self.commands = CommandWindow(rules.command_window, beat_s=rules.fw22_heartbeat_s, relays=self.relays)
        self.observed = ObservedCommands(rules.command_timeout_s, rules.gateway_id)
        self.counters: Counter[str] = Counter()
        self.seq_by_boot: dict[int | None, int] = {}
        self._last_seen_written = last_seen or 0.0
        self._plan_fn = plan
        self._facts_written: DeviceFacts | None = None  # a 2.2 status repeats them every few seconds
        self._conflict_event_at: float | None = None  # when the last dialect_conflict event was written
        self._conflicts_unreported = 0  # refused since then

    def fresh(self) -> "DeviceLogic":
        """The logic of this uuid as if it had never been seen (the operator
        forgot the device): same rules, no state."""
        return DeviceLogic(self.uuid, self.rules, plan=self._plan_fn)

    def known(self) -> KnownDevice:
        """What the supervisor keeps of the device (and rebuilds the logic from)."""
        return KnownDevice(
            uuid=self.uuid, status=self.liveness.status or "offline", device_type=self.device_type,
            boot_id=self.liveness.boot_id, status_interval=self.status_interval, protocol=self.dialect,
            encoding=self.encoding, last_seen=self.liveness.last_seen,
        )

    def _step(self, now: float) -> DeviceStep:
        return DeviceStep(DeviceWrite(self.uuid, now))

    # -- helpers -------------------------------------------------------

    def _timeout(self) -> float:
        return timeout_for(self.rules.period(self.dialect, self.device_type, self.status_interval), self.rules.device_timeout_s)

    def plan(self, spec: CommandSpec) -> Plan:
        return self._plan_fn(self.dialect, spec) if self._plan_fn else DEFAULT_PLAN

    @property
    def status(self) -> str | None:
        return self.liveness.status

    @property
    def dialect_locked(self) -> bool:
        """Whether messages of the other dialect are refused (protocol/dialects.py).
        Only the operator changes it (`set_dialect`, or forgetting the device)."""
        return dialects.locks_dialect(self.dialect, self.liveness.boot_id)

    def set_dialect(self, dialect: str) -> None:
        """The operator's word (`gateway devices dialect UUID ...`); the CLI
        writes the database and the event, so this only changes memory."""
        if dialect not in tuple(Dialect):
            raise ValueError(f"dialect must be {' or '.join(Dialect)}, got {dialect!r}")
        self.dialect = Dialect(dialect)
        self.liveness.timeout_s = self._timeout()

    def _refuse(self, step: DeviceStep, now: float, at: float, kind: str, protocol_version: str | None,
                what: str, count: int = 1) -> DeviceStep:
        """A 2.2 message for a device locked to v1: no state change, nothing
        stored; counted, and an event at most every DIALECT_CONFLICT_EVENT_S."""
        step.refused = DIALECT_CONFLICT
        self.counters[DIALECT_CONFLICT] += count
        self._conflicts_unreported += count
        if self._conflict_event_at is None or now - self._conflict_event_at >= DIALECT_CONFLICT_EVENT_S:
            step.event(at, DIALECT_CONFLICT, {
                "kind": kind, "protocol_version": protocol_version, "refused": what,
                "count": self._conflicts_unreported, "dialect": self.dialect, "boot_id": self.liveness.boot_id,
            })
            self._conflict_event_at = now
            self._conflicts_unreported = 0
        return step

    def _known(self, step: DeviceStep, dialect: Dialect, now: float) -> None:
        """The first valid message of an unknown uuid makes it a device."""
        if self.liveness.status is None:
            step.change(ensure=dialect)
        if dialect != self.dialect:
            if self.liveness.status is not None:
                step.event(now, "dialect_change", {"from": self.dialect, "to": dialect})
                self.counters["dialect_change"] += 1
            self.dialect = dialect
            step.change(protocol=dialect)
            self.liveness.timeout_s = self._timeout()

    def _encoding(self, step: DeviceStep, encoding: Encoding) -> None:
        if encoding != self.encoding:
            self.encoding = encoding
            step.change(encoding=encoding)

    def _alive(self, step: DeviceStep, at: float, boot_id: int | None, announce: bool = False) -> None:
        was_online = self.liveness.online
        for event, detail in self.liveness.seen(at, boot_id, announce):
            step.event(at, event, detail)
            if event == "reboot":
                step.change(boot_id=self.liveness.boot_id)
                # Older boots are done; the new boot's first seq (tracked just before) is kept.
                self.seq_by_boot = {b: q for b, q in self.seq_by_boot.items() if b == self.liveness.boot_id}
        if not was_online:
            step.change(status=ONLINE, boot_id=self.liveness.boot_id)
            step.availability = ONLINE
        elif at - self._last_seen_written >= LAST_SEEN_WRITE_S:
            step.change(last_seen=at)
        if step.write.status or step.write.last_seen is not None:
            self._last_seen_written = at

    def _track_seq(self, boot_id: int | None, seq: int) -> None:
        last = self.seq_by_boot.get(boot_id)
        if last is not None:
            if seq == last + 1:
                pass
            elif seq > last + 1:
                self.counters["seq_gaps"] += seq - last - 1
            else:
                self.counters["seq_repeats"] += 1
                return
        self.seq_by_boot[boot_id] = seq
        if len(self.seq_by_boot) > 4:  # only recent boots matter
            self.seq_by_boot.pop(next(iter(self.seq_by_boot)))

    def _relays(self, step: DeviceStep, states: tuple[RelayState, ...], now: float, received_at: float) -> None:
        for s in states:
            self.relays[s.relay_id] = s.state
        if states:
            step.add_commands(self.commands.relay_states(states, now, self.liveness.online, self.plan), self.counters)
            if self.observed.waiting:
                reported = {s.relay_id: s.state for s in states}
                self._observed_events(step, self.observed.relay_states(reported, received_at, self.relays))

    def _observed_events(self, step: DeviceStep, events: list) -> None:
        for at, name, detail in events:
            step.event(at, name, detail)
        self.counters.update(self.observed.counters)
        self.observed.counters.clear()

    def _after(self, step: DeviceStep, now: float, was_online: bool) -> DeviceStep:
        if self.liveness.online and not was_online:
            step.add_commands(self.commands.pump(now, True, self.plan), self.counters)
        return step

    # -- inputs --------------------------------------------------------

    def seen(self, now: float, seen: Seen) -> DeviceStep:
        """Telemetry went to the store on the fast path; here is what it said of the device."""
        step = self._step(now)
        received_at, count, relay_states = seen.received_at, seen.count, seen.relay_states
        if self.dialect_locked and dialects.refused_when_locked(seen.dialect):
            # The Router sends a locked device's 2.2 messages to `message`,
            # never the fast path, so that nothing of them is stored; a
            # summary here means its rows went to the store already (the
            # actor logs it). Refused all the same.
            return self._refuse(step, now, received_at, "fast_path", seen.protocol_version,
                                "relay states" if relay_states else "telemetry", count)
        was_online = self.liveness.online
        self.counters["messages"] += count
        self.counters["clock_skew"] += seen.clock_skew
        self._known(step, seen.dialect, now)
        self._encoding(step, seen.encoding)
        boot_id = None
        for boot, seq in seen.seqs:
            boot_id = boot if boot is not None else boot_id
            self._track_seq(boot, seq)
        self._alive(step, received_at, boot_id)
        self._relays(step, relay_states, now, received_at)
        return self._after(step, now, was_online)

    def seen_elsewhere(self, now: float, at: float) -> DeviceStep:
        """Several instances: another instance received a message of this
        device at `at` (its share of the telemetry). A sign of life when it
        is newer than any this instance knows of; nothing else is learned."""
        step = self._step(now)
        last = self.liveness.last_seen
        if self.liveness.status is None or (last is not None and at <= last):
            return step
        was_online = self.liveness.online
        self._alive(step, at, None)
        return self._after(step, now, was_online)

    def message(self, now: float, dm: DeviceMessage) -> DeviceStep:
        """A message through the actor. The step's write carries its rows
        (unless it is refused) and its token, whatever it changed."""
        step = self._message(now, dm)
        step.change(rows=() if step.refused else dm.rows, tokens=(dm.token,))
        return step

    def _message(self, now: float, dm: DeviceMessage) -> DeviceStep:
        step = self._step(now)
        m, received_at = dm.message, dm.received_at
        dialect, encoding, kind = m.dialect, m.encoding, m.kind.value
        facts, availability, events, boot_id = m.facts, m.availability, m.events, m.boot_id
        if self.dialect_locked and dialects.refused_when_locked(dialect) and m.observed is None:
            # (An observed relay command is someone else's, not the device
            # speaking: it is recorded as ever and changes nothing of it.)
            return self._refuse(step, now, received_at, kind, m.protocol_version,
                                _refused_what(availability, facts, events, m.relay_states))
        if m.observed is not None:
            # Someone else's command to this board: recorded, never acted on;
            # not the board's message, so no sign of life, no dialect, no device.
            self._observed_events(step, self.observed.observe(m.observed, received_at, self.relays))
            return step
        was_online = self.liveness.online
        self.counters["messages"] += 1
        self.counters["clock_skew"] += dm.clock_skew
        if m.discovery is not None:
            return self._discovery(step, received_at, m.discovery)
        if m.alive or facts is not None or availability is not None or self.liveness.status is not None:
            # Not for a message that only names the device (2.2 relay events
            # carry the uuid in the payload): that does not make it a device.
            self._known(step, dialect, now)
        self._encoding(step, encoding)
        if facts is not None:
            if facts != self._facts_written or kind == Kind.ANNOUNCE or step.write.ensure:
                step.change(facts=facts)
                self._facts_written = facts
            if facts.device_type:
                self.device_type = facts.device_type
            if facts.status_interval:
                self.status_interval = facts.status_interval
            self.liveness.timeout_s = self._timeout()
            if kind == Kind.ANNOUNCE:
                step.event(received_at, "announce", {"boot_id": facts.boot_id, "firmware_version": facts.firmware_version})
            boot_id = facts.boot_id if facts.boot_id is not None else boot_id
        if m.seq is not None:
            self._track_seq(boot_id, m.seq)
        if availability is not None and not availability.online:
            before = self.liveness.status
            for event, detail in self.liveness.offline(received_at, availability.boot_id, availability.reason):
                step.event(received_at, event, detail)
                if event == "reboot":
                    step.change(boot_id=self.liveness.boot_id)
            if before != OFFLINE and self.liveness.status == OFFLINE:
                self._went_offline(step, now)
        elif m.alive or (availability is not None and availability.online):
            if availability is not None and availability.boot_id is not None:
                boot_id = availability.boot_id
            self._alive(step, received_at, boot_id, announce=kind == Kind.ANNOUNCE)
        for ev in events:
            step.event(received_at, ev.event, ev.detail)
            if ev.event == "safety_shutoff":
                step.add_commands(self.commands.shutoff(ev.channel, now, self.liveness.online, self.plan), self.counters)
            if self.observed.waiting:
                self._observed_answer(step, ev, received_at)
        self._relays(step, m.relay_states, now, received_at)
        if m.response is not None:
            step.add_commands(self.commands.response(m.response, now, self.liveness.online, self.plan), self.counters)
        return self._after(step, now, was_online)

    def _observed_answer(self, step: DeviceStep, event: Event, received_at: float) -> None:
        """An event of the board that may answer a relay command someone else sent it."""
        if event.event == "error":
            self._observed_events(step, self.observed.error(refused_command(event.detail), received_at, self.relays))
        elif event.event == "relay_change":
            state = event.detail.get("state") if isinstance(event.detail, Mapping) else None
            self._observed_events(step, self.observed.relay_change(event.channel, state, received_at, self.relays))

    def _went_offline(self, step: DeviceStep, now: float) -> None:
        step.change(status=OFFLINE, last_seen=self.liveness.last_seen)
        step.availability = OFFLINE
        step.add_commands(self.commands.offline(now), self.counters)  # holds stop at once

    def _discovery(self, step: DeviceStep, at: float, discovery: Discovery) -> DeviceStep:
        """A device the gateway did not know is registered as `discovered`."""
        if self.liveness.status is None:
            self.liveness.status = DISCOVERED
            step.change(discovery=discovery, status=DISCOVERED)
        step.event(at, "discovered", {k: v for k, v in vars(discovery).items() if v is not None})
        return step

    def deadline(self, now: float, as_of: float | None = None) -> DeviceStep:
        """A time asked for came. `as_of`: the time up to which every message
        received has been seen (actors/device.py); the liveness verdict is
        taken as of then, so a gateway that is behind does not blame the
        device for its own delay. Commands and holds run on `now`."""
        step = self._step(now)
        at = now if as_of is None else min(now, as_of)
        for event, detail in self.liveness.check(at):
            step.event(at, event, detail)
            self._went_offline(step, now)
        step.add_commands(self.commands.tick(now, self.liveness.online, self.plan), self.counters)
        if self.observed.waiting:
            self._observed_events(step, self.observed.expire(now, self.relays))
        return step

    def take_commands(self, states, now: float) -> DeviceStep:
        step = self._step(now)
        for state in states:
            self.commands.take(state.spec, state.status, state.attempts, now, self.plan(state.spec))
        step.add_commands(self.commands.pump(now, self.liveness.online, self.plan), self.counters)
        return step

    def cancel(self, command_id: int, now: float) -> DeviceStep:
        step = self._step(now)
        step.add_commands(self.commands.cancel(command_id), self.counters)
        step.add_commands(self.commands.pump(now, self.liveness.online, self.plan), self.counters)
        return step

    def next_wake(self) -> float | None:
        times = [t for t in (self.liveness.deadline(), self.commands.next_deadline(), self.observed.next_deadline())
                 if t is not None]
        return min(times) if times else None

    def idle(self) -> bool:
        """Nothing in hand: the actor may be stopped and rebuilt later from its record."""
        return (not self.liveness.online and not self.commands.queue and not self.commands.out
                and not self.observed.waiting)

    def snapshot(self, now: float) -> dict:
        deadline = self.liveness.deadline()
        return {
            "uuid": self.uuid,
            "status": self.liveness.status,
            "dialect": self.dialect,
            "dialect_locked": self.dialect_locked,
            "device_type": self.device_type,
            "boot_id": self.liveness.boot_id,
            "encoding": self.encoding,
            "last_seen": self.liveness.last_seen,
            "timeout_s": self.liveness.timeout_s,
            "offline_in_s": None if deadline is None else round(deadline - now, 3),
            "relays": {str(k): v for k, v in sorted(self.relays.items())},
            "counters": dict(self.counters),
            "stale_wills": self.liveness.stale_wills,
            "commands": self.commands.snapshot(now),
            "relay_commands": self.observed.snapshot(),
        }


def _refused_what(availability, facts, events, relay_states) -> str:
    """What a refused 2.2 message would have done, for the event's detail."""
    if availability is not None and not availability.online:
        return "status offline"
    if availability is not None or facts is not None:
        return "status online"
    if events:
        return "events " + ", ".join(sorted({e.event for e in events}))
    if relay_states:
        return "relay states"
    return "telemetry"
