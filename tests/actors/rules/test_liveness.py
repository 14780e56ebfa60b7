"""Liveness of one device (PROTOCOL.md "Liveness")."""

import pytest

from actors.rules.liveness import DISCOVERED, OFFLINE, ONLINE, Liveness, timeout_for


def events(pairs):
    return [e for e, _ in pairs]


def test_unknown_device_online_on_first_message():
    live = Liveness()
    assert not live.online
    assert live.deadline() is None
    out = live.seen(100.0)
    assert events(out) == [ONLINE]
    assert out[0][1] == {"previous": None}
    assert live.online and live.status == ONLINE
    assert live.last_seen == 100.0


def test_first_boot_id_is_not_a_reboot():
    live = Liveness()
    assert events(live.seen(1.0, boot_id=17)) == [ONLINE]
    assert live.boot_id == 17


def test_further_messages_no_events():
    live = Liveness()
    live.seen(100.0, boot_id=1)
    assert live.seen(101.0, boot_id=1) == []
    assert live.seen(102.0) == []  # no boot_id in the message: no change
    assert live.boot_id == 1
    assert live.last_seen == 102.0


@pytest.mark.parametrize(
    "interval, minimum, expected",
    [(5, 15, 15.0), (10, 15, 30.0), (1, 15, 15.0), (None, 15, 15.0), (None, 60, 60.0), (20, 0, 60.0)],
)
def test_timeout_for(interval, minimum, expected):
    assert timeout_for(interval, minimum) == expected


@pytest.mark.parametrize("interval", [5, 10, 30])
def test_offline_exactly_at_deadline_not_before(interval):
    live = Liveness(timeout_s=timeout_for(interval, 15.0))
    timeout = max(3 * interval, 15.0)
    live.seen(1000.0)
    assert live.deadline() == 1000.0 + timeout
    assert live.check(1000.0 + timeout - 0.001) == []
    assert live.online
    out = live.check(1000.0 + timeout)
    assert events(out) == [OFFLINE]
    assert out[0][1]["reason"] == "timeout"
    assert out[0][1]["silent_s"] == pytest.approx(timeout)
    assert live.status == OFFLINE
    assert live.deadline() is None  # no further wake-ups while offline
    assert live.check(1e9) == []  # offline once, not again


def test_each_message_pushes_the_deadline():
    live = Liveness(timeout_s=15.0)
    live.seen(0.0)
    live.seen(10.0)
    assert live.deadline() == 25.0
    assert live.check(20.0) == []
    assert events(live.check(25.0)) == [OFFLINE]


def test_late_stamped_message_does_not_move_last_seen_back():
    live = Liveness(timeout_s=15.0)
    live.seen(10.0)
    live.seen(5.0)
    assert live.last_seen == 10.0
    assert live.deadline() == 25.0


def test_back_online_after_timeout():
    live = Liveness(timeout_s=15.0)
    live.seen(0.0)
    live.check(15.0)
    out = live.seen(40.0)
    assert events(out) == [ONLINE]
    assert out[0][1] == {"previous": OFFLINE}
    assert live.deadline() == 55.0


def test_will_marks_offline_and_back_online():
    live = Liveness()
    live.seen(0.0, boot_id=3)
    out = live.offline(5.0, boot_id=3)
    assert events(out) == [OFFLINE]
    assert out[0][1] == {"reason": "will", "boot_id": 3}
    assert live.status == OFFLINE
    assert live.deadline() is None
    assert live.offline(6.0, boot_id=3) == []  # already offline: nothing new
    assert events(live.seen(7.0, boot_id=3)) == [ONLINE]


def test_offline_reason_is_kept():
    live = Liveness()
    live.seen(0.0)
    out = live.offline(1.0, reason="power_off")
    assert out == [(OFFLINE, {"reason": "power_off"})]


def test_stale_will_ignored_and_counted():
    live = Liveness()
    live.seen(0.0, boot_id=17)
    live.seen(1.0, boot_id=18)  # rebooted
    assert live.offline(2.0, boot_id=17) == []  # the Will of boot 17 arrives late
    assert live.online
    assert live.stale_wills == 1
    assert live.boot_id == 18
    assert live.offline(3.0, boot_id=5) == []
    assert live.stale_wills == 2
    assert live.online


def test_will_of_current_boot_is_not_stale():
    live = Liveness()
    live.seen(0.0, boot_id=17)
    assert events(live.offline(2.0, boot_id=17)) == [OFFLINE]
    assert live.stale_wills == 0


def test_reboot_on_new_boot_id():
    live = Liveness()
    live.seen(0.0, boot_id=17)
    out = live.seen(1.0, boot_id=18)
    assert out == [("reboot", {"previous_boot_id": 17, "boot_id": 18})]
    assert live.boot_id == 18
    assert live.online


def test_reboot_while_offline_comes_back_online():
    live = Liveness(timeout_s=15.0)
    live.seen(0.0, boot_id=1)
    live.offline(1.0, boot_id=1)
    assert events(live.seen(30.0, boot_id=2)) == ["reboot", ONLINE]


def test_will_with_newer_boot_is_reboot_then_offline():
    live = Liveness()
    live.seen(0.0, boot_id=1)
    assert events(live.offline(1.0, boot_id=2)) == ["reboot", OFFLINE]
    assert live.boot_id == 2


def test_discovered_device_goes_online():
    live = Liveness(status=DISCOVERED)
    assert live.deadline() is None
    out = live.seen(1.0)
    assert out == [(ONLINE, {"previous": DISCOVERED})]


def test_restored_online_state_times_out_from_last_seen():
    live = Liveness(status=ONLINE, boot_id=4, last_seen=100.0, timeout_s=15.0)
    assert live.deadline() == 115.0
    assert live.check(114.0) == []
    assert events(live.check(115.0)) == [OFFLINE]
