"""DeviceLogic: a device that has spoken v1 with a boot_id refuses 2.2
messages (PROTOCOL.md, "Firmware 2.2 dialect"): the 2.2 boards share one
broker account, so such a message could come from any of them. Pure rules,
the time passed in; no threads."""

import pytest

from actors.rules.device import DIALECT_CONFLICT, DIALECT_CONFLICT_EVENT_S, DeviceRules
from protocol.values import Availability, DeviceFacts, Event, ObservedCommand, RelayState
from tests.actors.rules.device_inputs import logic, message, seen

UUID = "esp32-relay-01"
RULES = DeviceRules(device_timeout_s=15.0, command_window=1)
FW22 = "2.2.0"


def v1_with_boot(boot_id=17):
    dev = logic(UUID, RULES)
    message(dev, 0.0, 0.0, "v1", "json", "announce",
                facts=DeviceFacts(device_type="relay_board", firmware_version="1.2.0", boot_id=boot_id,
                                  status_interval=5))
    assert dev.status == "online" and dev.dialect_locked
    return dev


def fw22_offline(dev, now, at=None):
    return message(dev, now, now if at is None else at, "fw22", "json", "fw22_status", alive=False,
                       availability=Availability(online=False, reason="lost"), protocol_version=FW22)


def names(step):
    return [e for _, e, _ in step.write.events]


def nothing_changed(step) -> bool:
    """Only the refusal's own event may be written: no device, no facts, no
    status, no dialect, no availability, no commands."""
    return (step.refused == DIALECT_CONFLICT and step.write.ensure is None and step.write.facts is None and step.write.status is None
            and step.write.protocol is None and step.availability is None and step.write.last_seen is None
            and step.write.boot_id is None and not step.write.transitions and not step.sends and not step.beats
            and set(names(step)) <= {DIALECT_CONFLICT})


# ------------------------------------------------------------------ the refusal


def test_a_2_2_offline_status_does_not_turn_a_v1_device_with_a_boot_offline():
    dev = v1_with_boot()
    deadline = dev.next_wake()
    step = fw22_offline(dev, 1.0)
    assert nothing_changed(step)
    assert list(step.write.events) == [(1.0, DIALECT_CONFLICT, {
        "kind": "fw22_status", "protocol_version": FW22, "refused": "status offline", "count": 1,
        "dialect": "v1", "boot_id": 17})]
    assert dev.status == "online" and dev.dialect == "v1" and dev.dialect_locked
    assert dev.counters[DIALECT_CONFLICT] == 1
    assert dev.next_wake() == deadline  # no sign of life either: the timeout runs on


@pytest.mark.parametrize("kind, fields, refused", [
    ("fw22_status", {"availability": Availability(online=True),
                     "facts": DeviceFacts(device_type="esp32_relay", firmware_version="2.0.0")}, "status online"),
    ("fw22_relays_state", {"relay_states": (RelayState(1, True),)}, "relay states"),
    ("fw22_level", {}, "telemetry"),
    ("fw22_error", {"alive": True, "events": (Event("error", {"code": "ERR_002"}),)}, "events error"),
    ("fw22_relay_events", {"alive": False, "events": (Event("safety_shutoff", {"channel": 2}, channel=2),)},
     "events safety_shutoff"),
])
def test_every_kind_of_2_2_message_is_refused(kind, fields, refused):
    dev = v1_with_boot()
    step = message(dev, 2.0, 2.0, "fw22", "json", kind, protocol_version=FW22, **fields)
    assert nothing_changed(step)
    (_, _, detail), = step.write.events
    assert detail["kind"] == kind and detail["refused"] == refused
    assert dev.relays == {} and dev.device_type == "relay_board" and dev.dialect == "v1"
    assert dev.counters[DIALECT_CONFLICT] == 1 and dev.counters["messages"] == 1  # the announce only


def test_a_fast_path_summary_is_refused_too():
    """The Router sends a locked device's 2.2 messages through `message`;
    a summary (its rows already stored) changes nothing all the same."""
    dev = v1_with_boot()
    step = seen(dev, 3.0, 3.0, 4, "fw22", "json", relay_states=(RelayState(1, True),), protocol_version=FW22)
    assert nothing_changed(step)
    assert step.write.events[0][2]["kind"] == "fast_path" and step.write.events[0][2]["count"] == 4
    assert dev.counters[DIALECT_CONFLICT] == 4 and dev.relays == {} and dev.dialect == "v1"


