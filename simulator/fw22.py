"""Simulated firmware 2.2 boards, as the AutoCore firmware in the field
behaves today (PROTOCOL.md, "Firmware 2.2 dialect"; issue 7).

**Relay board** (`fw22_relay`, ESP-IDF): on every connection the combined
status (`status: "online"`, QoS 1, retained) with `channels` = its relay
count; its Last Will is the offline form with `reason` and `last_seen` and
no `boot_id`. `relays/state` every 30 s (configurable) is its only other
sign of life. On `relays/set` it parses the payload and switches nothing; a
payload without `command` is rejected with `ERR_002` on
`autocore/errors/{uuid}/payload`, the payload echoed (as text, cut to 256
bytes like the firmware's buffer) in `context.command`. A heartbeat on
`relays/heartbeat` turns its channel on; 1 s after the last one the channel
turns off with a `safety_shutoff` event on `autocore/telemetry/relays/data`
and an `ERR_003` on `autocore/errors/{uuid}/heartbeat`.

The switching variant (`fw22_relay_switching`, or `switching=True`) does
switch on `relays/set` (`on`, `off`, `toggle`, a number or `all`) and
publishes `relays/state` at once after any change.

**Display** (`fw22_display`, PlatformIO): its status every 5 s at QoS 0,
retained, with nested `system`, `display` and `capabilities` objects, and
the same offline Last Will.

Neither board announces, answers a command, numbers its messages or knows
the time: the relay stamps seconds since boot as 1970 dates, the display a
made-up 2025-01-01 date plus its uptime.

Rules this module adds where PROTOCOL.md and the issue are silent:

* `relays/set` or a heartbeat with a channel outside 1..channels (or not a
  number, or "all" for a heartbeat) is rejected with `ERR_004` on
  `errors/{uuid}/payload`, echoed the same way; a payload that is not JSON
  with `ERR_001`. A `command` other than on/off/toggle is `ERR_002`.
* A channel switched on by heartbeats reports `relay_change` on
  `autocore/telemetry/relays/data`; so does every change the switching
  variant makes on `relays/set`.
* The relay reads `autocore/system/broadcast` and `commands/{type}` with the
  same parser: a payload without `command` (every broadcast) gets an
  `ERR_002`; anything else is ignored.
"""

from __future__ import annotations

import hashlib
import random
import time
from dataclasses import dataclass
from typing import Any

import orjson

from simulator.base import Every, SimDevice, Walk, earliest, publish_if_online
from protocol.fw22 import PREFIX, PROTOCOL_VERSION
from protocol.values import Publication

FW22_KINDS = ("fw22_relay", "fw22_relay_switching", "fw22_display")
ECHO_LIMIT = 256  # bytes of a rejected payload the relay echoes back
HEARTBEAT_HOLD_S = 1.0  # the relay releases a channel this long after its last heartbeat
MADE_UP_EPOCH = 1735689600  # 2025-01-01T00:00:00Z, the display's clock before NTP


@dataclass(frozen=True)
class Fw22Options:
    state_interval: float = 30.0  # relay: relays/state period
    display_interval: float = 5.0  # display: status period
    channels: int = 16
    hold_s: float = HEARTBEAT_HOLD_S


def fw22_uuid(seed_text: str) -> str:
    """A uuid as the boards make them from their MAC: `esp32-` and 16 hex digits."""
    return "esp32-" + hashlib.sha1(seed_text.encode()).hexdigest()[:16]


def _clock(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(max(0, int(seconds))))


def _json(obj: dict[str, Any]) -> bytes:
    return orjson.dumps(obj)


