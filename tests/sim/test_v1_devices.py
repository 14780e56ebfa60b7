"""Simulated v1 devices, without a broker: the time is passed in, and every
payload is checked by the gateway's own decoder."""

from __future__ import annotations

import pytest

from simulator.v1 import V1_KINDS, V1Device, V1Options
from protocol.outbound import command_publication, gateway_status_publication
from protocol.values import CommandSpec, Encoding, Kind

from tests.sim.helpers import T0, body, decoded, on, rng, run_until


def make(kind: str = "relay_board", encoding: Encoding = Encoding.JSON, **options) -> V1Device:
    device = V1Device(f"sim-{kind.replace('_', '-')}-01", kind, V1Options(**options), rng(), T0, encoding=encoding)
    return device


def command(device: V1Device, command_id: int, command_type: str, parameters: dict, *, attempt: int = 1,
            topic: str = "command", now: float = T0) -> list:
    spec = CommandSpec(id=command_id, device_uuid=device.uuid, command_type=command_type, parameters=parameters,
                       topic=topic, timeout=5.0, created_at=now, expires_at=now + 300)
    pub = command_publication("autocore", spec, attempt, now, "autocore-gateway", device.encoding)
    return device.handle(pub.topic, pub.payload, now)


@pytest.mark.parametrize("encoding", [Encoding.JSON, Encoding.MSGPACK])
@pytest.mark.parametrize("kind", V1_KINDS)
def test_every_payload_a_device_sends_is_one_the_gateway_accepts(kind, encoding):
    device = make(kind, encoding)
    boot = device.boot_id
    will = decoded(device.will())
    assert device.will().retain and device.will().qos == 1
    assert will.availability.online is False and will.availability.boot_id == boot

    first = device.connected(T0)
    online, announce = first
    assert online.retain and online.qos == 1
    assert decoded(online).availability.online and decoded(online).availability.boot_id == boot
    facts = decoded(announce).facts
    assert (facts.device_type, facts.boot_id, facts.status_interval) == (kind, boot, 5.0)
    assert decoded(announce).encoding is encoding

    sent = [p for _, p in run_until(device, T0, T0 + 12)]
    messages = [decoded(p) for p in sent]
    assert all(m.uuid == device.uuid and m.encoding is encoding for m in messages)
    telemetry = [m for m in messages if m.kind is Kind.TELEMETRY]
    assert [m.seq for m in telemetry] == list(range(1, len(telemetry) + 1))
    assert {m.boot_id for m in telemetry} == {boot}
    assert all(m.readings for m in telemetry)
    reports = [m for m in messages if m.kind is Kind.STATUS]
    assert len(reports) == 2 and all(m.availability is None and m.readings for m in reports)
    assert all(p.qos == 0 for p in sent if decoded(p).kind is Kind.STATUS)
    assert all(p.qos == 1 for p in sent if decoded(p).kind is Kind.TELEMETRY)


@pytest.mark.parametrize("kind, sources, per_12s", [
    ("can_gateway", {"can", "can_raw"}, 120),
    ("sensor_board", {"analog", "sensor"}, 12),
    ("mobile", {"gps", "system"}, 12),
    ("relay_board", {"sensor"}, 2),
    ("display_small", {"system"}, 2),
])
def test_each_type_sends_its_own_sections_at_its_own_rate(kind, sources, per_12s):
    device = make(kind)
    device.connected(T0)
    telemetry = [decoded(p) for _, p in run_until(device, T0, T0 + 12) if p.topic.endswith("/telemetry")]
    assert len(telemetry) == per_12s
    assert {r.source for m in telemetry for r in m.readings} == sources


def test_a_relay_board_reports_its_relays_on_relay_status():
    device = make("relay_board", relay_status_interval=2.0)
    device.connected(T0)
    statuses = on("/relay/status", [p for _, p in run_until(device, T0, T0 + 6.5)])
    assert len(statuses) == 3
    message = decoded(statuses[0])
    assert [s.relay_id for s in message.relay_states] == list(range(1, 17))
    assert not any(s.state for s in message.relay_states)


