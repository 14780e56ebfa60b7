"""FlushPolicy: when the telemetry buffer goes to the writer."""

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