class Fw22Board(SimDevice):
    dialect = "fw22"
    board_type = "esp32"

    def __init__(self, uuid: str, options: Fw22Options, rng: random.Random, now: float, *, index: int = 1) -> None:
        super().__init__(uuid, rng, now)
        self.options = options
        self.index = index
        self.ip_address = f"192.168.5.{10 + index % 240}"
        self.connected_at = now
        self.wifi = Walk(-55.0, 2.0, -90.0, -30.0)

    def topic(self, level: str) -> str:
        return f"{PREFIX}/devices/{self.uuid}/{level}"

    def clock(self, now: float) -> str:
        """The board's idea of the time: it never synced."""
        return _clock(self.uptime(now))

    def will(self) -> Publication:
        payload = {"protocol_version": PROTOCOL_VERSION, "uuid": self.uuid, "status": "offline",
                   "reason": "connection_lost", "last_seen": self.clock(self.connected_at)}
        return Publication(self.topic("status"), _json(payload), qos=1, retain=True)

    def connected(self, now: float) -> list[Publication]:
        super().connected(now)
        self.connected_at = now
        return []

    def error(self, now: float, error_type: str, code: str, message: str, context: dict[str, Any],
              channel: int | None = None) -> Publication:
        payload: dict[str, Any] = {"protocol_version": PROTOCOL_VERSION, "uuid": self.uuid,
                                   "timestamp": self.clock(now), "error_code": code, "error_message": message}
        if channel is not None:
            payload["channel"] = channel
        payload["context"] = context
        self.counters[f"error.{code}"] += 1
        return Publication(f"{PREFIX}/errors/{self.uuid}/{error_type}", _json(payload), qos=1)


