"""DeviceLogic: one device's actor decisions as a pure state machine."""

import pytest

from actors.messages import CommandState, CommandTransition
from actors.rules.commands import DEFAULT_PLAN, Plan
from actors.rules.device import LAST_SEEN_WRITE_S, DeviceRules
from protocol.values import Availability, CommandSpec, DeviceFacts, Discovery, Event, RelayState, Response
from tests.actors.rules.device_inputs import logic, message, seen

UUID = "esp32-relay-01"
RULES = DeviceRules(device_timeout_s=15.0, command_window=1)


def device(**kw):
    return logic(UUID, RULES, **kw)


def names(step):
    return [e for _, e, _ in step.write.events]


def spec(cid, **kw):
    kw.setdefault("expires_at", 1000.0)
    return CommandSpec(id=cid, device_uuid=UUID, command_type="relay_control", parameters={"channel": 1, "state": True}, **kw)


def announce(boot_id=17, status_interval=5, device_type="relay_board"):
    return DeviceFacts(device_type=device_type, firmware_version="1.2.0", capabilities=("relay",),
                       boot_id=boot_id, status_interval=status_interval)


def assert_wake_after(dev, now):
    wake = dev.next_wake()
    assert wake is None or wake > now, f"wake {wake} not after {now}"


# ------------------------------------------------------------------ becoming a device


def test_unknown_device_first_telemetry_makes_it_online():
    dev = device()
    step = seen(dev, 100.0, 100.0, 1, "v1", "json")
    assert step.write.ensure == "v1"
    assert step.write.status == "online"
    assert step.availability == "online"
    assert names(step) == ["online"]
    assert step.write.events[0][0] == 100.0
    assert step.write.protocol is None  # already the default dialect
    assert dev.status == "online"
    assert dev.next_wake() == 115.0
    assert step.write.changes_anything()


def test_unknown_device_first_status_message_makes_it_online():
    dev = device()
    step = message(dev, 10.0, 10.0, "v1", "json", "status")
    assert step.write.ensure == "v1" and step.availability == "online" and names(step) == ["online"]


def test_known_online_device_second_message_publishes_nothing():
    dev = device()
    seen(dev, 100.0, 100.0, 1, "v1", "json")
    step = seen(dev, 101.0, 101.0, 1, "v1", "json")
    assert step.write.ensure is None and step.write.status is None and step.availability is None
    assert step.write.events == ()
    assert not step.write.changes_anything()
    assert dev.next_wake() == 116.0


def test_last_seen_written_at_most_every_few_seconds():
    dev = device()
    seen(dev, 100.0, 100.0, 1, "v1", "json")
    assert seen(dev, 101.0, 101.0, 1, "v1", "json").write.last_seen is None
    step = seen(dev, 100.0 + LAST_SEEN_WRITE_S, 100.0 + LAST_SEEN_WRITE_S, 1, "v1", "json")
    assert step.write.last_seen == 100.0 + LAST_SEEN_WRITE_S
    assert seen(dev, 106.0, 106.0, 1, "v1", "json").write.last_seen is None


def test_discovery_of_unknown_device_is_discovered_not_online():
    dev = device()
    disc = Discovery(discovery_type="network_scan", ip_address="192.168.1.7", device_type="relay_board", signal_strength=-72)
    step = message(dev, 5.0, 5.0, "v1", "json", "discovery", discovery=disc)
    assert step.write.status == "discovered"
    assert step.write.discovery == disc
    assert step.availability is None
    assert names(step) == ["discovered"]
    assert step.write.events[0][2] == {"discovery_type": "network_scan", "ip_address": "192.168.1.7",
                                 "device_type": "relay_board", "signal_strength": -72}
    assert dev.status == "discovered"
    assert dev.next_wake() is None  # nothing to time out
    # until it announces
    step = message(dev, 6.0, 6.0, "v1", "json", "announce", facts=announce())
    assert step.write.status == "online" and step.availability == "online"
    assert "online" in names(step) and "announce" in names(step)


def test_discovery_of_known_device_writes_an_event_only():
    dev = device(status="online", last_seen=0.0)
    step = message(dev, 1.0, 1.0, "v1", "json", "discovery", discovery=Discovery(discovery_type="network_scan"))
    assert step.write.status is None and step.write.discovery is None
    assert names(step) == ["discovered"]
    assert dev.status == "online"


# ------------------------------------------------------------------ announce and liveness timeout


