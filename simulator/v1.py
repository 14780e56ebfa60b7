"""Simulated v1 devices (PROTOCOL.md, the native protocol).

Every v1 device: announces at every boot and whenever `{prefix}/gateway/status`
turns online; publishes `{"status": "online", "boot_id": N}` (QoS 1,
retained) on each connection and sets the offline form for its boot as its
Last Will; sends a Status report every `status_interval` seconds (QoS 0);
numbers its telemetry with `seq` from 1 within a boot; answers commands in
the encoding it speaks, executing a `command_id` at most once.

Per device type (`kind`), the telemetry:

| kind | sections | every |
|---|---|---|
| can_gateway | can_data signals (and one raw frame in every tenth message) | 1 / can_hz (10 Hz) |
| sensor_board | analog_sensors, readings | telemetry_interval |
| mobile | gps, system_status, battery_voltage | telemetry_interval |
| relay_board | RelayStatus on relay/status; readings in telemetry | relay_status_interval; 5 x telemetry_interval |
| display_small | system_status, brightness | 5 x telemetry_interval |

Rules this module adds where PROTOCOL.md is silent:

* `boot_id` is the wall-clock second of the boot (at least the previous
  boot's + 1): a simulator started again against the same database must not
  reuse a (uuid, boot_id, seq) key, or its telemetry would be taken for
  redeliveries and dropped.
* The command dedup memory (the last 1,000 ids) survives a reboot, as if
  kept in flash: a command retried after a reboot is not executed twice.
* A command is executed when it arrives; its Response leaves after the
  configured latency. A repeat answered while the first answer is still
  pending gets nothing extra (the answer is on its way). Slow command types
  answer `accepted` first and the final Response `slow_time` later.
* Command types: `relay_control` (relay_board: `relay_id`, `state`,
  optional `duration` ms after which the relay reverts), a RelayCommand on
  `relay/command` (relay_board), `reboot` (answers, then reboots),
  `ping`/`get_status`, `set_config` (`status_interval` is applied),
  `set_brightness`/`show_message` (display_small), the slow types. Anything
  else fails with "unsupported command_type".
"""

from __future__ import annotations

import hashlib
import random
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from simulator.base import Every, SimDevice, Walk, earliest, publish_if_online
from protocol.codec import decode as decode_payload
from protocol.codec import encode
from protocol.timestamps import iso
from protocol.topics import broadcast_topic, device_topic, gateway_status_topic
from protocol.values import Encoding, Kind, Publication, Rejected

V1_KINDS = ("can_gateway", "sensor_board", "mobile", "relay_board", "display_small")
FIRMWARE_VERSION = "1.4.2"
DEDUP_MEMORY = 1000
MAX_INBOUND = 65536

CAPABILITIES = {
    "can_gateway": ["can_bus", "obd2"],
    "sensor_board": ["analog_sensors", "temperature"],
    "mobile": ["gps", "cellular"],
    "relay_board": ["relay", "current_sense"],
    "display_small": ["display", "touch"],
}


@dataclass(frozen=True)
class V1Options:
    prefix: str = "autocore"
    status_interval: float = 5.0
    telemetry_interval: float = 1.0
    can_hz: float = 10.0
    relay_status_interval: float = 5.0
    telemetry_qos: int = 1
    status_qos: int = 0
    latency: tuple[float, float] = (0.0, 0.0)  # seconds, uniform in [low, high]
    failure_rate: float = 0.0
    slow_commands: frozenset[str] = frozenset({"calibrate", "firmware_update", "self_test"})
    slow_time: float = 2.0
    relay_count: int = 16
    reboot_delay: float = 0.3  # after answering a `reboot` command


@dataclass
class _Relay:
    relay_id: int
    state: bool = False
    switch_count: int = 0
    current: Walk = field(default_factory=lambda: Walk(0.8, 0.05, 0.0, 10.0))
    temperature: Walk = field(default_factory=lambda: Walk(35.0, 0.3, 20.0, 80.0))