def test_a_reboot_raises_boot_id_restarts_seq_and_announces_again():
    device = make("sensor_board")
    device.connected(T0)
    run_until(device, T0, T0 + 3)
    old_boot, old_seq = device.boot_id, device.seq
    assert old_seq == 3
    device.disconnected(T0 + 3.5)
    device.reboot(T0 + 3.5)
    assert device.boot_id > old_boot
    assert decoded(device.will()).availability.boot_id == device.boot_id
    online, announce = device.connected(T0 + 4.5)
    assert decoded(announce).facts.boot_id == device.boot_id
    telemetry = [decoded(p) for _, p in run_until(device, T0 + 4.5, T0 + 7) if p.topic.endswith("/telemetry")]
    assert [m.seq for m in telemetry][:2] == [1, 2]
    assert {m.boot_id for m in telemetry} == {device.boot_id}


def test_boot_ids_never_go_back_even_for_a_new_process():
    # A second simulator run against the same database must not reuse (uuid, boot_id, seq).
    earlier = make("mobile")
    for _ in range(5):
        earlier.reboot(T0)
    later = V1Device(earlier.uuid, "mobile", V1Options(), rng(), T0 + 10)
    assert later.boot_id > earlier.boot_id


def gateway_status(status: str, now: float):
    return gateway_status_publication("autocore", status, "autocore-gateway", now, 1.0, 0, 10.0, 1.0, "test")


def test_announces_when_the_gateway_turns_online_not_on_each_heartbeat():
    device = make("mobile")
    assert len(on("/announce", device.connected(T0))) == 1
    retained = gateway_status("online", T0)
    assert device.handle(retained.topic, retained.payload, T0 + 0.01) == []  # met right after the boot's announce
    beat = gateway_status("online", T0 + 30)
    assert device.handle(beat.topic, beat.payload, T0 + 30) == []
    gone = gateway_status("offline", T0 + 40)
    assert device.handle(gone.topic, gone.payload, T0 + 40) == []
    back = gateway_status("online", T0 + 45)
    (announce,) = device.handle(back.topic, back.payload, T0 + 45)
    assert decoded(announce).kind is Kind.ANNOUNCE and decoded(announce).facts.boot_id == device.boot_id


def test_a_repeated_command_gets_the_same_response_and_is_not_executed_again():
    device = make("relay_board")
    device.connected(T0)
    first = command(device, 42, "relay_control", {"relay_id": 3, "state": True})
    (response,) = on("/response", first)
    answer = decoded(response).response
    assert (answer.command_id, answer.outcome, answer.result) == ("42", "succeeded", {"relay_id": 3, "state": True})
    assert device.relays[2].state and device.relays[2].switch_count == 1

    device.relays[2].state = False  # someone switched it off meanwhile: a re-execution would show
    again = command(device, 42, "relay_control", {"relay_id": 3, "state": True}, attempt=2, now=T0 + 5)
    assert again == [response]  # the very same bytes
    assert device.relays[2].state is False and device.relays[2].switch_count == 1
    assert device.counters["duplicates"] == 1 and device.counters["commands_executed"] == 1


def test_a_relay_command_toggle_is_executed_once():
    device = make("relay_board")
    device.connected(T0)
    relays = {"relays": [{"relay_id": 1, "action": "toggle"}, {"relay_id": 2, "action": "turn_on"}]}
    out = command(device, 7, "relay_control", relays, topic="relay/command")
    assert decoded(on("/response", out)[0]).response.outcome == "succeeded"
    assert [r.state for r in device.relays[:2]] == [True, True]
    command(device, 7, "relay_control", relays, topic="relay/command", attempt=2, now=T0 + 5)
    assert [r.state for r in device.relays[:2]] == [True, True]  # not toggled back


