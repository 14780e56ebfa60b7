"""The full-disk stall rule, without threads: retry pacing and log pacing."""

from actors.rules.stall import DISK_FULL, OK, UNREACHABLE, Stall


def test_a_stall_is_logged_once_then_once_a_minute_with_counts_and_its_end_once():
    stall = Stall(first_retry_s=0.5, max_retry_s=4.0, log_every_s=60.0)
    first = stall.failed(100.0, "database or disk is full", waiting_batches=1)
    assert stall.state == DISK_FULL and first.log and "full" in first.log and first.retry_at == 100.5
    delays, logs = [], []
    now = 100.5
    for _ in range(40):
        report = stall.failed(now, "database or disk is full", waiting_batches=3)
        delays.append(report.retry_at - now)
        if report.log:
            logs.append((now, report.log))
        now = report.retry_at
    assert delays[:4] == [1.0, 2.0, 4.0, 4.0]  # doubling, capped
    assert [t for t, _ in logs] == [t for t, _ in logs if t >= 160.0]  # nothing in the first minute
    assert 1 <= len(logs) <= (now - 100.0) / 60.0 + 1
    assert "more failed attempts" in logs[0][1] and "3 batches waiting" in logs[0][1]
    line = stall.recovered(now)
    assert stall.state == OK and "writable again" in line and "41 failed attempts" in line
    assert stall.recovered(now + 1) is None
    again = stall.failed(now + 5, "full", 1)
    assert again.log and again.retry_at == now + 5.5 and stall.stalls == 2


def test_snapshot_says_how_long_and_when_next():
    stall = Stall(first_retry_s=1.0)
    assert stall.snapshot(0.0)["state"] == OK
    stall.failed(10.0, "disk full", 2)
    snap = stall.snapshot(10.25)
    assert snap["state"] == DISK_FULL and snap["stalled_for_s"] == 0.2 and snap["retry_in_s"] == 0.75
    assert snap["failed_attempts"] == 1 and snap["reason"] == "disk full"


def test_a_lost_database_server_is_a_stall_of_its_own_kind():
    s = Stall(first_retry_s=0.5)
    report = s.failed(100.0, "connection refused", 2, UNREACHABLE)
    assert s.state == UNREACHABLE and report.retry_at == 100.5
    assert report.log is not None and report.log.startswith("the database server cannot be reached (connection refused)")
    assert "until it answers again" in report.log
    later = s.failed(161.0, "connection refused", 3, UNREACHABLE)
    assert later.log is not None and later.log.startswith("the database server still cannot be reached after 61 s")
    assert s.snapshot(161.0)["state"] == "database_unreachable"
    assert s.recovered(170.0) is not None and s.state == "ok"
