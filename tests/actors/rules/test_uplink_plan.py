import pytest

from actors.rules.pacing import Pacer
from actors.rules.uplink import Read, UplinkPlan
from protocol.uplink import BACKLOG, EVENTS, FRESH


def plan(window=4, rate=None):
    return UplinkPlan(window=window, pacer=Pacer(rate, None, now=0.0))


def drive(p, newest, now=0.0, batch=10, acks=True):
    """Send until nothing is left; ack each batch at once. The reads, in order."""
    reads, key = [], 0
    while True:
        r = p.next(now, newest)
        if r is None:
            return reads
        if isinstance(r, float):
            now += r
            continue
        key += 1
        last = min(r.last, r.first + batch - 1)
        p.sent(key, r, last, rows=last - r.first + 1, size=100, now=now)
        reads.append(Read(r.lane, r.table, r.first, last))
        if acks:
            assert p.on_ack(key) == (r.table, r.first, last)


def test_events_then_fresh_then_backlog():
    p = plan()
    p.on_connect(newest_telemetry=25)
    reads = drive(p, {"events": 12, "telemetry": 40})
    assert [r.lane for r in reads] == [EVENTS, EVENTS, FRESH, FRESH, BACKLOG, BACKLOG, BACKLOG]
    assert [(r.first, r.last) for r in reads if r.lane == FRESH] == [(26, 35), (36, 40)]
    assert [(r.first, r.last) for r in reads if r.lane == BACKLOG] == [(1, 10), (11, 20), (21, 25)]
    assert p.pending({"events": 12, "telemetry": 40}) == {"events": 0, "commands": 0,
                                                                 "telemetry": 0}


def test_the_window_bounds_batches_in_flight_and_a_reconnect_resends_them():
    p = plan(window=2)
    p.on_connect(newest_telemetry=0)
    newest = {"telemetry": 100}
    first = p.next(0.0, newest)
    p.sent(1, first, 10, rows=10, size=1, now=0.0)
    second = p.next(0.0, newest)
    assert (second.first, second.last) == (11, 100)
    p.sent(2, second, 20, rows=10, size=1, now=0.0)
    assert p.next(0.0, newest) is None  # window full
    assert p.on_ack(2) == ("telemetry", 11, 20)  # out of order
    third = p.next(0.0, newest)
    assert (third.first, third.last) == (21, 100)
    # The connection drops with 1 and 3 unacknowledged: they go again, after 1..10.
    p.on_disconnect()
    assert p.on_ack(1) is None
    p.on_connect(newest_telemetry=100)
    again = p.next(0.0, newest)
    assert (again.lane, again.first, again.last) == (BACKLOG, 1, 10)


def test_the_backlog_is_paced_and_fresh_rows_are_not():
    p = plan(rate=20.0)  # 20 backlog rows a second, a burst of 20 rows
    p.on_connect(newest_telemetry=1000)
    now, times = 0.0, []
    for key in range(1, 7):
        r = p.next(now, {"telemetry": 1000})
        while isinstance(r, float):
            now += r
            r = p.next(now, {"telemetry": 1000})
        assert r.lane == BACKLOG
        p.sent(key, r, r.first + 9, rows=10, size=1, now=now)
        p.on_ack(key)
        times.append(now)
    # the burst's 20 rows at once, then a 10-row batch every 0.5 s (20 rows/s)
    assert times[:2] == [0.0, 0.0]
    assert [b - a for a, b in zip(times[2:], times[3:])] == pytest.approx([0.5, 0.5, 0.5])
    # a fresh row is sent at once, whatever the pace
    r = p.next(now, {"telemetry": 1001})
    assert isinstance(r, Read) and r.lane == FRESH and (r.first, r.last) == (1001, 1001)


def test_a_range_with_no_rows_left_is_done_at_once():
    p = plan()
    p.on_connect(newest_telemetry=50)
    r = p.next(0.0, {"telemetry": 50})
    p.sent(1, r, 50, rows=0, size=0, now=0.0)  # pruned meanwhile
    assert p.next(0.0, {"telemetry": 50}) is None and p.in_flight == 0
    assert p.acked["telemetry"].low_watermark() == 50


def test_acknowledged_ranges_from_before_a_restart_are_skipped():
    from actors.rules.acked import AckedRanges

    p = UplinkPlan(window=4, pacer=Pacer(None, None, 0.0), acked={"telemetry": AckedRanges([(1, 30), (41, 50)])})
    p.on_connect(newest_telemetry=60)
    reads = drive(p, {"telemetry": 60})
    assert [(r.lane, r.first, r.last) for r in reads] == [(BACKLOG, 31, 40), (BACKLOG, 51, 60)]


def test_sent_must_stay_inside_the_read():
    p = plan()
    p.on_connect(0)
    r = p.next(0.0, {"telemetry": 5})
    with pytest.raises(ValueError):
        p.sent(1, r, 6, rows=1, size=1, now=0.0)


def test_a_refused_batch_is_sent_again_and_not_counted_done():
    p = plan(window=4)
    p.on_connect(newest_telemetry=0)
    newest = {"telemetry": 30}
    first = p.next(0.0, newest)
    p.sent(1, first, 10, rows=10, size=1, now=0.0)
    assert p.on_refused(1) is True and p.on_refused(1) is False
    again = p.next(0.0, newest)
    assert (again.first, again.last) == (1, 30)
    assert p.acked["telemetry"].low_watermark() == 0
