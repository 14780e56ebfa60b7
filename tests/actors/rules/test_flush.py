"""FlushPolicy: when the telemetry buffer goes to the writer."""

import pytest

from actors.rules.flush import FlushPolicy

P = FlushPolicy(batch_rows=100, max_age_s=0.05, max_queued=1)


def test_nothing_buffered_never_flushes():
    assert not P.should_flush(10.0, rows=0, items=0, oldest_at=None, in_writer=0)
    assert not P.should_flush(10.0, rows=0, items=0, oldest_at=None, in_writer=1)


def test_idle_writer_takes_anything_at_once():
    assert P.should_flush(10.0, rows=1, items=1, oldest_at=10.0, in_writer=0)


def test_busy_writer_waits_for_a_full_batch():
    assert not P.should_flush(10.0, rows=99, items=5, oldest_at=10.0, in_writer=1)
    assert P.should_flush(10.0, rows=100, items=5, oldest_at=10.0, in_writer=1)
    assert P.should_flush(10.0, rows=500, items=5, oldest_at=10.0, in_writer=1)


def test_busy_writer_gets_old_rows_after_max_age():
    assert not P.should_flush(10.049, rows=1, items=1, oldest_at=10.0, in_writer=1)
    assert P.should_flush(10.05, rows=1, items=1, oldest_at=10.0, in_writer=1)


def test_at_most_max_queued_batches_wait_at_the_writer():
    # one written, max_queued more waiting: nothing more, however full or old
    assert not P.should_flush(99.0, rows=10_000, items=5, oldest_at=10.0, in_writer=2)
    deeper = FlushPolicy(batch_rows=100, max_age_s=0.05, max_queued=3)
    assert deeper.should_flush(99.0, rows=100, items=5, oldest_at=10.0, in_writer=3)
    assert not deeper.should_flush(99.0, rows=100, items=5, oldest_at=10.0, in_writer=4)


def test_next_check():
    assert P.next_check(None) is None
    assert P.next_check(10.0) == 10.0 + 0.05


def test_an_idle_writer_gets_at_most_one_batch_per_interval():
    policy = FlushPolicy(batch_rows=2000, max_age_s=0.05, min_interval_s=0.02)
    # Nothing flushed yet: at once.
    assert policy.should_flush(10.0, 1, 1, 10.0, 0, last_flush_at=None)
    # 5 ms after the last batch: wait until 20 ms have passed...
    assert not policy.should_flush(10.005, 1, 1, 10.005, 0, last_flush_at=10.0)
    assert policy.next_check(10.005, last_flush_at=10.0, in_writer=0) == pytest.approx(10.02)
    assert policy.should_flush(10.02, 3, 3, 10.005, 0, last_flush_at=10.0)
    # ...unless a full batch is there already.
    assert policy.should_flush(10.005, 2000, 2000, 10.001, 0, last_flush_at=10.0)
    # While the writer is busy the age rule applies as before.
    assert policy.next_check(10.005, last_flush_at=10.0, in_writer=1) == pytest.approx(10.055)


def test_commits_per_second_are_bounded_whatever_the_rate():
    """One message every millisecond for a second, flushed by the policy as
    the batcher does: about 1 / min_interval batches, not 1,000."""
    policy = FlushPolicy(batch_rows=2000, max_age_s=0.05, min_interval_s=0.02)
    batches, rows, oldest, last = 0, 0, None, None
    for i in range(1000):
        now = i / 1000.0
        rows += 1
        oldest = now if oldest is None else oldest
        if policy.should_flush(now, rows, rows, oldest, 0, last_flush_at=last):
            batches, rows, oldest, last = batches + 1, 0, None, now
    assert 45 <= batches <= 51


def test_a_big_enough_batch_goes_at_once_a_small_one_waits_for_the_interval():
    """Issue 11: tiny commits write nearly the pages of big ones, so a batch
    under `small_rows` waits for `min_interval_s`; one at or over it goes."""
    policy = FlushPolicy(batch_rows=2000, max_age_s=0.05, min_interval_s=0.05, small_rows=64)
    assert not policy.should_flush(10.01, 63, 63, 10.0, 0, last_flush_at=10.0)
    assert policy.should_flush(10.01, 64, 64, 10.0, 0, last_flush_at=10.0)
    assert policy.should_flush(10.05, 1, 1, 10.04, 0, last_flush_at=10.0)
    # a busy writer: the age rule, whatever the size
    assert not policy.should_flush(10.01, 64, 64, 10.0, 1, last_flush_at=10.0)


def test_the_wait_only_bites_when_batches_are_tiny():
    """A message a millisecond (3 rows each) for a second: batches of about
    64 rows, every ~22 ms, rather than one every 50 ms; at one message every
    10 ms, one batch per 50 ms."""
    policy = FlushPolicy(batch_rows=2000, max_age_s=0.05, min_interval_s=0.05, small_rows=64)

    def run(every_ms: int) -> list[int]:
        sizes, rows, oldest, last = [], 0, None, None
        for i in range(0, 1000, every_ms):
            now = i / 1000.0
            rows += 3
            oldest = now if oldest is None else oldest
            if policy.should_flush(now, rows, rows, oldest, 0, last_flush_at=last):
                sizes.append(rows)
                rows, oldest, last = 0, None, now
        return sizes

    fast = run(1)
    assert all(s <= 66 for s in fast[1:]) and 40 <= len(fast) <= 50
    slow = run(10)
    assert all(s <= 15 for s in slow) and 18 <= len(slow) <= 21


def test_the_interval_never_holds_a_row_past_max_age():
    """An age shorter than the interval wins: the batcher's timer fires at
    oldest + max_age, and the flush must happen then (or nothing would wake
    it again)."""
    policy = FlushPolicy(batch_rows=2000, max_age_s=0.02, min_interval_s=0.05, small_rows=64)
    at = policy.next_check(10.001, last_flush_at=10.0, in_writer=0)
    assert at == pytest.approx(10.021)
    assert not policy.should_flush(10.02, 0, 1, 10.001, 0, last_flush_at=10.0)
    assert policy.should_flush(at, 0, 1, 10.001, 0, last_flush_at=10.0)
