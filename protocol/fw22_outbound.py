"""Firmware 2.2 dialect, gateway -> device: command planning and encoders.

A row of `commands` for a 2.2 device becomes a `Fw22Plan` (`plan_command`),
which says what to publish and how the outcome is decided, since 2.2
firmware never answers a command (PROTOCOL.md, "Commands to a 2.2 device").
The encoders build the publications; every payload carries
`"protocol_version": "2.2.0"` and is shorter than 512 bytes (the relay's
buffer), else they raise ValueError.

Rules this module adds where PROTOCOL.md is silent:

* `relay_control` parameters: `channel` is an integer 1..64 (an integral
  float such as 3.0 is taken as 3) or "all"; `state` is true or false;
  `command` is "on", "off" or "toggle"; given both, they must agree. "all"
  takes on/off only (toggling every channel has no single state to confirm).
  Unknown extra parameters are ignored, as everywhere in the protocol.
* With `duration` (milliseconds, a finite number > 0; null means none) the
  command is a hold: heartbeats only, no relays/set. A hold switches a
  relay on, so it needs one numbered channel and state true / command "on".
* Retries: `on` and `off` may be sent again (idempotent). Never a toggle,
  never a hold (a momentary press, e.g. a starter or a horn, must not
  happen twice) and never another command type (the firmware neither
  answers nor reads `command_id`, so a repeated `reboot` would reboot twice).
* Confirmation: `on`/`off` succeed on a relays/state showing the state
  (every reported channel for "all"); a toggle on a relays/state showing the
  channel opposite to its state known before sending (unknown before: no
  confirmation); holds and other commands are never confirmed by a state.
* Heartbeats go at QoS 0: each is superseded by the next one 250 ms later
  and the relay tolerates 1 s without one, so a lost heartbeat costs
  nothing; a QoS 1 heartbeat queued in the session could instead be
  delivered after a reconnect and switch a released relay on again.
  relays/set and commands/... go at QoS 1, never retained.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

import orjson

from protocol.codec import type_name
from protocol.fw22_inbound import PREFIX
from protocol.timestamps import iso
from protocol.topics import is_valid_uuid
from protocol.values import SCHEMA, CommandSpec, Publication, Rejected

PROTOCOL_VERSION = "2.2.0"
MAX_PAYLOAD = 512  # the relay's receive buffer: every payload must be shorter
COMMAND_QOS = 1
HEARTBEAT_QOS = 0
MAX_CHANNEL = 64
RELAY_COMMANDS = ("on", "off", "toggle")
RELAY_CONTROL = "relay_control"

_COMMAND_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_RESERVED = ("protocol_version", "command_id")


class PlanKind(str, Enum):
    """What a 2.2 command publishes; the value is the topic below the device."""

    RELAY_SET = "relays/set"
    HOLD = "relays/heartbeat"
    OTHER = "commands"


@dataclass(frozen=True)
class Fw22Plan:
    """How one `commands` row is carried out on a 2.2 device.

    `channel` is a relay number or "all"; `command` the relays/set word (a
    hold is "on"); `hold_s` the hold duration in seconds (holds only);
    `expected_state` the state a relays/state must show for success (None
    for a toggle, a hold, another type: see `confirmed_by`); `parameters`
    the extra fields of another command type (read-only).
    """

    kind: PlanKind
    device_uuid: str
    command_id: str
    command_type: str
    channel: int | str | None = None
    command: str | None = None
    hold_s: float | None = None
    retry_allowed: bool = False
    expected_state: bool | None = None
    parameters: Mapping[str, Any] | None = None

    def publication(self, gateway_id: str) -> Publication | None:
        """The one publication of a relays/set or commands/... plan; None for
        a hold, whose heartbeats come from `heartbeat_publication`."""
        if self.kind is PlanKind.RELAY_SET:
            assert self.channel is not None and self.command is not None
            return relay_set_publication(self.device_uuid, self.channel, self.command, self.command_id, gateway_id)
        if self.kind is PlanKind.OTHER:
            return other_command_publication(self.device_uuid, self.command_type, self.command_id, self.parameters)
        return None

    def confirmed_by(self, states: Mapping[int, bool], before: Mapping[int, bool] | None = None) -> bool:
        """Whether relay states reported after sending confirm success.

        `before` is what the gateway knew of the channels when it sent the
        command; only a toggle needs it."""
        if self.kind is not PlanKind.RELAY_SET:
            return False
        if self.command == "toggle":
            if before is None or self.channel not in before or self.channel not in states:
                return False
            return states[self.channel] is (not before[self.channel])  # type: ignore[index]
        if self.channel == "all":
            return bool(states) and all(state is self.expected_state for state in states.values())
        return self.channel in states and states[self.channel] is self.expected_state  # type: ignore[index]


# --- encoders ---------------------------------------------------------------


def relay_set_publication(uuid: str, channel: int | str, command: str, command_id: str, gateway_id: str) -> Publication:
    """`autocore/devices/{uuid}/relays/set`: switch a channel (or "all")."""
    _check_uuid(uuid)
    _check_channel(channel, allow_all=True)
    if command not in RELAY_COMMANDS:
        raise ValueError(f"command must be one of {', '.join(RELAY_COMMANDS)}, got {command!r}")
    payload = {
        "protocol_version": PROTOCOL_VERSION,
        "channel": channel,
        "command": command,
        "momentary": False,
        "source": _text("gateway_id", gateway_id),
        "user": "gateway",
        "command_id": _text("command_id", command_id),
    }
    return _publication(f"{PREFIX}/devices/{uuid}/relays/set", payload, COMMAND_QOS)


def heartbeat_publication(uuid: str, channel: int, sequence: int, gateway_id: str, now: float) -> Publication:
    """`autocore/devices/{uuid}/relays/heartbeat`: one beat of a hold
    (`sequence` 1, 2, ... within the hold; `now` the gateway's time)."""
    _check_uuid(uuid)
    _check_channel(channel, allow_all=False)
    if isinstance(sequence, bool) or not isinstance(sequence, int) or sequence < 1:
        raise ValueError(f"sequence must be an integer from 1, got {sequence!r}")
    if isinstance(now, bool) or not isinstance(now, (int, float)) or not math.isfinite(now):
        raise ValueError(f"now must be epoch seconds, got {now!r}")
    gateway = _text("gateway_id", gateway_id)
    payload = {
        "protocol_version": PROTOCOL_VERSION,
        "uuid": gateway,
        "timestamp": iso(now),
        "channel": channel,
        "source_uuid": gateway,
        "target_uuid": uuid,
        "sequence": sequence,
    }
    return _publication(f"{PREFIX}/devices/{uuid}/relays/heartbeat", payload, HEARTBEAT_QOS)


def other_command_publication(
    uuid: str, command_type: str, command_id: str, parameters: Mapping[str, Any] | None
) -> Publication:
    """`autocore/devices/{uuid}/commands/{command_type}`: any other command,
    its parameters as fields beside `command` and `command_id`."""
    _check_uuid(uuid)
    if not isinstance(command_type, str) or not _COMMAND_TYPE.fullmatch(command_type):
        raise ValueError(f"command_type must be one topic level of A-Z a-z 0-9 _ -, got {command_type!r}")
    payload: dict[str, Any] = {
        "protocol_version": PROTOCOL_VERSION,
        "command": command_type,
        "command_id": _text("command_id", command_id),
    }
    for key, value in (parameters or {}).items():
        if key in payload:
            if key == "command" and value == command_type:
                continue
            raise ValueError(f"parameter {key!r} would overwrite the protocol's own field")
        payload[key] = value
    return _publication(f"{PREFIX}/devices/{uuid}/commands/{command_type}", payload, COMMAND_QOS)


def _publication(topic: str, payload: dict[str, Any], qos: int) -> Publication:
    try:
        data = orjson.dumps(payload)
    except TypeError as exc:  # orjson.JSONEncodeError included
        raise ValueError(f"payload is not JSON: {exc}") from None
    if len(data) >= MAX_PAYLOAD:
        raise ValueError(f"payload of {len(data)} bytes does not fit the 2.2 relay's {MAX_PAYLOAD}-byte buffer")
    return Publication(topic=topic, payload=data, qos=qos, retain=False)


def _check_uuid(uuid: str) -> None:
    if not isinstance(uuid, str) or not is_valid_uuid(uuid):
        raise ValueError(f"not a device uuid: {uuid!r}")


def _check_channel(channel: Any, *, allow_all: bool) -> None:
    if allow_all and channel == "all":
        return
    if isinstance(channel, bool) or not isinstance(channel, int) or not 1 <= channel <= MAX_CHANNEL:
        raise ValueError(f"channel must be 1..{MAX_CHANNEL}{' or all' if allow_all else ''}, got {channel!r}")


def _show(value: Any, limit: int = 60) -> str:
    """A value for an error message: its repr, cut short."""
    try:
        text = repr(value)
    except ValueError:  # an integer too long to print
        return type_name(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be non-empty text, got {value!r}")
    return value


# --- planning ---------------------------------------------------------------


def plan_command(spec: CommandSpec) -> Fw22Plan:
    """The plan for a `commands` row addressed to a 2.2 device.

    Raises Rejected(SCHEMA, detail) for parameters a 2.2 board cannot take;
    the detail is meant for the row's `error_message`.
    """
    if not isinstance(spec.device_uuid, str) or not is_valid_uuid(spec.device_uuid):
        raise Rejected(SCHEMA, f"device_uuid: {_show(spec.device_uuid)} is not a device uuid")
    params = _parameters(spec.parameters)
    command_id = str(spec.id)
    if spec.topic != "command":
        raise Rejected(
            SCHEMA,
            f"topic: {_show(spec.topic)} is a v1 form; a 2.2 board takes topic 'command' "
            '(relay_control with one {"channel", "state"} per command)',
        )
    if spec.command_type == RELAY_CONTROL:
        return _plan_relay(spec.device_uuid, command_id, params)
    if not isinstance(spec.command_type, str) or not _COMMAND_TYPE.fullmatch(spec.command_type):
        raise Rejected(SCHEMA, f"command_type: {_show(spec.command_type)} must be one topic level of A-Z a-z 0-9 _ - (1 to 64)")
    for key in _RESERVED:
        if key in params:
            raise Rejected(SCHEMA, f"parameters.{key}: set by the gateway, not a parameter")
    if "command" in params and params["command"] != spec.command_type:
        raise Rejected(SCHEMA, f"parameters.command: {_show(params['command'])} disagrees with command_type {spec.command_type!r}")
    extra = {key: value for key, value in params.items() if key != "command"}
    plan = Fw22Plan(
        kind=PlanKind.OTHER,
        device_uuid=spec.device_uuid,
        command_id=command_id,
        command_type=spec.command_type,
        parameters=extra,
    )
    try:
        plan.publication("")
    except ValueError as exc:
        raise Rejected(SCHEMA, f"parameters: {exc}") from None
    return plan


def _parameters(raw: Any) -> dict[str, Any]:
    if raw is None:
        return {}
    if isinstance(raw, (str, bytes)):
        try:
            raw = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise Rejected(SCHEMA, "parameters: not valid JSON") from None
    if not isinstance(raw, Mapping):
        raise Rejected(SCHEMA, f"parameters: expected an object, got {type_name(raw)}")
    return dict(raw)


def _plan_relay(uuid: str, command_id: str, params: dict[str, Any]) -> Fw22Plan:
    channel = _relay_channel(params)
    word = _relay_word(params)
    base: dict[str, Any] = {"device_uuid": uuid, "command_id": command_id, "command_type": RELAY_CONTROL,
                            "channel": channel}
    if params.get("duration") is not None:  # null: not a hold
        hold_s = _duration_s(params["duration"])
        if channel == "all":
            raise Rejected(SCHEMA, 'parameters.duration: a hold keeps one relay on; channel "all" cannot be held')
        if word != "on":
            raise Rejected(SCHEMA, f'parameters.duration: a hold keeps a relay on; it needs state true or command "on", got {word!r}')
        return Fw22Plan(kind=PlanKind.HOLD, command="on", hold_s=hold_s, retry_allowed=False, **base)
    if channel == "all" and word == "toggle":
        raise Rejected(SCHEMA, 'parameters.command: toggle takes one channel number, not "all"')
    return Fw22Plan(
        kind=PlanKind.RELAY_SET,
        command=word,
        retry_allowed=word != "toggle",
        expected_state=None if word == "toggle" else word == "on",
        **base,
    )


def _relay_channel(params: Mapping[str, Any]) -> int | str:
    if "channel" not in params:
        hint = " (a 2.2 board names the relay `channel`, not `relay_id`)" if "relay_id" in params else ""
        raise Rejected(SCHEMA, f'parameters.channel: required, a relay number or "all"{hint}')
    channel = params["channel"]
    if channel == "all":
        return "all"
    if isinstance(channel, float) and channel.is_integer():
        channel = int(channel)
    if isinstance(channel, bool) or not isinstance(channel, int) or not 1 <= channel <= MAX_CHANNEL:
        shown = _show(channel) if isinstance(channel, (int, float, str)) and not isinstance(channel, bool) else type_name(channel)
        raise Rejected(SCHEMA, f'parameters.channel: expected a relay number 1..{MAX_CHANNEL} or "all", got {shown}')
    return channel


def _relay_word(params: Mapping[str, Any]) -> str:
    has_state, has_command = "state" in params, "command" in params
    if not has_state and not has_command:
        raise Rejected(SCHEMA, 'parameters: relay_control needs "state" (true or false) or "command" ("on", "off", "toggle")')
    from_state = from_command = None
    if has_state:
        state = params["state"]
        if not isinstance(state, bool):
            raise Rejected(SCHEMA, f"parameters.state: expected true or false, got {type_name(state)}")
        from_state = "on" if state else "off"
    if has_command:
        command = params["command"]
        if command not in RELAY_COMMANDS:
            shown = _show(command) if isinstance(command, str) else type_name(command)
            raise Rejected(SCHEMA, f'parameters.command: expected "on", "off" or "toggle", got {shown}')
        from_command = command
    if from_state and from_command and from_state != from_command:
        shown = "true" if from_state == "on" else "false"
        raise Rejected(SCHEMA, f"parameters: state {shown} and command {from_command!r} disagree")
    return from_command or from_state  # type: ignore[return-value]


def _duration_s(duration: Any) -> float:
    if isinstance(duration, bool) or not isinstance(duration, (int, float)):
        raise Rejected(SCHEMA, f"parameters.duration: expected milliseconds (a number), got {type_name(duration)}")
    try:
        seconds = float(duration) / 1000.0
    except OverflowError:
        seconds = math.inf
    if not math.isfinite(seconds) or seconds <= 0:
        raise Rejected(SCHEMA, f"parameters.duration: expected a positive finite number of milliseconds, got {_show(duration)}")
    return seconds
