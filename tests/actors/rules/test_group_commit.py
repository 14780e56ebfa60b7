"""When the store fsyncs the write-ahead log (actors/rules/group_commit.py)."""

import pytest

from actors.rules.group_commit import GroupCommit


def test_nothing_waiting_needs_no_sync():
    assert GroupCommit(0.05, 1 << 20).due_at(10.0, waiting=False, urgent=True, written=0) is None


def test_the_first_sync_is_at_once_then_at_most_one_per_interval():
    rule = GroupCommit(0.05, 1 << 20)
    assert rule.due_at(10.0, True, False, 0) == 10.0
    rule.synced(10.0, 0)
    assert rule.due_at(10.01, True, False, 100) == pytest.approx(10.05)
    assert rule.due_at(10.2, True, False, 100) == 10.2  # long after the last: at once


def test_at_most_twenty_syncs_a_second_at_any_rate():
    rule = GroupCommit(0.05, 1 << 30)
    now, syncs = 0.0, 0
    while now < 1.0:  # a commit every millisecond, each waiting for a sync
        due = rule.due_at(now, True, False, int(now * 1e6))
        if due <= now:
            rule.synced(now, int(now * 1e6))
            syncs += 1
        now += 0.001
    assert syncs <= 20


def test_bytes_written_bring_the_sync_forward():
    rule = GroupCommit(0.05, 1000)
    rule.synced(10.0, 5000)
    assert rule.due_at(10.001, True, False, 5999) == pytest.approx(10.05)
    assert rule.due_at(10.001, True, False, 6000) == 10.001


def test_urgent_and_zero_interval_sync_at_once():
    rule = GroupCommit(0.05, 1000)
    rule.synced(10.0, 0)
    assert rule.due_at(10.001, True, True, 0) == 10.001
    zero = GroupCommit(0, 1000)
    zero.synced(10.0, 0)
    assert zero.due_at(10.0, True, False, None) == 10.0


def test_bad_bounds_are_refused():
    with pytest.raises(ValueError, match="interval_s"):
        GroupCommit(-1, 10)
    with pytest.raises(ValueError, match="max_bytes"):
        GroupCommit(0.05, 0)