@dataclass
class _Command:
    """What the device remembers of a command_id."""

    last: Publication | None = None  # the last Response sent for it
    final: bool = False


class V1Device(SimDevice):
    dialect = "v1"

    def __init__(
        self,
        uuid: str,
        kind: str,
        options: V1Options,
        rng: random.Random,
        now: float,
        *,
        encoding: Encoding = Encoding.JSON,
        index: int = 1,
    ) -> None:
        if kind not in V1_KINDS:
            raise ValueError(f"unknown v1 device kind {kind!r}; one of {', '.join(V1_KINDS)}")
        super().__init__(uuid, rng, now)
        self.kind = kind
        self.options = options
        self.encoding = encoding
        self.index = index
        self.boot_id = int(now)
        self.seq = 0
        self.status_interval = options.status_interval
        self.status_every = Every(self.status_interval, now + self.status_interval)
        self.telemetry_every = Every(self._telemetry_period(), now + self._telemetry_period())
        self.relay_every = Every(options.relay_status_interval, now + options.relay_status_interval)
        self.relays = [_Relay(i) for i in range(1, options.relay_count + 1)] if kind == "relay_board" else []
        self.brightness = 80
        self.commands: OrderedDict[str, _Command] = OrderedDict()
        self.gateway_status: str | None = None
        self.announced_this_boot = False
        self.last_restart_reason = "power_on"
        self._walks = _walks(kind)
        self._topics = {k: device_topic(options.prefix, uuid, k) for k in (
            Kind.ANNOUNCE, Kind.STATUS, Kind.TELEMETRY, Kind.RELAY_STATUS, Kind.RESPONSE, Kind.COMMAND,
            Kind.RELAY_COMMAND)}
        self._gateway_status_topic = gateway_status_topic(options.prefix)
        self._broadcast_topic = broadcast_topic(options.prefix)

    # -- topics ------------------------------------------------------------

    def topic(self, kind: Kind) -> str:
        return self._topics[kind]

    def subscriptions(self) -> list[tuple[str, int]]:
        return [
            (self.topic(Kind.COMMAND), 2),
            (self.topic(Kind.RELAY_COMMAND), 2),
            (self._gateway_status_topic, 1),
            (self._broadcast_topic, 1),
        ]

    def _pub(self, kind: Kind, payload: dict[str, Any], qos: int, retain: bool = False) -> Publication:
        return Publication(self.topic(kind), encode(payload, self.encoding), qos, retain)

    def _ts(self, now: float) -> str | float:
        # JSON devices write ISO text, MessagePack devices epoch seconds: both are valid.
        return iso(now) if self.encoding is Encoding.JSON else round(now, 3)

    # -- connection and boot -------------------------------------------------

    def will(self) -> Publication:
        return self._pub(Kind.STATUS, {"status": "offline", "boot_id": self.boot_id}, qos=1, retain=True)

    def connected(self, now: float) -> list[Publication]:
        super().connected(now)
        out = [self._pub(Kind.STATUS, {"status": "online", "boot_id": self.boot_id, "timestamp": self._ts(now)},
                         qos=1, retain=True)]
        if not self.announced_this_boot:
            out.append(self.announce(now))
        return out

    def reboot(self, now: float) -> None:
        super().reboot(now)
        self.boot_id = max(self.boot_id + 1, int(now))
        self.seq = 0
        self.announced_this_boot = False
        self.gateway_status = None
        self.last_restart_reason = "reboot"
        for relay in self.relays:
            relay.state = False
        self.status_every.restart(now)
        self.telemetry_every.restart(now)
        self.relay_every.restart(now)

    def announce(self, now: float) -> Publication:
        self.announced_this_boot = True
        self.counters["announce"] += 1
        payload: dict[str, Any] = {
            "uuid": self.uuid,
            "device_type": self.kind,
            "firmware_version": FIRMWARE_VERSION,
            "capabilities": CAPABILITIES[self.kind],
            "ip_address": f"192.168.{4 + self.index // 250}.{10 + self.index % 250}",
            "mac_address": _mac(self.uuid),
            "hardware_revision": "v2.1",
            "serial_number": f"ESP32-{self.index:05d}",
            "name": f"{self.kind.replace('_', ' ')} {self.index}",
            "boot_id": self.boot_id,
            "status_interval": self.status_interval,
            "timestamp": self._ts(now),
        }
        if self.relays:
            payload["relay_count"] = len(self.relays)
        return self._pub(Kind.ANNOUNCE, payload, qos=1)

    # -- periodic ------------------------------------------------------------

    def _telemetry_period(self) -> float:
        o = self.options
        return {
            "can_gateway": 1.0 / o.can_hz,
            "relay_board": 5.0 * o.telemetry_interval,
            "display_small": 5.0 * o.telemetry_interval,
        }.get(self.kind, o.telemetry_interval)

    def next_due(self) -> float | None:
        relay = self.relay_every.next_at if self.relays else None
        return earliest(super().next_due(), self.status_every.next_at, self.telemetry_every.next_at, relay)

    def tick(self, now: float) -> list[Publication]:
        out = super().tick(now)
        periodic = []
        if self.status_every.due(now):
            periodic.append(self.status_report(now))
        if self.telemetry_every.due(now):
            periodic.append(self.telemetry(now))
        if self.relays and self.relay_every.due(now):
            periodic.append(self.relay_status(now))
        return out + publish_if_online(self, periodic, "periodic")

    def status_report(self, now: float) -> Publication:
        rng = self.rng
        payload: dict[str, Any] = {
            "timestamp": self._ts(now),
            "boot_id": self.boot_id,
            "uptime": int(self.uptime(now)),
            "free_memory": 45000 + rng.randrange(0, 4000),
            "cpu_temperature": self._walks["cpu_temperature"].step(rng, 1),
            "wifi_signal": int(self._walks["wifi_signal"].step(rng, 0)),
            "errors": [],
            "last_restart_reason": self.last_restart_reason,
        }
        if self.kind == "mobile":
            payload["battery_level"] = self._walks["battery_level"].step(rng, 1)
        return self._pub(Kind.STATUS, payload, qos=self.options.status_qos)

    def telemetry(self, now: float) -> Publication:
        """The next telemetry message of this boot (seq + 1)."""
        self.seq += 1
        rng, w = self.rng, self._walks
        payload: dict[str, Any] = {"timestamp": self._ts(now), "seq": self.seq, "boot_id": self.boot_id}
        if self.kind == "can_gateway":
            payload["can_data"] = {"signals": {
                "RPM": {"value": int(w["rpm"].step(rng, 0)), "unit": "rpm", "can_id": "0x200"},
                "vehicle_speed": {"value": w["speed"].step(rng, 1), "unit": "km/h", "can_id": "0x201"},
                "coolant_temp": {"value": w["coolant"].step(rng, 1), "unit": "C", "can_id": "0x202"},
                "throttle": {"value": w["throttle"].step(rng, 1), "unit": "%", "can_id": "0x203"},
            }}
            if self.seq % 10 == 0:
                data = bytes(rng.randrange(256) for _ in range(8))
                payload["can_frames"] = [{
                    "id": "0x7e8",
                    "data": data if self.encoding is Encoding.MSGPACK else data.hex(),
                    "timestamp": round(now, 3),
                }]
        elif self.kind == "sensor_board":
            payload["analog_sensors"] = {
                "fuel_level": w["fuel"].step(rng, 1),
                "oil_pressure": w["oil"].step(rng, 1),
                "coolant_temp": w["coolant"].step(rng, 1),
                "battery_voltage": w["battery_voltage"].step(rng, 2),
            }
            payload["readings"] = [{"source": "sensor", "metric": "ambient_temp",
                                    "value": w["ambient"].step(rng, 1), "unit": "C"}]
        elif self.kind == "mobile":
            payload["gps"] = {
                "latitude": round(-23.5505 + w["lat"].step(rng, 5), 6),
                "longitude": round(-46.6333 + w["lon"].step(rng, 5), 6),
                "altitude": w["alt"].step(rng, 1),
                "speed": w["speed"].step(rng, 1),
                "heading": w["heading"].step(rng, 1),
                "satellites": rng.randrange(5, 13),
                "accuracy": w["accuracy"].step(rng, 1),
            }
            payload["system_status"] = {"cpu_temperature": w["cpu_temperature"].step(rng, 1),
                                        "wifi_signal": int(w["wifi_signal"].step(rng, 0))}
            payload["battery_voltage"] = w["battery_voltage"].step(rng, 2)
        elif self.kind == "relay_board":
            payload["readings"] = [
                {"source": "sensor", "metric": "supply_voltage", "value": w["battery_voltage"].step(rng, 2), "unit": "V"},
                {"source": "sensor", "metric": "board_temperature", "value": w["cpu_temperature"].step(rng, 1), "unit": "C"},
            ]
        else:  # display_small
            payload["system_status"] = {
                "cpu_temperature": w["cpu_temperature"].step(rng, 1),
                "memory_usage": int(w["memory"].step(rng, 0)),
                "wifi_signal": int(w["wifi_signal"].step(rng, 0)),
            }
            payload["brightness"] = self.brightness
        self.counters["telemetry"] += 1
        return self._pub(Kind.TELEMETRY, payload, qos=self.options.telemetry_qos)

    def relay_status(self, now: float) -> Publication:
        rng = self.rng
        relays = []
        for r in self.relays:
            relays.append({
                "relay_id": r.relay_id,
                "state": r.state,
                "current": r.current.step(rng) if r.state else 0.0,
                "voltage": round(12.0 + rng.uniform(-0.2, 0.3), 2),
                "temperature": r.temperature.step(rng, 1),
                "switch_count": r.switch_count,
            })
        power = round(sum(r["current"] * r["voltage"] for r in relays), 2)
        payload = {"timestamp": self._ts(now), "boot_id": self.boot_id, "relays": relays,
                   "power_consumption": power, "errors": []}
        return self._pub(Kind.RELAY_STATUS, payload, qos=1)

    # -- inbound ---------------------------------------------------------------

    def handle(self, topic: str, payload: bytes, now: float) -> list[Publication]:
        if topic == self._gateway_status_topic:
            return self._gateway_status(payload, now)
        if topic == self._broadcast_topic:
            self.counters["broadcast"] += 1
            return []
        if topic == self.topic(Kind.COMMAND):
            return self._command(payload, now, relay_command=False)
        if topic == self.topic(Kind.RELAY_COMMAND):
            return self._command(payload, now, relay_command=True)
        self.counters["unexpected_topic"] += 1
        return []

    def _gateway_status(self, payload: bytes, now: float) -> list[Publication]:
        try:
            obj, _ = decode_payload(payload, MAX_INBOUND)
        except Rejected:
            self.counters["bad_gateway_status"] += 1
            return []
        status = obj.get("status")
        previous, self.gateway_status = self.gateway_status, status
        # Announce when the gateway turns online, not on every heartbeat, and
        # not for the retained "online" met right after this boot's own announce.
        if status == "online" and previous != "online" and not (previous is None and self.announced_this_boot):
            return publish_if_online(self, [self.announce(now)], "announce")
        return []

    def _command(self, payload: bytes, now: float, relay_command: bool) -> list[Publication]:
        self.counters["commands_received"] += 1
        try:
            obj, _ = decode_payload(payload, MAX_INBOUND)
        except Rejected:
            self.counters["bad_command"] += 1
            return []
        raw_id = obj.get("command_id")
        if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)) or raw_id == "":
            self.counters["bad_command"] += 1
            return []
        command_id = str(raw_id)
        known = self.commands.get(command_id)
        if known is not None:
            # Executed once already: answer the same again, never act again.
            self.counters["duplicates"] += 1
            self.commands.move_to_end(command_id)
            return [known.last] if known.last is not None else []
        record = self.commands[command_id] = _Command()
        while len(self.commands) > DEDUP_MEMORY:
            self.commands.popitem(last=False)
        self.counters["commands_executed"] += 1
        command_type = "relay_command" if relay_command else obj.get("command_type")
        parameters = obj.get("parameters") if isinstance(obj.get("parameters"), dict) else {}
        success, result, error = self._execute(command_type, parameters, obj, now)
        if success and self.rng.random() < self.options.failure_rate:
            success, result, error = False, None, "simulated failure"
        low, high = self.options.latency
        delay = low if high <= low else self.rng.uniform(low, high)
        slow = command_type in self.options.slow_commands
        took = delay + (self.options.slow_time if slow else 0.0)
        final = self._response(command_id, success, result, error, took, now + took)
        out: list[Publication] = []
        if slow:
            accepted = self._pub(Kind.RESPONSE, {"command_id": command_id, "timestamp": self._ts(now),
                                                 "status": "accepted", "boot_id": self.boot_id}, qos=1)
            out += self._send_at(record, accepted, now + delay, now, final=False)
            out += self._send_at(record, final, now + delay + self.options.slow_time, now, final=True)
        else:
            out += self._send_at(record, final, now + delay, now, final=True)
        if command_type == "reboot" and success:
            self.later(now + delay + self.options.reboot_delay, self._reboot_requested)
        return out

    def _send_at(self, record: _Command, response: Publication, at: float, now: float, final: bool) -> list[Publication]:
        def send(_now: float) -> list[Publication]:
            record.last, record.final = response, final
            self.counters["responses"] += 1
            return publish_if_online(self, [response], "response")

        if at <= now:
            return send(now)
        self.later(at, send)
        return []

    def _reboot_requested(self, now: float) -> list[Publication]:
        self.wants_reboot = True
        return []

    def _response(self, command_id: str, success: bool, result: Any, error: str | None, took: float,
                  at: float) -> Publication:
        payload = {
            "command_id": command_id,
            "timestamp": self._ts(at),
            "success": success,
            "execution_time": round(took, 3),
            "result": result,
            "error_message": error,
            "boot_id": self.boot_id,
        }
        return self._pub(Kind.RESPONSE, payload, qos=1)

    def _execute(self, command_type: Any, params: dict, obj: dict, now: float) -> tuple[bool, Any, str | None]:
        if command_type == "relay_command":
            return self._relay_command(obj.get("relays"), now)
        if command_type == "relay_control":
            return self._relay_control(params, now)
        if command_type in ("ping", "get_status"):
            return True, {"uptime": int(self.uptime(now)), "boot_id": self.boot_id, "seq": self.seq}, None
        if command_type == "reboot":
            return True, {"rebooting": True}, None
        if command_type == "set_config":
            interval = params.get("status_interval")
            if interval is not None:
                if isinstance(interval, bool) or not isinstance(interval, (int, float)) or interval <= 0:
                    return False, None, "status_interval must be a positive number"
                self.status_interval = float(interval)
                self.status_every = Every(self.status_interval, now + self.status_interval)
            return True, {"applied": params}, None
        if command_type == "set_brightness" and self.kind == "display_small":
            level = params.get("brightness")
            if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 <= level <= 100:
                return False, None, "brightness must be 0..100"
            self.brightness = int(level)
            return True, {"brightness": self.brightness}, None
        if command_type == "show_message" and self.kind == "display_small":
            return True, {"shown": str(params.get("text", ""))[:64]}, None
        if command_type in self.options.slow_commands:
            return True, {"completed": command_type}, None
        return False, None, f"unsupported command_type {command_type!r} on a {self.kind}"

    # -- relays -------------------------------------------------------------------

    def _relay(self, relay_id: Any) -> _Relay | None:
        if isinstance(relay_id, bool) or not isinstance(relay_id, int):
            return None
        return self.relays[relay_id - 1] if 1 <= relay_id <= len(self.relays) else None

    def _switch(self, relay: _Relay, state: bool) -> None:
        if relay.state != state:
            relay.state = state
            relay.switch_count += 1

    def _hold_revert(self, relay: _Relay, state: bool, duration_ms: Any, now: float) -> str | None:
        if duration_ms is None:
            return None
        if isinstance(duration_ms, bool) or not isinstance(duration_ms, (int, float)) or duration_ms <= 0:
            return "duration must be a positive number of milliseconds"

        def revert(at: float) -> list[Publication]:
            self._switch(relay, not state)
            return publish_if_online(self, [self.relay_status(at)], "relay_status")

        self.later(now + duration_ms / 1000.0, revert)
        return None

    def _relay_control(self, params: dict, now: float) -> tuple[bool, Any, str | None]:
        if not self.relays:
            return False, None, f"relay_control: a {self.kind} has no relays"
        relay = self._relay(params.get("relay_id"))
        if relay is None:
            return False, None, f"relay_id must be 1..{len(self.relays)}"
        state = params.get("state")
        if not isinstance(state, bool):
            return False, None, "state must be true or false"
        problem = self._hold_revert(relay, state, params.get("duration"), now)
        if problem:
            return False, None, problem
        self._switch(relay, state)
        self.later(now, lambda at: publish_if_online(self, [self.relay_status(at)], "relay_status"))
        return True, {"relay_id": relay.relay_id, "state": relay.state}, None

    def _relay_command(self, actions: Any, now: float) -> tuple[bool, Any, str | None]:
        if not self.relays:
            return False, None, f"relay/command: a {self.kind} has no relays"
        if not isinstance(actions, list) or not actions:
            return False, None, "relays must be a non-empty list"
        planned = []
        for action in actions:
            relay = self._relay(action.get("relay_id")) if isinstance(action, dict) else None
            word = action.get("action") if isinstance(action, dict) else None
            if relay is None or word not in ("turn_on", "turn_off", "toggle"):
                return False, None, f"bad relay action {action!r}"
            planned.append((relay, word, action.get("duration")))
        done = []
        for relay, word, duration in planned:
            state = True if word == "turn_on" else False if word == "turn_off" else not relay.state
            problem = self._hold_revert(relay, state, duration, now)
            if problem:
                return False, None, problem
            self._switch(relay, state)
            done.append({"relay_id": relay.relay_id, "state": relay.state})
        self.later(now, lambda at: publish_if_online(self, [self.relay_status(at)], "relay_status"))
        return True, {"relays": done}, None


