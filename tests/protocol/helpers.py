"""Shared helpers for the protocol tests: the PROTOCOL.md examples and a
short way to decode one."""

from __future__ import annotations

import copy
from typing import Any

from protocol.codec import encode
from protocol.decode import decode_message
from protocol.values import Encoding, Message

PREFIX = "autocore"
UUID = "esp32-relay-01"
MAX = 65536

# PROTOCOL.md, v1 payloads, as written there ("…" filled in with a value).
ANNOUNCE = {
    "device_type": "relay_board", "firmware_version": "1.2.0",
    "capabilities": ["relay", "can_bus"], "ip_address": "192.168.1.100",
    "mac_address": "AA:BB:CC:DD:EE:FF", "relay_count": 16, "hardware_revision": "v2.1",
    "serial_number": "ESP32-001", "name": "Relays front", "boot_id": 17, "status_interval": 5,
}
STATUS_REPORT = {
    "timestamp": "2025-01-08T10:30:00Z", "uptime": 86400, "free_memory": 45312, "cpu_temperature": 45.5,
    "wifi_signal": -65, "battery_level": 87.2, "errors": [], "last_restart_reason": "normal",
}
STATUS_ONLINE = {"status": "online", "boot_id": 17}
STATUS_OFFLINE = {"status": "offline", "boot_id": 17}
TELEMETRY = {
    "timestamp": "2025-01-08T10:30:00Z", "seq": 981, "boot_id": 17,
    "can_data": {"signals": {"RPM": {"value": 2500, "unit": "rpm", "can_id": "0x200"}}},
    "analog_sensors": {"fuel_level": 67.8, "oil_pressure": 45.2},
    "system_status": {"cpu_temperature": 42.1, "memory_usage": 68, "wifi_signal": -58},
    "gps": {"latitude": -23.5505, "longitude": -46.6333, "altitude": 760, "speed": 65.4,
            "heading": 180.5, "satellites": 8, "accuracy": 3.2},
    "readings": [{"source": "sensor", "metric": "coolant_temp", "value": 88.5, "unit": "C"}],
    "can_frames": [{"id": "0x123", "data": "0a1b2c3d", "timestamp": 1736332200.125}],
}
RELAY_STATUS = {
    "timestamp": "2025-01-08T10:30:00Z",
    "relays": [{"relay_id": 1, "state": True, "current": 0.8, "voltage": 12.1, "temperature": 35.2,
                "switch_count": 1247}],
    "power_consumption": 15.6, "errors": [],
}
DISCOVERY = {
    "discovery_type": "network_scan", "timestamp": "2025-01-08T10:30:00Z",
    "device_info": {"ip_address": "192.168.1.120", "mac_address": "AA:BB:CC:DD:EE:01",
                    "device_type": "sensor_board", "signal_strength": -72},
}
RESPONSE = {
    "command_id": "42", "timestamp": "2025-01-08T10:30:02Z", "success": True, "execution_time": 2.3,
    "result": {"relay_id": 1, "state": True}, "error_message": None,
}

# topic suffix (after {prefix}/) and example payload of every inbound v1 kind
INBOUND = {
    "announce": (f"devices/{UUID}/announce", ANNOUNCE),
    "status": (f"devices/{UUID}/status", STATUS_REPORT),
    "telemetry": (f"devices/{UUID}/telemetry", TELEMETRY),
    "relay_status": (f"devices/{UUID}/relay/status", RELAY_STATUS),
    "response": (f"devices/{UUID}/response", RESPONSE),
    "discovery": (f"discovery/{UUID}", DISCOVERY),
}
INBOUND_TOPICS = [f"{PREFIX}/{suffix}" for suffix, _ in INBOUND.values()]

T_2025 = 1736332200.0  # 2025-01-08T10:30:00Z


def decode(suffix: str, obj: Any, encoding: Encoding = Encoding.JSON, prefix: str = PREFIX) -> Message:
    payload = encode(obj, encoding)
    return decode_message(f"{prefix}/{suffix}", payload, prefix=prefix, max_payload=MAX)


def with_field(obj: dict, **changes: Any) -> dict:
    out = copy.deepcopy(obj)
    out.update(changes)
    return out
