"""What to simulate: the fleet's configuration and the devices it makes."""

from __future__ import annotations

import ipaddress
import random
import socket
from dataclasses import dataclass, field
from typing import Mapping

from simulator.base import SimDevice
from simulator.fw22 import FW22_KINDS, Fw22Display, Fw22Options, Fw22Relay, fw22_uuid
from simulator.v1 import V1_KINDS, V1Device, V1Options
from protocol.topics import is_valid_uuid
from protocol.values import Encoding

KINDS = V1_KINDS + FW22_KINDS
DEFAULT_FLEET = "can_gateway=1,sensor_board=1,mobile=1,relay_board=1,display_small=1,fw22_relay=1,fw22_display=1"
PER_DEVICE_LIMIT = 200  # `auto`: one connection per device up to this many devices


def parse_fleet(text: str) -> dict[str, int]:
    """`can_gateway=2,fw22_relay=1` -> {"can_gateway": 2, "fw22_relay": 1}.
    ValueError naming the part that is wrong."""
    counts: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, number = part.partition("=")
        name = name.strip()
        if not sep:
            raise ValueError(f"expected KIND=COUNT, got {part!r}")
        if name not in KINDS:
            raise ValueError(f"unknown device kind {name!r}; kinds: {', '.join(KINDS)}")
        try:
            count = int(number)
        except ValueError:
            raise ValueError(f"count of {name} must be a whole number, got {number.strip()!r}") from None
        if count < 0:
            raise ValueError(f"count of {name} must be 0 or more, got {count}")
        counts[name] = counts.get(name, 0) + count
    if sum(counts.values()) == 0:
        raise ValueError("the fleet has no devices")
    return counts


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine (a loopback address or a name
    that resolves only to loopback addresses)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


@dataclass(frozen=True)
class FleetConfig:
    devices: Mapping[str, int] = field(default_factory=lambda: parse_fleet(DEFAULT_FLEET))
    duration: float = 60.0
    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None
    username_per_device: bool = False  # v1 devices log in as their uuid (the ACL's %u)
    fw22_username: str | None = None  # the 2.2 boards' shared account (default: username)
    fw22_password: str | None = None
    tls_ca: str | None = None  # CA file: TLS on
    allow_remote: bool = False
    connections: str = "auto"  # auto | per-device | shared
    shared_connections: int = 4
    keepalive: int = 30
    v1: V1Options = field(default_factory=V1Options)
    fw22: Fw22Options = field(default_factory=Fw22Options)
    msgpack_fraction: float = 0.25
    reboot_every: float | None = None
    boot_time: float = 1.0
    late_will: bool = False
    flap_every: float | None = None
    flap_down: float = 3.0
    flap_silent: bool = False
    clean_exit: bool = False
    seed: int = 1
    uuid_prefix: str = "sim"
    max_queued: int = 20000  # publications one connection may hold unsent before they are dropped

    def __post_init__(self) -> None:
        problems = []
        if self.duration <= 0:
            problems.append("duration must be greater than 0")
        if self.connections not in ("auto", "per-device", "shared"):
            problems.append("connections must be auto, per-device or shared")
        if self.shared_connections < 1:
            problems.append("shared connections must be at least 1")
        if not 0.0 <= self.msgpack_fraction <= 1.0:
            problems.append("the MessagePack fraction must be between 0 and 1")
        if not 0.0 <= self.v1.failure_rate <= 1.0:
            problems.append("the failure rate must be between 0 and 1")
        for name in ("reboot_every", "flap_every"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                problems.append(f"{name.replace('_', '-')} must be greater than 0")
        if self.keepalive < 1:
            problems.append("keepalive must be at least 1 s")
        if not self.uuid_prefix or not is_valid_uuid(self.uuid_prefix + "-x"):
            problems.append("the uuid prefix must be letters, digits, - and _, starting with a letter or digit")
        if not self.allow_remote and not is_loopback(self.host):
            problems.append(f"{self.host} is not a loopback address; pass --allow-remote to drive a broker elsewhere")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def total(self) -> int:
        return sum(self.devices.values())

    @property
    def per_device(self) -> bool:
        if self.connections == "auto":
            return self.total <= PER_DEVICE_LIMIT
        return self.connections == "per-device"


def build_devices(config: FleetConfig, now: float) -> list[SimDevice]:
    """The fleet's devices, in the order of KINDS, numbered from 1 per kind.
    The same configuration gives the same uuids and encodings every time."""
    devices: list[SimDevice] = []
    picker = random.Random(config.seed)
    width = max(2, len(str(max(config.devices.values(), default=1))))
    serial = 0
    for kind in KINDS:
        for i in range(1, config.devices.get(kind, 0) + 1):
            serial += 1
            rng = random.Random(config.seed * 1_000_003 + serial)
            if kind in V1_KINDS:
                uuid = f"{config.uuid_prefix}-{kind.replace('_', '-')}-{i:0{width}d}"
                encoding = Encoding.MSGPACK if picker.random() < config.msgpack_fraction else Encoding.JSON
                devices.append(V1Device(uuid, kind, config.v1, rng, now, encoding=encoding, index=serial))
            elif kind == "fw22_display":
                uuid = fw22_uuid(f"{config.uuid_prefix}/{kind}/{i}")
                devices.append(Fw22Display(uuid, config.fw22, rng, now, index=i))
            else:
                uuid = fw22_uuid(f"{config.uuid_prefix}/{kind}/{i}")
                devices.append(Fw22Relay(uuid, config.fw22, rng, now, index=i,
                                         switching=kind == "fw22_relay_switching"))
    return devices