@pytest.mark.parametrize("interval, timeout", [(5, 15.0), (10, 30.0), (2, 15.0), (None, 15.0)])
def test_announce_sets_timeout_from_status_interval(interval, timeout):
    dev = device()
    facts = announce(status_interval=interval)
    step = message(dev, 50.0, 50.0, "v1", "json", "announce", facts=facts)
    assert step.write.facts == facts
    assert step.write.ensure == "v1"
    assert "announce" in names(step) and "online" in names(step)
    ann = [d for _, e, d in step.write.events if e == "announce"][0]
    assert ann == {"boot_id": 17, "firmware_version": "1.2.0"}
    assert step.write.boot_id == 17
    assert dev.device_type == "relay_board"
    assert dev.next_wake() == 50.0 + timeout
    assert dev.deadline(50.0 + timeout - 0.01).write.status is None
    step = dev.deadline(50.0 + timeout)
    assert step.write.status == "offline" and step.availability == "offline"
    assert names(step) == ["offline"]
    assert step.write.last_seen == 50.0
    assert dev.next_wake() is None


def test_announce_with_new_boot_is_a_reboot():
    dev = device(status="online", boot_id=17, last_seen=0.0)
    step = message(dev, 1.0, 1.0, "v1", "json", "announce", facts=announce(boot_id=18))
    assert "reboot" in names(step)
    assert step.write.boot_id == 18
    assert [d for _, e, d in step.write.events if e == "reboot"] == [{"previous_boot_id": 17, "boot_id": 18}]


def test_announce_without_status_interval_keeps_the_known_one():
    dev = device()
    message(dev, 0.0, 0.0, "v1", "json", "announce", facts=announce(status_interval=20))
    message(dev, 1.0, 1.0, "v1", "json", "announce", facts=announce(status_interval=None))
    assert dev.liveness.timeout_s == 60.0


def test_back_online_after_timeout_sends_availability_again():
    dev = device()
    seen(dev, 0.0, 0.0, 1, "v1", "json")
    dev.deadline(15.0)
    step = seen(dev, 20.0, 20.0, 1, "v1", "json")
    assert step.write.status == "online" and step.availability == "online" and names(step) == ["online"]
    assert step.write.ensure is None


def test_deadline_leaves_no_wake_in_the_past():
    dev = device()
    seen(dev, 0.0, 0.0, 1, "v1", "json")
    dev.take_commands([CommandState(spec(1), "queued")], 0.0)
    for now in (5.0, 10.0, 15.0, 16.0, 2000.0):
        dev.deadline(now)
        assert_wake_after(dev, now)


# ------------------------------------------------------------------ availability (Last Will)


def test_will_marks_offline():
    dev = device(status="online", boot_id=3, last_seen=0.0)
    step = message(dev, 2.0, 2.0, "v1", "json", "status", alive=False, availability=Availability(False, boot_id=3))
    assert step.write.status == "offline" and step.availability == "offline"
    assert names(step) == ["offline"]
    assert dev.next_wake() is None


def test_stale_will_ignored_and_counted():
    dev = device(status="online", boot_id=18, last_seen=0.0)
    step = message(dev, 2.0, 2.0, "v1", "json", "status", alive=False, availability=Availability(False, boot_id=17))
    assert step.write.status is None and step.availability is None and step.write.events == ()
    assert dev.status == "online"
    assert dev.snapshot(2.0)["stale_wills"] == 1


def test_availability_online_with_new_boot_is_a_reboot():
    dev = device(status="offline", boot_id=3, last_seen=0.0)
    step = message(dev, 5.0, 5.0, "v1", "json", "status", availability=Availability(True, boot_id=4))
    assert names(step) == ["reboot", "online"]
    assert step.write.boot_id == 4 and step.availability == "online"


def test_availability_online_with_boot_id_zero_is_recorded():
    dev = device(status="offline", last_seen=0.0)
    step = message(dev, 5.0, 5.0, "v1", "json", "status", availability=Availability(True, boot_id=0))
    assert names(step) == ["online"]
    assert step.write.boot_id == 0
    assert dev.liveness.boot_id == 0
    assert message(dev, 6.0, 6.0, "v1", "json", "status", availability=Availability(True, boot_id=1)).write.boot_id == 1