class Fw22Relay(Fw22Board):
    """The ESP-IDF relay board."""

    kind = "fw22_relay"
    board_type = "esp32_relay"

    def __init__(self, uuid: str, options: Fw22Options, rng: random.Random, now: float, *, index: int = 1,
                 switching: bool = False) -> None:
        super().__init__(uuid, options, rng, now, index=index)
        self.switching = switching
        if switching:
            self.kind = "fw22_relay_switching"
        self.board_id = index
        self.states: dict[int, bool] = {n: False for n in range(1, options.channels + 1)}
        self.holds: dict[int, _Hold] = {}
        self.state_every = Every(options.state_interval, now + options.state_interval)

    def subscriptions(self) -> list[tuple[str, int]]:
        return [
            (self.topic("relays/set"), 1),
            (self.topic("relays/heartbeat"), 0),
            (self.topic("commands/+"), 1),
            (f"{PREFIX}/system/broadcast", 1),
        ]

    def connected(self, now: float) -> list[Publication]:
        super().connected(now)
        self.state_every.restart(now)
        payload = {
            "protocol_version": PROTOCOL_VERSION, "uuid": self.uuid, "timestamp": self.clock(now),
            "status": "online", "firmware_version": "2.0.0", "ip_address": "0.0.0.0",
            "wifi_signal": int(self.wifi.step(self.rng, 0)), "free_memory": 198312 - self.rng.randrange(0, 2048),
            "uptime": int(self.uptime(now)), "board_id": self.board_id, "type": self.board_type,
            "channels": self.options.channels,
        }
        return [Publication(self.topic("status"), _json(payload), qos=1, retain=True)]

    def reboot(self, now: float) -> None:
        super().reboot(now)
        self.states = {n: False for n in self.states}
        self.holds.clear()

    def relays_state(self, now: float) -> Publication:
        payload = {"protocol_version": PROTOCOL_VERSION, "uuid": self.uuid, "timestamp": self.clock(now),
                   "board_id": self.board_id, "channels": {str(n): s for n, s in sorted(self.states.items())}}
        self.counters["relays_state"] += 1
        return Publication(self.topic("relays/state"), _json(payload), qos=1)

    def relay_event(self, now: float, event: str, channel: int, **extra: Any) -> Publication:
        payload = {"protocol_version": PROTOCOL_VERSION, "uuid": self.uuid, "timestamp": self.clock(now),
                   "event": event, "channel": channel, "state": self.states[channel], **extra}
        self.counters[f"event.{event}"] += 1
        return Publication(f"{PREFIX}/telemetry/relays/data", _json(payload), qos=1)

    # -- time ---------------------------------------------------------------

    def next_due(self) -> float | None:
        hold = min((h.release_at for h in self.holds.values()), default=None)
        return earliest(super().next_due(), self.state_every.next_at, hold)

    def tick(self, now: float) -> list[Publication]:
        out = super().tick(now)
        changed = False
        for channel in sorted(n for n, h in self.holds.items() if h.release_at <= now):
            hold = self.holds.pop(channel)
            self.states[channel] = False
            changed = True
            out.append(self.relay_event(now, "safety_shutoff", channel, reason="heartbeat_timeout",
                                        source_uuid=hold.source))
            out.append(self.error(now, "heartbeat", "ERR_003", "heartbeat timeout: channel switched off",
                                  {"channel": channel, "reason": "heartbeat_timeout",
                                   "last_sequence": hold.sequence, "source_uuid": hold.source}, channel=channel))
        if self.state_every.due(now) or (changed and self.switching):
            out.append(self.relays_state(now))
        return publish_if_online(self, out, "periodic")

    # -- inbound --------------------------------------------------------------

    def handle(self, topic: str, payload: bytes, now: float) -> list[Publication]:
        if topic == self.topic("relays/set"):
            return publish_if_online(self, self._relays_set(payload, now), "relays_set")
        if topic == self.topic("relays/heartbeat"):
            return publish_if_online(self, self._heartbeat(payload, now), "heartbeat")
        if topic.startswith(self.topic("commands/")) or topic == f"{PREFIX}/system/broadcast":
            return publish_if_online(self, self._other(topic, payload, now), "command")
        self.counters["unexpected_topic"] += 1
        return []

    def _parse(self, payload: bytes, now: float, where: str) -> tuple[dict | None, list[Publication]]:
        try:
            obj = orjson.loads(payload)
            if not isinstance(obj, dict):
                raise ValueError("not an object")
        except (orjson.JSONDecodeError, ValueError):
            return None, [self._reject(now, "ERR_001", "invalid JSON", payload, where)]
        return obj, []

    def _reject(self, now: float, code: str, message: str, payload: bytes, where: str) -> Publication:
        echoed = payload[:ECHO_LIMIT].decode("utf-8", "replace")
        return self.error(now, "payload", code, message, {"command": echoed, "topic": where})

    def _channel(self, value: Any, allow_all: bool) -> int | str | None:
        if allow_all and value == "all":
            return "all"
        if isinstance(value, bool) or not isinstance(value, int):
            return None
        return value if value in self.states else None

    def _relays_set(self, payload: bytes, now: float) -> list[Publication]:
        self.counters["relays_set"] += 1
        obj, errors = self._parse(payload, now, "relays/set")
        if obj is None:
            return errors
        command = obj.get("command")
        if command is None:
            return [self._reject(now, "ERR_002", "missing command field", payload, "relays/set")]
        if command not in ("on", "off", "toggle"):
            return [self._reject(now, "ERR_002", f"unknown command {str(command)[:16]!r}", payload, "relays/set")]
        channel = self._channel(obj.get("channel"), allow_all=True)
        if channel is None:
            return [self._reject(now, "ERR_004", "invalid channel", payload, "relays/set")]
        if not self.switching:
            self.counters["relays_set_ignored"] += 1  # today's firmware: parsed, nothing switched
            return []
        out = []
        for n in (sorted(self.states) if channel == "all" else [channel]):
            state = (not self.states[n]) if command == "toggle" else command == "on"
            if state != self.states[n]:
                self.states[n] = state
                if not state:
                    self.holds.pop(n, None)
                out.append(self.relay_event(now, "relay_change", n, source=str(obj.get("source", ""))[:64]))
        out.append(self.relays_state(now))
        return out

    def _heartbeat(self, payload: bytes, now: float) -> list[Publication]:
        self.counters["heartbeats"] += 1
        obj, errors = self._parse(payload, now, "relays/heartbeat")
        if obj is None:
            return errors
        channel = self._channel(obj.get("channel"), allow_all=False)
        if channel is None:
            return [self._reject(now, "ERR_004", "invalid channel", payload, "relays/heartbeat")]
        assert isinstance(channel, int)
        return self.heartbeat(channel, now, source=str(obj.get("source_uuid", obj.get("uuid", "")))[:64],
                              sequence=obj.get("sequence"))

    def heartbeat(self, channel: int, now: float, source: str = "", sequence: Any = None) -> list[Publication]:
        """One heartbeat for `channel` at `now`: on (if off), released
        `hold_s` after the last one."""
        hold = self.holds.get(channel)
        out = []
        if hold is None:
            hold = self.holds[channel] = _Hold(source=source)
            if not self.states[channel]:
                self.states[channel] = True
                out.append(self.relay_event(now, "relay_change", channel, source=source))
                if self.switching:
                    out.append(self.relays_state(now))
        hold.release_at = now + self.options.hold_s
        hold.sequence = sequence if isinstance(sequence, int) and not isinstance(sequence, bool) else None
        hold.source = source or hold.source
        return out

    def _other(self, topic: str, payload: bytes, now: float) -> list[Publication]:
        where = topic.split("/", 3)[-1] if topic.startswith(f"{PREFIX}/devices/") else "system/broadcast"
        obj, errors = self._parse(payload, now, where)
        if obj is None:
            return errors
        if obj.get("command") is None:
            return [self._reject(now, "ERR_002", "missing command field", payload, where)]
        self.counters["commands_ignored"] += 1
        return []


