"""Throughput of `decode_message` (decode, validate, rows): a small v1
telemetry message (3 readings) in JSON and MessagePack, and the firmware 2.2
messages a relay board and a display send, so the two dialects' cost per
message can be compared. Run: `.venv/bin/python -m bench.protocol_bench [n]`."""

from __future__ import annotations

import sys
import time

from protocol.codec import encode
from protocol.decode import decode_message
from protocol.values import Encoding

TOPIC = "autocore/devices/esp32-relay-01/telemetry"
PAYLOAD = {
    "timestamp": "2025-01-08T10:30:00Z",
    "seq": 981,
    "boot_id": 17,
    "analog_sensors": {"fuel_level": 67.8, "oil_pressure": 45.2},
    "readings": [{"source": "sensor", "metric": "coolant_temp", "value": 88.5, "unit": "C"}],
}


FW22_UUID = "esp32-9c1a77b0e2f41d03"
FW22_CASES = {
    "2.2 relays/state, 16 channels": (
        f"autocore/devices/{FW22_UUID}/relays/state",
        {"protocol_version": "2.2.0", "uuid": FW22_UUID, "timestamp": "1970-01-01T00:00:39Z", "board_id": 1,
         "channels": {str(c): c % 3 == 0 for c in range(1, 17)}},
    ),
    "2.2 display status, nested": (
        f"autocore/devices/{FW22_UUID}/status",
        {"protocol_version": "2.2.0", "uuid": FW22_UUID, "status": "online", "type": "esp32_display",
         "firmware_version": "2.2.0", "ip_address": "192.168.4.2", "wifi_signal": -61, "uptime": 120,
         "system": {"free_heap": 181232, "min_free_heap": 170000}, "display": {"brightness": 80, "page": 2},
         "capabilities": {"touch": True, "screens": 4}},
    ),
}


def _rate(topic: str, payload: bytes, n: int) -> tuple[float, int]:
    rows = len(decode_message(topic, payload, prefix="autocore", max_payload=65536).readings)
    start = time.perf_counter()
    for _ in range(n):
        decode_message(topic, payload, prefix="autocore", max_payload=65536)
    return n / (time.perf_counter() - start), rows


def bench_decode(n: int, encoding: Encoding = Encoding.JSON) -> float:
    """Messages per second of decode_message over n calls."""
    rate, rows = _rate(TOPIC, encode(PAYLOAD, encoding), n)
    assert rows == 3
    return rate


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    for encoding in Encoding:
        rate, rows = _rate(TOPIC, encode(PAYLOAD, encoding), n)
        print(f"decode_message, v1 telemetry ({rows} rows), {encoding.value:8}: {rate:>10,.0f} messages/s  {rate * rows:>10,.0f} rows/s")
    for name, (topic, payload) in FW22_CASES.items():
        rate, rows = _rate(topic, encode(payload), n)
        print(f"decode_message, {name} ({rows} rows): {rate:>10,.0f} messages/s  {rate * rows:>10,.0f} rows/s")


if __name__ == "__main__":
    main()