def test_fw22_will_without_boot_then_back_online():
    dev = device(status="online", dialect="fw22", device_type="esp32_relay", last_seen=0.0)
    step = message(dev, 1.0, 1.0, "fw22", "json", "fw22_status", alive=False,
                       availability=Availability(False, reason="connection_lost"))
    assert step.write.status == "offline"
    assert step.write.events[0][2]["reason"] == "connection_lost"
    step = seen(dev, 3.0, 3.0, 1, "fw22", "json", relay_states=(RelayState(1, True),))
    assert step.write.status == "online" and step.availability == "online"


# ------------------------------------------------------------------ telemetry sequence numbers


def test_seq_gaps_and_repeats_counted():
    dev = device()
    seen(dev, 0.0, 0.0, 3, "v1", "json", seqs=((17, 1), (17, 2), (17, 3)))
    seen(dev, 1.0, 1.0, 1, "v1", "json", seqs=((17, 7),))  # 4, 5, 6 missing
    assert dev.counters["seq_gaps"] == 3
    seen(dev, 2.0, 2.0, 2, "v1", "json", seqs=((17, 7), (17, 5)))  # a redelivery and an old one
    assert dev.counters["seq_repeats"] == 2
    seen(dev, 3.0, 3.0, 1, "v1", "json", seqs=((17, 8),))  # continues from 7, not from 5
    assert dev.counters["seq_gaps"] == 3
    assert dev.counters["messages"] == 7


def test_seq_through_single_messages():
    dev = device()
    message(dev, 0.0, 0.0, "v1", "json", "telemetry", boot_id=1, seq=10)
    message(dev, 1.0, 1.0, "v1", "json", "telemetry", boot_id=1, seq=12)
    assert dev.counters["seq_gaps"] == 1


def test_seq_restarts_with_a_new_boot_without_counting():
    dev = device()
    seen(dev, 0.0, 0.0, 1, "v1", "json", seqs=((17, 500),))
    step = seen(dev, 1.0, 1.0, 1, "v1", "json", seqs=((18, 0),))
    assert "reboot" in names(step) and step.write.boot_id == 18
    assert dev.counters["seq_gaps"] == 0 and dev.counters["seq_repeats"] == 0
    # within the new boot, gaps and repeats count from its first message on
    seen(dev, 2.0, 2.0, 1, "v1", "json", seqs=((18, 3),))
    assert dev.counters["seq_gaps"] == 2
    seen(dev, 3.0, 3.0, 1, "v1", "json", seqs=((18, 3),))
    assert dev.counters["seq_repeats"] == 1


def test_clock_skew_counted():
    dev = device()
    seen(dev, 0.0, 0.0, 2, "v1", "json", clock_skew=2)
    message(dev, 1.0, 1.0, "v1", "json", "status", clock_skew=1)
    assert dev.counters["clock_skew"] == 3


# ------------------------------------------------------------------ dialect and encoding


def test_dialect_switch_is_an_event_and_counted():
    dev = device(status="online", dialect="v1", last_seen=0.0)
    step = seen(dev, 1.0, 1.0, 1, "fw22", "json")
    assert step.write.protocol == "fw22"
    assert ("dialect_change", {"from": "v1", "to": "fw22"}) in [(e, d) for _, e, d in step.write.events]
    assert dev.counters["dialect_change"] == 1
    assert dev.dialect == "fw22"
    assert seen(dev, 2.0, 2.0, 1, "fw22", "json").write.protocol is None  # once


def test_new_fw22_device_is_not_a_dialect_change():
    dev = device()
    step = seen(dev, 1.0, 1.0, 1, "fw22", "json")
    assert step.write.ensure == "fw22" and step.write.protocol == "fw22"
    assert "dialect_change" not in names(step)
    assert dev.counters["dialect_change"] == 0


def test_encoding_change_recorded():
    dev = device(status="online", last_seen=0.0)
    assert seen(dev, 1.0, 1.0, 1, "v1", "json").write.encoding is None
    assert seen(dev, 2.0, 2.0, 1, "v1", "msgpack").write.encoding == "msgpack"
    assert dev.encoding == "msgpack"
    assert seen(dev, 3.0, 3.0, 1, "v1", "msgpack").write.encoding is None


