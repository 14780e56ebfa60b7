"""Relay commands others send a 2.2 board, and the board's answers.

The Config App's UI and the displays publish relay commands themselves on
`autocore/devices/{uuid}/relays/set`; the gateway only watches (PROTOCOL.md,
"Firmware 2.2 dialect": recorded as events, never acted on). Pure, like the
command window: every method takes the time and returns the events to
append, `(ts, event, detail)`.

* An observed command is a `relay_command` event (`ObservedCommand.detail`)
  and waits `timeout_s` (the device's command timeout) for the board's
  answer. It never touches the commands table or the command window.
* Its answer is one `relay_command_result` event with detail `{"channel",
  "state", "outcome", "observed_command", "after_s"}`, `outcome`:
  * `applied`: a `relays/state` of the board shows the channel in the
    requested state (every reported channel for "all"); for a toggle, the
    opposite of the state the gateway knew when the command came (a toggle
    sent while no state was known cannot be confirmed by a report). A
    `relay_change` event of the board for the channel counts too (with the
    requested state; any change for a toggle). `confirmed_by` says which.
  * `error`: an error of the board that echoes the refused payload in
    `context.command` (see `protocol.fw22.refused_command`): with a
    `command_id`, the waiting command with that id; without one, the oldest
    waiting command without an id whose channel, command and user the echo
    does not contradict. Errors that echo nothing (a hold's heartbeat
    timeout) answer no command. `error_code` and `error_message` are added.
  * `no_answer`: nothing of that within `timeout_s`.
* The gateway's own relays/set (`user` "gateway" or `source` its id) is not
  recorded: counted as `relay_commands_own` (the No Local subscription
  should already keep it away).
* At most `MAX_WAITING` commands wait per device; one more ends the oldest
  as `no_answer` at once. The last `RECENT` commands and their outcomes are
  kept for inspection.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from protocol.fw22 import RefusedCommand, is_own_relay_command
from protocol.values import ObservedCommand

MAX_WAITING = 32
RECENT = 10

RELAY_COMMAND = "relay_command"
RELAY_COMMAND_RESULT = "relay_command_result"
APPLIED, ERROR, NO_ANSWER = "applied", "error", "no_answer"

Events = list[tuple[float, str, Any]]


@dataclass
class _Waiting:
    command: ObservedCommand
    at: float
    deadline: float
    before: dict[int, bool]  # the board's relay states the gateway knew when the command came
    shown: dict[str, Any] = field(default_factory=dict)  # its entry in `recent`


class ObservedCommands:
    def __init__(self, timeout_s: float, gateway_id: str) -> None:
        self.timeout_s = timeout_s
        self.gateway_id = gateway_id
        self.waiting: list[_Waiting] = []  # oldest first
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT)
        self.counters: Counter[str] = Counter()

    # -- inputs ------------------------------------------------------------

    def observe(self, command: ObservedCommand, at: float, relays: Mapping[int, bool]) -> Events:
        """A relays/set someone published for this board at `at`."""
        if is_own_relay_command(command, self.gateway_id):
            self.counters["relay_commands_own"] += 1
            return []
        self.counters["relay_commands_observed"] += 1
        events: Events = [(at, RELAY_COMMAND, command.detail())]
        if len(self.waiting) >= MAX_WAITING:
            oldest = self.waiting.pop(0)
            events.append(self._result(oldest, at, NO_ANSWER, relays, reason="too many commands waiting"))
        shown = {"at": at, **command.detail(), "outcome": "waiting"}
        self.recent.append(shown)
        self.waiting.append(_Waiting(command, at, at + self.timeout_s, dict(relays), shown))
        return events

    def relay_states(self, reported: Mapping[int, bool], at: float, relays: Mapping[int, bool]) -> Events:
        """A `relays/state` of the board (`reported`), received at `at`."""
        return self._confirm(reported, at, relays, "relays/state")

    def relay_change(self, channel: int | None, state: Any, at: float, relays: Mapping[int, bool]) -> Events:
        """A `relay_change` event of the board on `autocore/telemetry/relays/data`."""
        if channel is None or not isinstance(state, bool):
            return []
        return self._confirm({channel: state}, at, relays, "relay_change")

    def error(self, refused: RefusedCommand | None, at: float, relays: Mapping[int, bool]) -> Events:
        """An error of the board; `refused` is what it echoes (None: nothing)."""
        if refused is None:
            return []
        for waiting in self.waiting:
            if at <= waiting.deadline and _refuses(refused, waiting.command):
                self.waiting.remove(waiting)
                return [self._result(waiting, at, ERROR, relays, error_code=refused.error_code,
                                     error_message=refused.error_message)]
        return []

    # -- time ----------------------------------------------------------------

    def expire(self, now: float, relays: Mapping[int, bool]) -> Events:
        events: Events = []
        for waiting in [w for w in self.waiting if w.deadline <= now]:
            self.waiting.remove(waiting)
            events.append(self._result(waiting, now, NO_ANSWER, relays))
        return events

    def next_deadline(self) -> float | None:
        return min((w.deadline for w in self.waiting), default=None)

    # -- inside --------------------------------------------------------------

    def _confirm(self, reported: Mapping[int, bool], at: float, relays: Mapping[int, bool], by: str) -> Events:
        events: Events = []
        for waiting in list(self.waiting):
            if at <= waiting.deadline and _applied(waiting, reported, full=by == "relays/state"):
                self.waiting.remove(waiting)
                events.append(self._result(waiting, at, APPLIED, relays, reported=reported, confirmed_by=by))
        return events

    def _result(self, waiting: _Waiting, at: float, outcome: str, relays: Mapping[int, bool],
                reported: Mapping[int, bool] | None = None, **extra: Any) -> tuple[float, str, Any]:
        self.counters[f"relay_command_{outcome}"] += 1
        channel = waiting.command.channel
        known = {**relays, **(reported or {})}
        if channel == "all":
            state = waiting.command.state if outcome == APPLIED else None
        else:
            state = known.get(channel) if isinstance(channel, int) else None
        detail = {"channel": channel, "state": state, "outcome": outcome,
                  "observed_command": waiting.command.detail(), "after_s": round(max(at - waiting.at, 0.0), 3),
                  **extra}
        waiting.shown.update(outcome=outcome, after_s=detail["after_s"], **extra)
        return (at, RELAY_COMMAND_RESULT, detail)

    def snapshot(self) -> dict[str, Any]:
        return {"waiting": len(self.waiting), "recent": [dict(entry) for entry in reversed(self.recent)]}


def _applied(waiting: _Waiting, reported: Mapping[int, bool], full: bool) -> bool:
    """Whether a report shows the command took effect (`full`: a relays/state,
    every channel; else one channel's change)."""
    command = waiting.command
    if command.channel == "all":
        if not full or not reported:
            return False
        if command.state is not None:
            return all(state == command.state for state in reported.values())
        if command.toggle:
            known = [n for n in reported if n in waiting.before]
            return bool(known) and all(reported[n] != waiting.before[n] for n in known)
        return False
    channel = command.channel
    if not isinstance(channel, int) or channel not in reported:
        return False
    if command.state is not None:
        return reported[channel] == command.state
    if command.toggle:
        if not full:
            return True  # a relay_change is a change
        was = waiting.before.get(channel)
        return was is not None and reported[channel] != was
    return False


def _refuses(refused: RefusedCommand, command: ObservedCommand) -> bool:
    """Whether an error's echo is this observed command."""
    if refused.command_id is not None or command.command_id is not None:
        return refused.command_id == command.command_id
    echo = refused.echo
    if echo is None:
        return True  # too damaged to read, and not the gateway's own (those keep their id)
    if "channel" in echo and echo["channel"] != command.channel:
        return False
    if "command" in echo and echo["command"] != command.command:
        return False
    user = echo.get("user")
    return not (isinstance(user, str) and user[:64] != command.user)
