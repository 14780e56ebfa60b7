"""Simulated firmware 2.2 boards, without a broker: the relay's heartbeat
hold is driven with the time passed in; payloads go through the gateway's
own decoder and are built with its own 2.2 encoders."""

from __future__ import annotations

import orjson
import pytest

from simulator.fw22 import Fw22Display, Fw22Options, Fw22Relay, fw22_uuid
from protocol import fw22
from protocol.values import CommandSpec, Kind

from tests.sim.helpers import T0, body, decoded, on, rng, run_until

UUID = fw22_uuid("test/relay/1")
GATEWAY = "autocore-gateway"


def relay(switching: bool = False, **options) -> Fw22Relay:
    board = Fw22Relay(UUID, Fw22Options(**options), rng(), T0, switching=switching)
    board.connected(T0)
    return board


def relays_set(board: Fw22Relay, channel, command: str, command_id: str = "17", now: float = T0) -> list:
    pub = fw22.relay_set_publication(board.uuid, channel, command, command_id, GATEWAY)
    return board.handle(pub.topic, pub.payload, now)


def heartbeat(board: Fw22Relay, channel: int, sequence: int, now: float) -> list:
    pub = fw22.heartbeat_publication(board.uuid, channel, sequence, GATEWAY, now)
    return board.handle(pub.topic, pub.payload, now)


def test_the_relay_announces_itself_only_with_its_retained_combined_status():
    board = Fw22Relay(UUID, Fw22Options(), rng(), T0)
    (status,) = board.connected(T0 + 9)
    assert status.topic == f"autocore/devices/{UUID}/status" and status.qos == 1 and status.retain
    message = decoded(status)
    assert message.kind is Kind.FW22_STATUS and message.availability.online
    assert (message.facts.device_type, message.facts.relay_count) == ("esp32_relay", 16)
    assert body(status)["timestamp"] == "1970-01-01T00:00:09Z"  # seconds since boot: never synced
    assert "boot_id" not in body(status) and "seq" not in body(status)


def test_the_relay_will_is_the_offline_status_without_boot_id():
    will = relay().will()
    assert will.topic == f"autocore/devices/{UUID}/status" and will.qos == 1 and will.retain
    payload = body(will)
    assert payload["status"] == "offline" and "reason" in payload and "last_seen" in payload
    assert "boot_id" not in payload
    message = decoded(will)
    assert message.availability.online is False and message.availability.reason == "connection_lost"


def test_relays_state_every_period_is_its_only_sign_of_life():
    board = relay(state_interval=30.0)
    sent = run_until(board, T0, T0 + 95)
    assert [round(t - T0) for t, _ in sent] == [30, 60, 90]
    assert {p.topic for _, p in sent} == {f"autocore/devices/{UUID}/relays/state"}
    message = decoded(sent[0][1])
    assert message.kind is Kind.FW22_RELAYS_STATE and len(message.relay_states) == 16
    assert [r.metric for r in message.readings][:2] == ["relay.1.state", "relay.2.state"]


def test_todays_relay_parses_relays_set_and_switches_nothing():
    board = relay()
    assert relays_set(board, 1, "on") == []
    assert relays_set(board, "all", "on") == []
    assert not any(board.states.values())
    assert board.counters["relays_set_ignored"] == 2


def test_a_relays_set_without_command_is_rejected_with_err_002_echoing_the_payload():
    board = relay()
    payload = orjson.dumps({"protocol_version": "2.2.0", "channel": 2, "momentary": False,
                            "source": GATEWAY, "user": "gateway", "command_id": "31"})
    (error,) = board.handle(f"autocore/devices/{UUID}/relays/set", payload, T0)
    assert error.topic == f"autocore/errors/{UUID}/payload"
    assert body(error)["error_code"] == "ERR_002"
    assert body(error)["context"]["command"] == payload.decode()
    message = decoded(error)
    assert message.events[0].event == "error"
    assert (message.response.command_id, message.response.outcome) == ("31", "failed")
    assert "ERR_002" in message.response.error_message


@pytest.mark.parametrize("payload, code", [
    (b"{not json", "ERR_001"),
    (orjson.dumps({"protocol_version": "2.2.0", "channel": 17, "command": "on", "command_id": "5"}), "ERR_004"),
    (orjson.dumps({"protocol_version": "2.2.0", "channel": 1, "command": "explode", "command_id": "6"}), "ERR_002"),
])
def test_other_bad_relays_set_payloads_are_errors_too(payload, code):
    board = relay()
    (error,) = board.handle(f"autocore/devices/{UUID}/relays/set", payload, T0)
    assert body(error)["error_code"] == code
    decoded(error)  # the gateway accepts it as an error event