@pytest.mark.parametrize(
    "device_type, timeout",
    [("esp32_relay", 90.0), ("display", 15.0), ("esp32_display", 15.0), ("something_else", 90.0), (None, 90.0)],
)
def test_fw22_timeout_from_device_type_period(device_type, timeout):
    dev = device()
    facts = DeviceFacts(device_type=device_type, firmware_version="2.0.0") if device_type else None
    kind = "fw22_status" if facts else "fw22_relays_state"
    message(dev, 0.0, 0.0, "fw22", "json", kind, facts=facts)
    assert dev.liveness.timeout_s == timeout
    assert dev.next_wake() == timeout
    assert dev.deadline(timeout - 0.01).write.status is None
    assert dev.deadline(timeout).write.status == "offline"


def test_fw22_timeout_follows_configured_periods():
    rules = DeviceRules(device_timeout_s=20.0, fw22_periods=(("esp32_relay", 10.0),), fw22_default_period=4.0)
    dev = logic(UUID, rules, status="offline", dialect="fw22", device_type="esp32_relay")
    assert dev.liveness.timeout_s == 30.0
    other = logic(UUID, rules, status="offline", dialect="fw22", device_type="x")
    assert other.liveness.timeout_s == 20.0


def test_v1_device_switching_to_fw22_takes_the_fw22_timeout():
    dev = device()  # an announce without a boot_id: a 2.2 message may still switch it
    message(dev, 0.0, 0.0, "v1", "json", "announce",
                facts=announce(boot_id=None, status_interval=5, device_type="esp32_relay"))
    assert dev.liveness.timeout_s == 15.0
    seen(dev, 1.0, 1.0, 1, "fw22", "json")
    assert dev.liveness.timeout_s == 90.0


def test_restored_fw22_device_timeout():
    dev = device(status="online", dialect="fw22", device_type="esp32_relay", last_seen=100.0)
    assert dev.next_wake() == 190.0


# ------------------------------------------------------------------ events and relays


def test_message_events_written():
    dev = device(status="online", dialect="fw22", last_seen=0.0)
    ev = Event("safety_shutoff", {"channel": 2}, channel=2)
    step = message(dev, 1.0, 1.0, "fw22", "json", "fw22_relay_events", alive=False, events=(ev,))
    assert list(step.write.events) == [(1.0, "safety_shutoff", {"channel": 2})]


def test_relay_states_kept():
    dev = device()
    seen(dev, 0.0, 0.0, 1, "fw22", "json", relay_states=(RelayState(1, True), RelayState(2, False)))
    seen(dev, 1.0, 1.0, 1, "fw22", "json", relay_states=(RelayState(2, True),))
    assert dev.relays == {1: True, 2: True}
    assert dev.snapshot(1.0)["relays"] == {"1": True, "2": True}


# ------------------------------------------------------------------ commands through the device


def test_commands_held_offline_and_sent_when_device_comes_online():
    dev = device(status="offline", boot_id=1, last_seen=0.0)
    step = dev.take_commands([CommandState(spec(2), "queued"), CommandState(spec(1), "queued")], 10.0)
    assert step.sends == [] and step.write.transitions == ()
    assert not dev.idle()
    step = seen(dev, 20.0, 20.0, 1, "v1", "json")
    assert step.availability == "online"
    assert [(s.id, a) for s, a in step.sends] == [(1, 1)]
    step = message(dev, 21.0, 21.0, "v1", "json", "response", response=Response("1", "succeeded", result={"ok": 1}))
    assert step.write.transitions[0] == CommandTransition(1, "succeeded", result={"ok": 1}, error_message=None)
    assert [(s.id, a) for s, a in step.sends] == [(2, 1)]


def test_commands_sent_at_once_to_online_device():
    dev = device(status="online", last_seen=0.0)
    step = dev.take_commands([CommandState(spec(1), "queued")], 1.0)
    assert [(s.id, a) for s, a in step.sends] == [(1, 1)]
    assert dev.next_wake() == 6.0  # the command's timeout comes before the liveness deadline
    step = dev.deadline(6.0)
    assert [(s.id, a) for s, a in step.sends] == [(1, 2)]


def test_response_counters_reach_the_device():
    dev = device(status="online", last_seen=0.0)
    message(dev, 1.0, 1.0, "v1", "json", "response", response=Response("77", "succeeded"))
    assert dev.counters["unknown_response"] == 1
    dev.take_commands([CommandState(spec(1), "queued")], 1.0)
    message(dev, 2.0, 2.0, "v1", "json", "response", response=Response("1", "succeeded"))
    step = message(dev, 3.0, 3.0, "v1", "json", "response", response=Response("1", "succeeded"))
    assert step.write.transitions == ()
    assert dev.counters["late_response"] == 1


