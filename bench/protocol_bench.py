"""Throughput of `decode_message` on a small telemetry message (3 readings),
JSON and MessagePack. Run: `.venv/bin/python -m bench.protocol_bench [n]`."""

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


def bench_decode(n: int, encoding: Encoding = Encoding.JSON) -> float:
    """Messages per second of decode_message over n calls."""
    payload = encode(PAYLOAD, encoding)
    assert len(decode_message(TOPIC, payload, prefix="autocore", max_payload=65536).readings) == 3
    start = time.perf_counter()
    for _ in range(n):
        decode_message(TOPIC, payload, prefix="autocore", max_payload=65536)
    return n / (time.perf_counter() - start)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    for encoding in Encoding:
        print(f"decode_message, 3-reading telemetry, {encoding.value:8}: {bench_decode(n, encoding):,.0f} messages/s")


if __name__ == "__main__":
    main()