def test_the_response_waits_for_the_latency_and_a_repeat_meanwhile_gets_nothing_extra():
    device = make("relay_board", latency=(0.5, 0.5))
    device.connected(T0)
    assert on("/response", command(device, 1, "ping", {})) == []
    assert command(device, 1, "ping", {}, attempt=2, now=T0 + 0.2) == []  # the answer is on its way
    assert on("/response", device.tick(T0 + 0.49)) == []
    (response,) = on("/response", device.tick(T0 + 0.5))
    assert decoded(response).response.outcome == "succeeded"
    assert command(device, 1, "ping", {}, attempt=3, now=T0 + 6) == [response]
    assert device.counters["responses"] == 1


def test_a_slow_command_is_accepted_first_then_answered():
    device = make("sensor_board", slow_time=2.0)
    device.connected(T0)
    (accepted,) = on("/response", command(device, 9, "calibrate", {}))
    assert decoded(accepted).response.outcome == "accepted"
    assert on("/response", device.tick(T0 + 1.99)) == []
    (final,) = on("/response", device.tick(T0 + 2.0))
    assert decoded(final).response.outcome == "succeeded"
    assert body(final)["execution_time"] == 2.0
    assert command(device, 9, "calibrate", {}, attempt=2, now=T0 + 3) == [final]


def test_failures_by_rate_and_for_unsupported_commands():
    failing = make("relay_board", failure_rate=1.0)
    failing.connected(T0)
    (response,) = on("/response", command(failing, 5, "relay_control", {"relay_id": 1, "state": True}))
    assert decoded(response).response.outcome == "failed"
    assert decoded(response).response.error_message == "simulated failure"

    device = make("mobile")
    device.connected(T0)
    (response,) = on("/response", command(device, 6, "launch_rockets", {}))
    assert decoded(response).response.outcome == "failed"
    assert "unsupported" in decoded(response).response.error_message
    (response,) = on("/response", command(device, 7, "relay_control", {"relay_id": 1, "state": True}))
    assert decoded(response).response.outcome == "failed"  # a mobile has no relays


def test_a_relay_held_for_a_duration_reverts_and_reports_it():
    device = make("relay_board")
    device.connected(T0)
    command(device, 3, "relay_control", {"relay_id": 1, "state": True, "duration": 1500})
    assert device.relays[0].state
    device.tick(T0 + 1.49)
    assert device.relays[0].state
    reverted = on("/relay/status", device.tick(T0 + 1.5))
    assert not device.relays[0].state
    assert decoded(reverted[0]).relay_states[0].state is False


def test_a_reboot_command_is_answered_then_reboots():
    device = make("display_small", reboot_delay=0.3)
    device.connected(T0)
    (response,) = on("/response", command(device, 11, "reboot", {}))
    assert decoded(response).response.outcome == "succeeded"
    device.tick(T0 + 0.29)
    assert not device.wants_reboot
    device.tick(T0 + 0.3)
    assert device.wants_reboot  # the runner carries it out


def test_set_config_changes_the_status_interval_and_msgpack_devices_answer_in_msgpack():
    device = make("sensor_board", Encoding.MSGPACK)
    device.connected(T0)
    (response,) = on("/response", command(device, 12, "set_config", {"status_interval": 2}))
    assert decoded(response).encoding is Encoding.MSGPACK
    reports = [p for _, p in run_until(device, T0, T0 + 6.5) if decoded(p).kind is Kind.STATUS]
    assert len(reports) == 3


def test_an_offline_device_sends_nothing_and_does_not_catch_up():
    device = make("can_gateway")
    device.connected(T0)
    device.disconnected(T0)
    assert run_until(device, T0, T0 + 2) == []
    assert device.counters["not_sent_offline.periodic"] > 0
    device.connected(T0 + 2)
    sent = run_until(device, T0 + 2, T0 + 2.15)
    assert len(sent) <= 2  # no burst of what was missed


def test_garbage_commands_are_ignored():
    device = make("relay_board")
    device.connected(T0)
    topic = device.topic(Kind.COMMAND)
    assert device.handle(topic, b"\x00\x01garbage", T0) == []
    assert device.handle(topic, b'{"no_id": true}', T0) == []
    assert device.counters["bad_command"] == 2