def test_cancel_through_the_device():
    dev = device(status="online", last_seen=0.0)
    dev.take_commands([CommandState(spec(1), "queued"), CommandState(spec(2), "queued")], 1.0)
    step = dev.cancel(2, 2.0)
    assert step.write.transitions == (CommandTransition(2, "cancelled", error_message="cancelled before it was sent"),)
    step = dev.cancel(1, 2.0)
    assert [(t.command_id, t.status) for t in step.write.transitions] == [(1, "sent")]
    assert dev.counters["cancel_refused"] == 1


def test_restart_sent_command_resent_when_online():
    dev = device(status="offline", last_seen=0.0)
    dev.take_commands([CommandState(spec(5), "sent", attempts=1)], 10.0)
    step = seen(dev, 11.0, 11.0, 1, "v1", "json")
    assert [(s.id, a) for s, a in step.sends] == [(5, 2)]


def fw22_plan(dialect, s):
    if dialect != "fw22":
        return DEFAULT_PLAN
    params = s.parameters
    if params.get("command") == "toggle":
        return Plan(retry=False)
    return Plan(confirm=(params["channel"], params["state"]))


def test_fw22_command_confirmed_by_relay_state():
    dev = device(status="online", dialect="fw22", device_type="esp32_relay", last_seen=0.0, plan=fw22_plan)
    dev.take_commands([CommandState(spec(1), "queued")], 1.0)
    step = seen(dev, 2.0, 2.0, 1, "fw22", "json", relay_states=(RelayState(1, False),))
    assert step.write.transitions == ()
    step = seen(dev, 3.0, 3.0, 1, "fw22", "json", relay_states=(RelayState(1, True),))
    assert step.write.transitions == (CommandTransition(1, "succeeded", result={"confirmed_by": "relays/state"}),)


def test_fw22_restart_takes_up_plans():
    toggle = CommandSpec(id=6, device_uuid=UUID, command_type="relay_control", parameters={"channel": 2, "command": "toggle"})
    dev = device(status="online", dialect="fw22", device_type="esp32_relay", last_seen=0.0, plan=fw22_plan)
    step = dev.take_commands([CommandState(toggle, "sent", attempts=1)], 1.0)
    assert step.sends == []  # a toggle is never sent twice, not even after a restart
    step = dev.deadline(6.0)
    assert [(t.command_id, t.status) for t in step.write.transitions] == [(6, "timeout")] and step.sends == []

    dev = device(status="online", dialect="fw22", device_type="esp32_relay", last_seen=0.0, plan=fw22_plan)
    dev.take_commands([CommandState(spec(7), "sent", attempts=1)], 1.0)  # an "on": resent, and confirmed
    step = seen(dev, 2.0, 2.0, 1, "fw22", "json", relay_states=(RelayState(1, True),))
    assert [(t.command_id, t.status) for t in step.write.transitions] == [(7, "succeeded")]


def test_idle_and_snapshot():
    dev = device()
    assert dev.idle()
    seen(dev, 0.0, 0.0, 1, "v1", "json")
    assert not dev.idle()
    snap = dev.snapshot(5.0)
    assert snap["uuid"] == UUID and snap["status"] == "online"
    assert snap["offline_in_s"] == 10.0
    dev.deadline(15.0)
    assert dev.idle()


def test_a_will_handled_after_a_later_reading_is_history_not_a_verdict():
    dev = logic("late-will", DeviceRules())
    message(dev, 0.0, 1.0, "v1", "json", "announce", facts=DeviceFacts(device_type="x", firmware_version="1", boot_id=1))
    seen(dev, 10.0, 5.0, 1, "v1", "json")  # a reading sent after the Will, handled first
    step = message(dev, 10.0, 4.0, "v1", "json", "status", alive=False,
                       availability=Availability(online=False, boot_id=1))
    assert [e for _, e, _ in step.write.events] == ["offline", "online"]
    assert step.write.status is None and step.availability is None
    assert dev.status == "online"


def test_a_first_message_that_is_a_will_registers_the_device_offline():
    dev = logic("will-first", DeviceRules())
    step = message(dev, 0.0, 1.0, "v1", "json", "status", alive=False, availability=Availability(online=False, boot_id=3))
    assert step.write.ensure == "v1"
    assert step.write.status == "offline" and step.availability == "offline"