def test_a_flood_is_all_counted_but_writes_one_event_a_minute():
    dev = v1_with_boot()
    events = []
    for i in range(100):
        events += fw22_offline(dev, 10.0 + i * 0.5).write.events
    assert dev.counters[DIALECT_CONFLICT] == 100
    assert len(events) == 1 and events[0][2]["count"] == 1
    later = fw22_offline(dev, 10.0 + DIALECT_CONFLICT_EVENT_S)
    (_, _, detail), = later.write.events
    assert detail["count"] == 100  # the 99 unreported since the last event, and this one
    assert fw22_offline(dev, 11.0 + DIALECT_CONFLICT_EVENT_S).write.events == ()
    assert dev.status == "online"


def test_the_event_is_timed_by_reception_and_rate_limited_by_the_clock():
    dev = v1_with_boot()
    step = fw22_offline(dev, now=100.0, at=99.5)
    assert step.write.events[0][0] == 99.5


def test_v1_messages_are_served_as_ever():
    dev = v1_with_boot()
    fw22_offline(dev, 1.0)
    step = message(dev, 2.0, 2.0, "v1", "json", "status", alive=False, boot_id=17,
                       availability=Availability(online=False, boot_id=17))
    assert step.refused is None and step.write.status == "offline" and dev.status == "offline"


def test_someone_elses_relay_command_is_still_only_observed():
    dev = v1_with_boot()
    step = message(dev, 1.0, 1.0, "fw22", "json", "fw22_relay_set", alive=False, protocol_version=FW22,
                       observed=ObservedCommand(channel=1, command="on", state=True, user="config_app"))
    assert step.refused is None and names(step) == ["relay_command"]
    assert dev.counters[DIALECT_CONFLICT] == 0 and dev.dialect == "v1"


def test_a_device_restored_from_the_database_is_locked():
    dev = logic(UUID, RULES, status="online", dialect="v1", boot_id=17, last_seen=0.0)
    assert dev.dialect_locked
    assert nothing_changed(fw22_offline(dev, 1.0)) and dev.status == "online"
    assert dev.snapshot(1.0)["dialect_locked"] is True
    assert dev.snapshot(1.0)["counters"][DIALECT_CONFLICT] == 1


# ------------------------------------------------------------------ what stays as it was


def test_a_v1_device_without_a_boot_id_is_still_switched():
    dev = logic(UUID, RULES, status="online", dialect="v1", last_seen=0.0)
    assert not dev.dialect_locked
    step = fw22_offline(dev, 1.0)
    assert step.refused is None and step.write.protocol == "fw22" and step.write.status == "offline"
    assert "dialect_change" in names(step)


def test_an_unknown_device_becomes_a_2_2_device():
    dev = logic(UUID, RULES)
    step = seen(dev, 1.0, 1.0, 1, "fw22", "json", protocol_version=FW22)
    assert step.refused is None and step.write.ensure == "fw22" and dev.dialect == "fw22"


def test_a_2_2_board_is_served():
    dev = logic(UUID, RULES, status="online", dialect="fw22", device_type="esp32_relay", last_seen=0.0)
    assert not dev.dialect_locked
    assert fw22_offline(dev, 1.0).write.status == "offline"


# ------------------------------------------------------------------ the operator


def test_the_operator_setting_fw22_lets_2_2_messages_through():
    dev = v1_with_boot()
    fw22_offline(dev, 1.0)
    dev.set_dialect("fw22")
    assert not dev.dialect_locked and dev.liveness.timeout_s == 90.0  # the 2.2 period of an unknown type
    step = fw22_offline(dev, 2.0)
    assert step.refused is None and step.write.status == "offline" and step.availability == "offline"
    assert step.write.protocol is None  # the CLI wrote the dialect already
    assert dev.status == "offline"


def test_the_operator_setting_v1_locks_a_device_with_a_boot_id_again():
    dev = v1_with_boot()
    dev.set_dialect("fw22")
    dev.set_dialect("v1")
    assert dev.dialect_locked
    assert nothing_changed(fw22_offline(dev, 1.0))
    with pytest.raises(ValueError):
        dev.set_dialect("v2")


def test_a_v1_message_with_a_boot_after_the_operator_said_fw22_locks_it_again():
    dev = v1_with_boot()
    dev.set_dialect("fw22")
    step = message(dev, 1.0, 1.0, "v1", "json", "status", boot_id=17)
    assert step.write.protocol == "v1" and "dialect_change" in names(step) and dev.dialect_locked


def test_a_forgotten_device_starts_afresh_in_the_dialect_it_speaks():
    dev = v1_with_boot()
    fresh = dev.fresh()
    assert fresh.status is None and fresh.liveness.boot_id is None and not fresh.dialect_locked
    assert fresh.counters == {} and fresh.rules is dev.rules
    step = fw22_offline(fresh, 1.0)
    assert step.refused is None and step.write.ensure == "fw22" and fresh.dialect == "fw22"