def _mac(uuid: str) -> str:
    digest = hashlib.sha1(uuid.encode()).digest()
    return ":".join(f"{b:02X}" for b in (b"\x24\x0a" + digest[:4]))


def _walks(kind: str) -> dict[str, Walk]:
    return {
        "cpu_temperature": Walk(45.0, 0.4, 20.0, 85.0),
        "wifi_signal": Walk(-60.0, 2.0, -90.0, -30.0),
        "battery_level": Walk(87.0, 0.2, 5.0, 100.0),
        "battery_voltage": Walk(12.6, 0.05, 11.0, 14.6),
        "rpm": Walk(2500.0, 120.0, 700.0, 6500.0),
        "speed": Walk(65.0, 2.0, 0.0, 180.0),
        "coolant": Walk(88.0, 0.3, 60.0, 110.0),
        "throttle": Walk(22.0, 3.0, 0.0, 100.0),
        "fuel": Walk(67.0, 0.05, 0.0, 100.0),
        "oil": Walk(45.0, 1.0, 10.0, 80.0),
        "ambient": Walk(24.0, 0.2, -20.0, 50.0),
        "lat": Walk(0.0, 0.0002, -0.05, 0.05),
        "lon": Walk(0.0, 0.0002, -0.05, 0.05),
        "alt": Walk(760.0, 0.5, 700.0, 820.0),
        "heading": Walk(180.0, 5.0, 0.0, 359.9),
        "accuracy": Walk(3.0, 0.3, 1.0, 15.0),
        "memory": Walk(68.0, 1.0, 30.0, 95.0),
    }