def test_a_broadcast_has_no_command_so_the_relay_answers_it_with_an_error():
    board = relay()
    (error,) = board.handle("autocore/system/broadcast", b'{"message_type": "config_update", "data": {}}', T0)
    assert body(error)["error_code"] == "ERR_002"


def test_the_switching_variant_switches_and_reports_at_once():
    board = relay(switching=True)
    out = relays_set(board, 3, "on")
    (state,) = on("/relays/state", out)
    message = decoded(state)
    plan = fw22.plan_command(CommandSpec(id=17, device_uuid=UUID, command_type="relay_control",
                                         parameters={"channel": 3, "state": True}))
    assert plan.confirmed_by({s.relay_id: s.state for s in message.relay_states})
    (change,) = on("/telemetry/relays/data", out)
    assert decoded(change).events[0].event == "relay_change"
    relays_set(board, 3, "toggle")
    assert board.states[3] is False
    relays_set(board, "all", "on")
    assert all(board.states.values())


def test_heartbeats_hold_a_channel_on_until_one_second_after_the_last():
    board = relay()
    beats = [T0 + 0.25 * i for i in range(9)]  # a 2 s hold: 0, 0.25, ..., 2.0
    for sequence, at in enumerate(beats, start=1):
        for _, late in run_until(board, at - 0.25, at):
            pytest.fail(f"published {late.topic} while held")
        heartbeat(board, 4, sequence, at)
        assert board.states[4] is True
    last = beats[-1]
    assert board.next_due() == pytest.approx(last + 1.0)
    assert board.tick(last + 0.999) == []
    assert board.states[4] is True
    released = board.tick(last + 1.0)
    assert board.states[4] is False
    shutoff, error = released
    assert shutoff.topic == "autocore/telemetry/relays/data"
    event = decoded(shutoff).events[0]
    assert (event.event, event.channel) == ("safety_shutoff", 4)
    assert decoded(shutoff).uuid == UUID
    assert error.topic == f"autocore/errors/{UUID}/heartbeat"
    assert body(error)["error_code"] == "ERR_003"
    assert decoded(error).response is None  # a heartbeat timeout ends no command by an echo
    assert board.tick(last + 5) == []


def test_the_first_heartbeat_switches_the_channel_on_with_a_relay_change():
    board = relay()
    (change,) = heartbeat(board, 2, 1, T0)
    assert decoded(change).events[0].event == "relay_change"
    assert heartbeat(board, 2, 2, T0 + 0.25) == []  # already on: nothing to report


def test_a_single_heartbeat_holds_for_one_second_and_holds_are_per_channel():
    board = relay()
    heartbeat(board, 1, 1, T0)
    heartbeat(board, 2, 1, T0 + 0.5)
    board.tick(T0 + 1.0)
    assert (board.states[1], board.states[2]) == (False, True)
    board.tick(T0 + 1.5)
    assert board.states[2] is False


def test_a_heartbeat_for_a_channel_the_board_lacks_is_an_error():
    board = relay()
    payload = orjson.dumps({"protocol_version": "2.2.0", "channel": 99, "sequence": 1})
    (error,) = board.handle(f"autocore/devices/{UUID}/relays/heartbeat", payload, T0)
    assert body(error)["error_code"] == "ERR_004"
    assert not any(board.states.values())


def test_a_reboot_releases_everything():
    board = relay()
    heartbeat(board, 1, 1, T0)
    board.disconnected(T0 + 0.1)
    board.reboot(T0 + 0.1)
    assert not any(board.states.values()) and board.next_due() is not None
    assert board.tick(T0 + 2) == []  # offline: nothing sent


def test_the_display_sends_nested_status_every_five_seconds_at_qos_0():
    display = Fw22Display(fw22_uuid("test/display/1"), Fw22Options(), rng(), T0)
    (first,) = display.connected(T0)
    sent = [first] + [p for _, p in run_until(display, T0, T0 + 10.5)]
    assert len(sent) == 3
    assert all(p.qos == 0 and p.retain for p in sent)
    payload = body(sent[1])
    assert {"system", "display", "capabilities"} <= payload.keys()
    assert payload["timestamp"].startswith("2025-01-01T")  # a made-up date
    message = decoded(sent[1])
    assert message.availability.online and message.facts.device_type == "esp32_display"
    assert message.facts.capabilities == payload["capabilities"]  # kept as given
    metrics = {r.metric for r in message.readings}
    assert {"system.free_heap", "display.brightness", "uptime", "wifi_signal"} <= metrics
    assert decoded(display.will()).availability.online is False
