"""The Router's rate decision is taken from the topic alone, before the
payload is decoded (issue 11): a flooding device's excess costs no decode,
is counted per device and acknowledged in the same batch; the others are
not slowed. The Router is called directly, its neighbours replaced by
recorders; no threads, no broker."""

from __future__ import annotations

import orjson

import actors.rules.routing as routing_module
from actors.messages import Complete, InboundBatch, RawInbound, TelemetryRows, Token
from actors.router import Router
from gateway.settings import Settings
from tests.support.recorder import Recorder

TELEMETRY = orjson.dumps({"analog_sensors": {"fuel_level": 1.5}})


def test_a_flood_over_the_limit_is_refused_without_decoding(monkeypatch):
    decoded = []
    real = routing_module.decode_message

    def counting(topic, payload, **kw):
        decoded.append(topic)
        return real(topic, payload, **kw)

    monkeypatch.setattr(routing_module, "decode_message", counting)
    mqtt, supervisor, store = Recorder(), Recorder(), Recorder()
    router = Router(Settings(device_rate=10, device_burst=20), mqtt, supervisor, store)
    raws = []
    for mid in range(1, 201):
        uuid = "flooder" if mid <= 100 else f"quiet-{mid % 5}"
        raws.append(RawInbound(f"autocore/devices/{uuid}/telemetry", TELEMETRY, 1, 1000.0, Token(1, mid, 1)))
    router.handle(InboundBatch(tuple(raws)))
    # The flooder: its burst of 20 decoded and stored, the other 80 refused
    # before decoding; the quiet devices (20 each, within their burst) untouched.
    assert decoded.count("autocore/devices/flooder/telemetry") == 20
    assert len(decoded) == 120
    assert router.rejections_by_device["flooder"]["rate_limited"] == 80
    assert not any(k.startswith("quiet") for k in router.rejections_by_device)
    # Refused messages are acknowledged in this same batch; stored ones wait for the commit.
    completed = [t.mid for m in mqtt.told if isinstance(m, Complete) for t in m.tokens]
    assert sorted(completed) == list(range(21, 101))
    stored = [t.mid for m in store.told if isinstance(m, TelemetryRows) for t in m.tokens]
    assert len(stored) == 120
