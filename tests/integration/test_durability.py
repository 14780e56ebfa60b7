"""Nothing acknowledged is lost, nothing is stored twice: kill -9 in the
middle of a stream, and a graceful stop under load (PROTOCOL.md "Guarantees")."""

from __future__ import annotations

import time

from tests.integration.helpers import Stream
from tests.support.broker import wait_until

# The single-instance behaviour, on both backends (tests/integration/conftest.py).
ENGINES = ("sqlite", "postgresql")

N = 5000


def stored_seqs(db, uuid) -> tuple[int, int]:
    row = db.rows("SELECT COUNT(*), COUNT(DISTINCT seq) FROM telemetry WHERE device_uuid = ?", uuid)[0]
    return row[0], row[1]


def assert_each_seq_once(db, uuid, n):
    total, distinct = stored_seqs(db, uuid)
    assert (total, distinct) == (n, n), f"{total} rows, {distinct} distinct seqs, {n} published"
    assert db.one("SELECT MIN(seq) FROM telemetry WHERE device_uuid = ?", uuid) == 1
    assert db.one("SELECT MAX(seq) FROM telemetry WHERE device_uuid = ?", uuid) == n


def test_kill_9_in_the_middle_of_a_stream_loses_nothing_and_stores_nothing_twice(gateways, db, broker):
    gw = gateways()
    uuid = "stream-kill"
    # Paced to last a second or two, so the cut falls while it is published.
    stream = Stream(broker.port, uuid, N, pause_every=100, pause_s=0.03).start()
    try:
        # Mid-stream: some stored, the publisher still going.
        wait_until(lambda: db.count(uuid) >= N // 10, 30, what="the first tenth stored")
        assert not stream.done.is_set(), "the stream ended before the kill"
        gw.kill()
        cut_at = db.count(uuid)
        assert cut_at < N, "everything was stored before the kill; nothing was cut"
        gateways.allow_tracebacks = True  # a killed process may leave half a line
        stream.wait(60)  # the broker keeps what the gateway missed
        gateways()  # the same database, the same persistent session
        wait_until(lambda: db.count(uuid) >= N, 60, what=f"all {N} messages stored after the restart")
        assert_each_seq_once(db, uuid, N)
    finally:
        stream.stop()


def test_graceful_stop_under_load_commits_and_acknowledges_everything(gateways, db, broker):
    gw = gateways()
    uuid = "stream-stop"
    # Paced to last a second or two, so the cut falls while it is published.
    stream = Stream(broker.port, uuid, N, pause_every=100, pause_s=0.03).start()
    try:
        wait_until(lambda: db.count(uuid) >= N // 10, 30, what="the first tenth stored")
        assert not stream.done.is_set(), "the stream ended before the stop"
        started = time.monotonic()
        rc = gw.stop(timeout=10)
        took = time.monotonic() - started
        assert rc == 0, "\n".join(gw.lines[-30:])
        assert took < 5.0, f"the stop took {took:.1f} s"
        assert any("stopped" in line for line in gw.lines)
        stopped_with = db.count(uuid)
        assert stopped_with < N, "everything was stored before the stop; nothing was under way"
        stream.wait(60)
        gateways()
        wait_until(lambda: db.count(uuid) >= N, 60, what=f"all {N} messages stored after the restart")
        assert_each_seq_once(db, uuid, N)
    finally:
        stream.stop()


def test_the_gateway_reconnects_after_a_broker_restart(gateways, db, devices, broker):
    gw = gateways()
    dev = devices()
    dev.telemetry(seq=1, boot_id=1)
    wait_until(lambda: db.count(dev.uuid) == 1, 10, what="seq 1")
    dev.disconnect()
    broker.stop()  # a clean stop: the broker saves its sessions
    gw.wait_for_line("lost the broker connection")
    broker.start()  # the same port, the same persistence directory
    gw.wait_for_line("(connection 2)", timeout=30)
    dev.connect()
    dev.telemetry(seq=2, boot_id=1)
    wait_until(lambda: db.count(dev.uuid) == 2, 10, what="seq 2 after the reconnection")
    assert gw.proc.poll() is None
