"""The command lifecycle of one device (PROTOCOL.md "Commands").

Pure: every method takes the time and whether the device is online, and
returns a `CommandStep`: the transitions to write, the sends to publish and
the counters to raise. Commands leave in id order, at most `window` out and
unanswered at once; a sent command is re-sent with the same id and the next
attempt after its timeout, up to `max_attempts`.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

from protocol.lifecycle import CommandStatus as S
from protocol.values import CommandSpec, RelayState, Response


@dataclass(frozen=True)
class Plan:
    """How a command is carried out and confirmed, decided by the device's
    dialect (firmware 2.2 never answers, so its commands are confirmed by
    what the relay reports).

    `retry` False: never sent twice (a toggle is not idempotent).
    `confirm` (channel or "all", state): a relay state report showing it
    means success. `toggle` (channel): success when the channel shows the
    opposite of what it was when the command went out. `hold_s` with
    `hold_channel`: a heartbeat hold, succeeded when it ran its full time
    without the relay shutting off first. `error`: the command cannot be
    sent at all and fails at once with this text. `silent`: the device never
    answers (so a timeout says no confirmation came)."""

    retry: bool = True
    confirm: tuple[int | str, bool] | None = None
    toggle: int | None = None
    hold_s: float | None = None
    hold_channel: int | None = None
    error: str | None = None
    silent: bool = False


DEFAULT_PLAN = Plan()
INFINITY = float("inf")
RELAY_RELEASE_S = 1.0  # a 2.2 relay switches off this long after the last heartbeat


def _expiry(spec: CommandSpec) -> float:
    return spec.expires_at or INFINITY


@dataclass
class Outstanding:
    spec: CommandSpec
    attempts: int
    deadline: float  # next timeout (or resend time when `resend_due`)
    plan: Plan = DEFAULT_PLAN
    accepted: bool = False
    resend_due: bool = False  # a restart left it `sent`: send again when online
    before: dict[int, bool] | None = None  # relay states when it went out (toggles)
    release_at: float | None = None  # holds: the last heartbeat goes no later than this
    hold_until: float | None = None  # holds: success at this time
    next_beat: float | None = None
    beats: int = 0


@dataclass
class CommandStep:
    transitions: list[tuple[int, S, dict]] = field(default_factory=list)  # (id, status, fields)
    sends: list[tuple[CommandSpec, int]] = field(default_factory=list)  # (spec, attempt)
    beats: list[tuple[CommandSpec, int, int]] = field(default_factory=list)  # (spec, channel, sequence)
    counters: list[str] = field(default_factory=list)

    def extend(self, other: "CommandStep") -> "CommandStep":
        self.transitions.extend(other.transitions)
        self.sends.extend(other.sends)
        self.beats.extend(other.beats)
        self.counters.extend(other.counters)
        return self


class CommandWindow:
    def __init__(self, window: int = 1, remember_finished: int = 256, beat_s: float = 0.25,
                 relays: dict[int, bool] | None = None) -> None:
        self.window = window
        self.beat_s = beat_s
        self.relays = relays if relays is not None else {}  # the device's known relay states (shared)
        self.queue: list[CommandSpec] = []  # waiting to be sent, id order
        self.out: dict[int, Outstanding] = {}
        self._finished: OrderedDict[int, str] = OrderedDict()
        self._remember = remember_finished

    # -- input ---------------------------------------------------------

    def take(self, spec: CommandSpec, status: str, attempts: int, now: float, plan: Plan = DEFAULT_PLAN) -> None:
        """A command to hold: new (`queued`) or taken up again after a restart
        (`plan`: how the device's dialect confirms it, as `pump` would give it)."""
        if spec.id in self.out or spec.id in self._finished or any(q.id == spec.id for q in self.queue):
            return
        if status == S.ACCEPTED:
            self.out[spec.id] = Outstanding(spec, attempts, deadline=now + spec.timeout * spec.max_attempts, plan=plan, accepted=True)
        elif status == S.SENT and (attempts >= spec.max_attempts or not plan.retry):
            # Its last attempt (or its only one: a toggle) was out when the gateway stopped: wait for it once more.
            self.out[spec.id] = Outstanding(spec, attempts, deadline=now + spec.timeout, plan=plan)
        elif status == S.SENT:
            # Sent before a restart: send again, same id, next attempt, once online.
            self.out[spec.id] = Outstanding(spec, attempts, deadline=_expiry(spec), plan=plan, resend_due=True)
        else:
            self.queue.append(spec)
            self.queue.sort(key=lambda s: s.id)

    def cancel(self, command_id: int) -> CommandStep:
        step = CommandStep()
        for i, spec in enumerate(self.queue):
            if spec.id == command_id:
                del self.queue[i]
                self._finish(command_id, S.CANCELLED)
                step.transitions.append((command_id, S.CANCELLED, {"error_message": "cancelled before it was sent"}))
                return step
        held = self.out.get(command_id)
        if held is not None and held.hold_until is not None:
            # A hold stops at once: no more heartbeats, the relay falls by itself.
            del self.out[command_id]
            self._finish(command_id, S.CANCELLED)
            step.transitions.append((command_id, S.CANCELLED, {"error_message": f"hold cancelled after {held.beats} heartbeat(s)"}))
            return step
        if held is not None:
            # Already sent: it cannot be taken back, so it runs to its own end.
            status = S.ACCEPTED if held.accepted else S.SENT
            step.transitions.append((command_id, status, {"error_message": "cancel refused: already sent"}))
            step.counters.append("cancel_refused")
            return step
        if command_id in self._finished:
            return step
        # Never reached this device's window: the gateway never sent it.
        step.transitions.append((command_id, S.CANCELLED, {"error_message": "cancelled before it was sent"}))
        return step

    def response(self, response: Response, now: float, online: bool, plan: Callable[[CommandSpec], Plan]) -> CommandStep:
        step = CommandStep()
        try:
            command_id = int(response.command_id)
        except ValueError:
            command_id = -1
        held = self.out.get(command_id)
        if held is None:
            step.counters.append("late_response" if command_id in self._finished else "unknown_response")
            return step
        fields = {"result": response.result, "error_message": response.error_message}
        if response.outcome == "accepted":
            if not held.accepted:
                held.accepted = True
                step.transitions.append((command_id, S.ACCEPTED, {}))
            # It waits for its final answer without being sent again, but not forever.
            held.deadline = max(held.spec.expires_at, now + held.spec.timeout * held.spec.max_attempts)
            held.resend_due = False
            return step
        status = S.SUCCEEDED if response.outcome == "succeeded" else S.FAILED
        del self.out[command_id]
        self._finish(command_id, status)
        step.transitions.append((command_id, status, fields))
        return step.extend(self.pump(now, online, plan))

    def relay_states(self, states: tuple[RelayState, ...], now: float, online: bool, plan: Callable[[CommandSpec], Plan]) -> CommandStep:
        """Firmware 2.2: a relay state report that shows a command's requested state ends it."""
        step = CommandStep()
        reported = {s.relay_id: s.state for s in states}
        for command_id, held in list(self.out.items()):
            if held.attempts == 0 or not _confirms(held, reported):
                continue
            del self.out[command_id]
            self._finish(command_id, S.SUCCEEDED)
            step.transitions.append((command_id, S.SUCCEEDED, {"result": {"confirmed_by": "relays/state"}}))
        if step.transitions:
            step.extend(self.pump(now, online, plan))
        return step

    def shutoff(self, channel: int | None, now: float, online: bool, plan: Callable[[CommandSpec], Plan]) -> CommandStep:
        """A 2.2 relay says it switched `channel` off by itself: a hold of that
        channel still inside its heartbeats failed. (After the release the
        shutoff is the expected way the relay lets go: no outcome changes.)"""
        step = CommandStep()
        for command_id, held in list(self.out.items()):
            if held.hold_until is None or held.plan.hold_channel != channel or held.release_at is None:
                continue
            if now < held.release_at:
                del self.out[command_id]
                self._finish(command_id, S.FAILED)
                step.transitions.append((command_id, S.FAILED, {
                    "error_message": f"the relay switched channel {channel} off before the hold ended"}))
        return step.extend(self.pump(now, online, plan)) if step.transitions else step

    def offline(self, now: float) -> CommandStep:
        """The device went offline: its holds stop at once (failed)."""
        step = CommandStep()
        for command_id, held in list(self.out.items()):
            if held.hold_until is not None and held.attempts:
                del self.out[command_id]
                self._finish(command_id, S.FAILED)
                step.transitions.append((command_id, S.FAILED, {"error_message": "the device went offline during the hold"}))
        return step

    # -- time ----------------------------------------------------------

    def pump(self, now: float, online: bool, plan: Callable[[CommandSpec], Plan]) -> CommandStep:
        """Expire what waited too long; send what may go now."""
        step = CommandStep()
        keep = []
        for spec in self.queue:
            if now >= _expiry(spec):
                self._finish(spec.id, S.EXPIRED)
                step.transitions.append((spec.id, S.EXPIRED, {"error_message": "expired before the device could take it"}))
            else:
                keep.append(spec)
        self.queue = keep
        if not online:
            return step
        for held in self.out.values():
            if held.resend_due:
                self._send(held, now, step)
        while self.queue and len(self.out) < self.window:
            spec = self.queue.pop(0)
            how = plan(spec)
            if how.error is not None:
                self._finish(spec.id, S.FAILED)
                step.transitions.append((spec.id, S.FAILED, {"error_message": how.error}))
                continue
            held = Outstanding(spec, attempts=0, deadline=now, plan=how)
            self.out[spec.id] = held
            self._send(held, now, step)
        return step

    def tick(self, now: float, online: bool, plan: Callable[[CommandSpec], Plan]) -> CommandStep:
        step = CommandStep()
        for command_id, held in list(self.out.items()):
            if now < held.deadline:
                continue
            if held.hold_until is not None:
                self._hold(command_id, held, now, step)
                continue
            if held.accepted:
                self._timeout(command_id, step, "accepted, but no final answer came")
            elif held.resend_due:
                self._timeout(command_id, step, "the device stayed offline until the command expired")
            elif held.attempts < held.spec.max_attempts and held.plan.retry:
                if not online and now >= _expiry(held.spec):
                    # It cannot go now and may no longer wait: a deadline in the past would spin the caller.
                    self._timeout(command_id, step, "the device stayed offline until the command expired")
                    continue
                held.resend_due = True
                held.deadline = _expiry(held.spec)
            else:
                self._timeout(command_id, step, self._no_answer(held))
        return step.extend(self.pump(now, online, plan))

    def next_deadline(self) -> float | None:
        times = [h.deadline for h in self.out.values()]
        times.extend(_expiry(s) for s in self.queue)
        soonest = min(times, default=INFINITY)
        return None if soonest == INFINITY else soonest

    # -- inside --------------------------------------------------------

    def _send(self, held: Outstanding, now: float, step: CommandStep) -> None:
        held.attempts += 1
        held.resend_due = False
        held.before = dict(self.relays)
        step.transitions.append((held.spec.id, S.SENT, {"attempts": held.attempts}))
        hold_s = held.plan.hold_s
        if hold_s is not None and held.plan.hold_channel is not None:
            # The first heartbeat switches the relay on; the last goes one
            # release time before the end, so the relay is on for `hold_s`.
            held.hold_until = now + hold_s
            held.release_at = now + max(hold_s - RELAY_RELEASE_S, 0.0)
            held.beats = 1
            held.next_beat = now + self.beat_s
            held.deadline = min(held.next_beat, held.hold_until)
            step.beats.append((held.spec, held.plan.hold_channel, 1))
            return
        held.deadline = now + held.spec.timeout
        step.sends.append((held.spec, held.attempts))

    def _hold(self, command_id: int, held: Outstanding, now: float, step: CommandStep) -> None:
        assert held.hold_until is not None and held.release_at is not None and held.next_beat is not None
        if now >= held.hold_until:
            del self.out[command_id]
            self._finish(command_id, S.SUCCEEDED)
            step.transitions.append((command_id, S.SUCCEEDED, {
                "result": {"held_s": held.plan.hold_s, "heartbeats": held.beats}}))
            return
        if now >= held.next_beat and now <= held.release_at + self.beat_s / 2:
            held.beats += 1
            step.beats.append((held.spec, held.plan.hold_channel or 0, held.beats))
            held.next_beat += self.beat_s
            if held.next_beat <= now:
                held.next_beat = now + self.beat_s
        if held.next_beat > held.release_at + self.beat_s / 2:
            held.deadline = held.hold_until  # released: wait for the end
        else:
            held.deadline = min(held.next_beat, held.hold_until)

    def _timeout(self, command_id: int, step: CommandStep, why: str) -> None:
        del self.out[command_id]
        self._finish(command_id, S.TIMEOUT)
        step.transitions.append((command_id, S.TIMEOUT, {"error_message": why}))

    @staticmethod
    def _no_answer(held: Outstanding) -> str:
        if held.plan.silent or held.plan.confirm is not None or held.plan.toggle is not None:
            return f"the device gave no confirmation after {held.attempts} attempt(s)"
        return f"no response after {held.attempts} attempt(s)"

    def _finish(self, command_id: int, status: S) -> None:
        self._finished[command_id] = status.value
        while len(self._finished) > self._remember:
            self._finished.popitem(last=False)

    def snapshot(self, now: float) -> dict:
        return {
            "window": self.window,
            "queued": [{"id": s.id, "type": s.command_type, "expires_in_s": round(_expiry(s) - now, 3)} for s in self.queue],
            "out": [
                {
                    "id": h.spec.id,
                    "type": h.spec.command_type,
                    "attempts": h.attempts,
                    "accepted": h.accepted,
                    "waiting_for_device": h.resend_due,
                    "deadline_in_s": round(h.deadline - now, 3),
                    "hold": None if h.hold_until is None else {
                        "channel": h.plan.hold_channel, "remaining_s": round(max(h.hold_until - now, 0.0), 3),
                        "heartbeats": h.beats},
                }
                for h in self.out.values()
            ],
        }


def _confirms(held: Outstanding, reported: dict[int, bool]) -> bool:
    """Whether a relay state report shows the command took effect."""
    plan = held.plan
    if plan.confirm is not None:
        channel, wanted = plan.confirm
        channels = list(reported) if channel == "all" else [channel] if isinstance(channel, int) else []
        return bool(channels) and all(reported.get(c) == wanted for c in channels)
    if plan.toggle is not None and held.before is not None:
        was = held.before.get(plan.toggle)
        return was is not None and plan.toggle in reported and reported[plan.toggle] == (not was)
    return False
