"""Shared helpers of the simulator tests."""

from __future__ import annotations

import random

from protocol.codec import decode as decode_payload
from protocol.decode import decode_message
from protocol.values import Message, Publication

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z: every device test starts its clock here
MAX_PAYLOAD = 65536


def decoded(pub: Publication, prefix: str = "autocore") -> Message:
    """The gateway's reading of a publication (raises Rejected if it would refuse it)."""
    return decode_message(pub.topic, pub.payload, prefix=prefix, max_payload=MAX_PAYLOAD)


def body(pub: Publication) -> dict:
    return decode_payload(pub.payload, MAX_PAYLOAD)[0]


def rng(seed: int = 1) -> random.Random:
    return random.Random(seed)


def on(topic_end: str, pubs: list[Publication]) -> list[Publication]:
    return [p for p in pubs if p.topic.endswith(topic_end)]


def run_until(device, start: float, end: float) -> list[tuple[float, Publication]]:
    """Tick `device` as the runner would (at each next_due) from `start` to
    `end`; every publication with its time."""
    out = []
    now = start
    for _ in range(1_000_000):
        due = device.next_due()
        if due is None or due > end:
            break
        now = max(now, due)
        out += [(now, p) for p in device.tick(now)]
    return out