@dataclass
class _Hold:
    source: str = ""
    release_at: float = 0.0
    sequence: int | None = None


class Fw22Display(Fw22Board):
    """The PlatformIO display."""

    kind = "fw22_display"
    board_type = "esp32_display"

    def __init__(self, uuid: str, options: Fw22Options, rng: random.Random, now: float, *, index: int = 1) -> None:
        super().__init__(uuid, options, rng, now, index=index)
        self.status_every = Every(options.display_interval, now + options.display_interval)
        self.heap = Walk(182000.0, 900.0, 90000.0, 240000.0)
        self.page = "home"

    def clock(self, now: float) -> str:
        return _clock(MADE_UP_EPOCH + self.uptime(now))

    def connected(self, now: float) -> list[Publication]:
        super().connected(now)
        self.status_every.restart(now)
        return [self.status(now)]

    def next_due(self) -> float | None:
        return earliest(super().next_due(), self.status_every.next_at)

    def tick(self, now: float) -> list[Publication]:
        out = super().tick(now)
        if self.status_every.due(now):
            out.append(self.status(now))
        return publish_if_online(self, out, "periodic")

    def status(self, now: float) -> Publication:
        rng = self.rng
        free_heap = int(self.heap.step(rng, 0))
        payload = {
            "protocol_version": PROTOCOL_VERSION, "uuid": self.uuid, "timestamp": self.clock(now),
            "status": "online", "type": self.board_type, "device_type": "display",
            "firmware_version": "2.2.0", "ip_address": self.ip_address,
            "wifi_signal": int(self.wifi.step(rng, 0)), "uptime": int(self.uptime(now)),
            "system": {"free_heap": free_heap, "min_free_heap": free_heap - 20000, "cpu_freq_mhz": 240,
                       "psram_free": 4000000 - rng.randrange(0, 50000)},
            "display": {"brightness": 80, "width": 800, "height": 480, "backlight": True, "page": self.page},
            "capabilities": {"touch": True, "relay_control": True, "pages": 6},
        }
        self.counters["status"] += 1
        return Publication(self.topic("status"), _json(payload), qos=0, retain=True)
