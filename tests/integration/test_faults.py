"""The faults of issue 11 ("Keep what already holds"), each on a real
Mosquitto, the gateway as a real subprocess and its SQLite file: broker
restarts, a SIGKILLed broker, another program holding the write lock, a
flood of malformed messages, `kill -9` of the store process, and the whole
gateway frozen past its MQTT keep-alive. Each waits for conditions with
deadlines; a fault is held for a set time only where the fault is a
duration (a lock, a freeze).

Sizes: the malformed flood sends AUTOCORE_FAULT_VOLUME messages (20,000 by
default, for `make test`; the issue's full size, 200,000, runs in `make
bench` as scenario 10, or here with
`AUTOCORE_FAULT_VOLUME=200000 .venv/bin/python -m pytest tests/integration/test_faults.py -k flood`).
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter

from tests.integration.helpers import Stream, inspect
from tests.support.broker import wait_until
from tests.support.faults import (
    MAX_PAYLOAD,
    HeldWriteLock,
    PersistentPublisher,
    alive,
    broker_saved_at,
    freeze,
    gateway_pids,
    expected_rejections,
    kill_broker,
    malformed_plan,
    publish_lines,
    rss_mib,
    thaw,
)

# Every stream here comes from one device far faster than a real one: the
# per-device rate limit would reject (and acknowledge) part of it, which is
# the rate limiter's business (test_robustness), not these faults'.
UNLIMITED = {"device_rate": 1_000_000, "device_burst": 1_000_000}

VOLUME = int(os.environ.get("AUTOCORE_FAULT_VOLUME", "20000"))


def stats(gw) -> dict:
    return inspect(gw.socket_path, "stats")["stats"]


def seq_counts(db, uuid: str) -> tuple[int, int]:
    row = db.rows("SELECT COUNT(*), COUNT(DISTINCT seq) FROM telemetry WHERE device_uuid = ?", uuid)[0]
    return row[0], row[1]


def assert_each_seq_once(db, uuid: str, n: int) -> None:
    total, distinct = seq_counts(db, uuid)
    assert (total, distinct) == (n, n), f"{total} rows, {distinct} distinct seqs, {n} published"
    assert db.one("SELECT MIN(seq) FROM telemetry WHERE device_uuid = ?", uuid) == 1
    assert db.one("SELECT MAX(seq) FROM telemetry WHERE device_uuid = ?", uuid) == n


def stored_seqs(db, uuid: str) -> set[int]:
    return {r[0] for r in db.rows("SELECT seq FROM telemetry WHERE device_uuid = ?", uuid)}


def more_stored(db, uuid: str, at_least: int, timeout: float = 20.0) -> None:
    """Progress: `at_least` more rows than now."""
    target = db.count(uuid) + at_least
    wait_until(lambda: db.count(uuid) >= target, timeout, what=f"{target} messages of {uuid} stored")


# -- 1. broker restarts -----------------------------------------------------------

RESTARTS = 4


def test_broker_restarts_mid_stream_lose_nothing_and_store_nothing_twice(gateways, db, broker):
    """Mosquitto stopped with SIGTERM (it saves its sessions) and started
    again on the same port and persistence directory, RESTARTS times while
    a device publishes QoS 1 telemetry on a persistent session: every seq
    is stored exactly once, and the gateway is back on each new broker
    within a few seconds (issue 11 measured 0.9 s; its first retry comes
    0.25-0.75 s after the loss, then backs off from 0.5 s)."""
    gw = gateways(**UNLIMITED)
    uuid = "fault-restarts"
    pub = PersistentPublisher(broker.port, uuid, rate=1000).start()
    back_after: list[float] = []
    try:
        for k in range(1, RESTARTS + 1):
            more_stored(db, uuid, 300)
            mark = len(gw.lines)
            broker.stop()  # SIGTERM
            assert broker.proc.returncode == 0, f"mosquitto exited {broker.proc.returncode}"
            gw.wait_for_line("lost the broker connection", 10, after=mark)
            broker.start()  # the same port, configuration and persistence directory
            accepting = time.monotonic()
            gw.wait_for_line(f"(connection {k + 1})", 15, after=mark)
            back_after.append(time.monotonic() - accepting)
        more_stored(db, uuid, 300)
        n = pub.stop()  # every message acknowledged by the broker
        wait_until(lambda: db.count(uuid) >= n, 30, what=f"all {n} messages stored")
        assert_each_seq_once(db, uuid, n)
        wait_until(lambda: stats(gw)["mqtt"]["unacknowledged"] == 0, 10, what="every message acknowledged")
    finally:
        pub.close()
    mqtt = stats(gw)["mqtt"]
    assert mqtt["connected"] and mqtt["connection"] == RESTARTS + 1, mqtt
    assert mqtt["counters"].get("connection_lost") == RESTARTS, mqtt["counters"]
    assert pub.connections == RESTARTS + 1  # the publisher's session went through every restart too
    assert gw.proc.poll() is None
    print(f"\n{n} messages, {RESTARTS} broker restarts; gateway back after "
          + ", ".join(f"{s:.2f}" for s in back_after) + " s")
    assert max(back_after) < 3.0, f"reconnected after {back_after} s of the broker accepting again"


# -- 2. a SIGKILLed broker -----------------------------------------------------------

SAVE_SLACK_S = 0.5  # a save's own duration and the file clock's granularity


def test_a_sigkilled_broker_loses_at_most_what_it_had_not_saved(gateways, db, broker):
    """Mosquitto SIGKILLed mid-stream (persistence on, `autosave_interval 1`:
    in Mosquitto 2.0 a save every 1-2 s) and started again from its file.

    What is guaranteed, and asserted: nothing the gateway received is lost
    (it commits before it acknowledges, and stores what it received even if
    the acknowledgement can no longer go out); no seq is stored twice
    (redeliveries of an older snapshot are absorbed by the unique key); the
    gateway reconnects by itself; everything published after the restart is
    stored; and every missing seq is one the broker acknowledged to the
    publisher after the start of its last save before the kill (the save's
    file mtime, less SAVE_SLACK_S).

    What is not guaranteed: a message the broker acknowledged to the
    publisher after its last save and had not yet delivered to the gateway
    is gone with the broker's memory (FIELD-NOTES, "Persistence"): the
    gateway never saw it and nobody will send it again. That window is the
    broker's configuration, not the gateway's; with a gateway that keeps up
    it is usually empty (the count is printed)."""
    gw = gateways(**UNLIMITED)
    pid = gw.proc.pid
    uuid = "fault-broker-kill"
    pub = PersistentPublisher(broker.port, uuid, rate=1000).start()
    try:
        more_stored(db, uuid, 1000)
        streaming = time.time()
        # A save that holds part of the stream, so the bound below is about this run.
        wait_until(lambda: (broker_saved_at(broker) or 0.0) > streaming, 10, what="a broker autosave during the stream")
        more_stored(db, uuid, 800)  # the kill falls somewhere in the next autosave interval
        mark = len(gw.lines)
        kill_broker(broker)
        killed_at = time.time()
        saved_at = broker_saved_at(broker)  # the last save before the kill (the file no longer changes)
        assert saved_at is not None
        gw.wait_for_line("lost the broker connection", 10, after=mark)
        broker.start()  # from what it had saved
        gw.wait_for_line("(connection 2)", 15, after=mark)
        more_stored(db, uuid, 500)
        n = pub.stop()  # every message acknowledged by the (new) broker
        # The broker delivers a session's queue in order: once the last seq is
        # stored and nothing is left unacknowledged, everything it had is stored.
        wait_until(lambda: db.one("SELECT MAX(seq) FROM telemetry WHERE device_uuid = ?", uuid) == n, 30,
                   what=f"seq {n}, the last one, stored")
        wait_until(lambda: stats(gw)["mqtt"]["unacknowledged"] == 0, 10, what="every message acknowledged")
    finally:
        pub.close()

    total, distinct = seq_counts(db, uuid)
    assert total == distinct, f"{total - distinct} seqs stored twice"
    missing = sorted(set(range(1, n + 1)) - stored_seqs(db, uuid))
    outside = [(s, pub.acked_at(s)) for s in missing
               if not (saved_at - SAVE_SLACK_S <= (pub.acked_at(s) or 0.0) <= killed_at)]
    assert not outside, (f"{len(outside)} seqs lost that the broker had acknowledged before its last save "
                         f"({saved_at:.3f}) or after the kill ({killed_at:.3f}): {outside[:10]}")
    window = sum(1 for s in range(1, n + 1) if saved_at - SAVE_SLACK_S <= (pub.acked_at(s) or 0.0) <= killed_at)
    print(f"\n{n} messages; {len(missing)} lost with the broker, of {window} it acknowledged in its unsaved "
          f"window ({killed_at - saved_at:.2f} s since its last save)")
    assert gw.proc.poll() is None and gw.proc.pid == pid
    assert stats(gw)["mqtt"]["connected"]


# -- 3. another program holding the SQLite write lock -----------------------------

BUSY_TIMEOUT_MS = 500
LOCK_HELD_S = 5.0
CATCH_UP_S = 3.0


def test_another_program_holding_the_write_lock_stalls_storage_only_and_loses_nothing(gateways, db, broker):
    """Another connection (the Config App) holds the database's write lock
    with BEGIN IMMEDIATE for LOCK_HELD_S, ten times the gateway's busy
    timeout, in the middle of a stream: the writer retries (counted), MQTT
    keeps reading meanwhile, nothing is lost or stored twice, no process
    restarts, and what had arrived is stored within CATCH_UP_S of the
    release (issue 11 measured 0.6 s after a 10 s lock)."""
    gw = gateways(db_busy_timeout_ms=BUSY_TIMEOUT_MS, **UNLIMITED)
    pids = gateway_pids(gw)
    uuid = "fault-lock"
    n = 10000
    # About 1,000 messages/s for about 10 s: the stream runs before, during and after the lock.
    stream = Stream(broker.port, uuid, n, pause_every=100, pause_s=0.1).start()
    try:
        wait_until(lambda: db.count(uuid) >= 500, 30, what="the first 500 stored")
        lock = HeldWriteLock(gw.db_path, LOCK_HELD_S).start()
        held_with = db.count(uuid)
        received = stats(gw)["mqtt"]["received"]
        # Storage stalls, MQTT does not: the gateway goes on reading.
        wait_until(lambda: stats(gw)["mqtt"]["received"] >= received + 1000, LOCK_HELD_S - 1,
                   what="the gateway reading MQTT while the database is locked")
        if lock.released_at is None:
            assert db.count(uuid) == held_with, "rows were committed under another connection's write lock"
        released = lock.join(LOCK_HELD_S + 5)
        arrived = stream.written  # handed to the publisher by the release
        assert not stream.done.is_set(), "the stream ended during the lock; nothing came after it"
        wait_until(lambda: db.count(uuid) >= arrived, CATCH_UP_S + 5, what=f"{arrived} messages stored after the release")
        caught_up = time.monotonic() - released
        writer = stats(gw)["writer"]
        stream.wait(60)
        wait_until(lambda: db.count(uuid) >= n, 30, what=f"all {n} messages stored")
        assert_each_seq_once(db, uuid, n)
        wait_until(lambda: stats(gw)["mqtt"]["unacknowledged"] == 0, 10, what="every message acknowledged")
    finally:
        stream.stop()
    retries = writer["counters"].get("busy_retries", 0)
    print(f"\nlock held {LOCK_HELD_S:.0f} s (busy timeout {BUSY_TIMEOUT_MS} ms): {retries} busy retries, "
          f"{arrived} messages stored {caught_up:.2f} s after the release")
    # At most one retry per busy timeout plus the writer's pause; at least a few in 5 s.
    assert retries >= 3, writer["counters"]
    assert any("the database stayed locked" in line for line in gw.lines)
    assert gateway_pids(gw) == pids, "a process of the gateway was restarted"
    assert caught_up < CATCH_UP_S, f"caught up {caught_up:.2f} s after the release"


# -- 4. a flood of malformed messages --------------------------------------------

RSS_GROWTH_MB = 20.0


def test_a_flood_of_malformed_messages_is_counted_by_reason_with_flat_memory(gateways, db, devices, broker, tmp_path):
    """VOLUME malformed QoS 1 messages at once (bad encodings, wrong types,
    oversize, topics with a bad uuid) from five publishers: no process
    crashes or restarts, every one is counted under the reason the protocol
    gives it (the counts equal the decoder's verdicts exactly) and
    acknowledged, the RSS of core and store grows by less than
    RSS_GROWTH_MB, and a good device is served afterwards."""
    gw = gateways(max_payload=MAX_PAYLOAD, **UNLIMITED)
    pids = gateway_pids(gw)
    warm = devices("fault-flood-warm")
    warm.telemetry(seq=1, boot_id=1)
    wait_until(lambda: db.count(warm.uuid) == 1, 10, what="a valid message before the flood")
    before = stats(gw)
    rss_before = {p: rss_mib(pids[p]) for p in ("core", "store")}
    peak = dict(rss_before)
    plan = malformed_plan(VOLUME)
    wanted = expected_rejections(plan)
    assert {"bad_encoding", "schema", "too_large", "bad_uuid"} <= set(wanted), wanted
    assert sum(wanted.values()) == VOLUME

    started = time.monotonic()
    procs = [publish_lines(broker.port, topic, lines, f"flood-{i}", tmp_path) for i, (topic, lines) in enumerate(plan)]
    for proc in procs:
        rc = proc.wait(60 + VOLUME / 2000)
        assert rc == 0, f"mosquitto_pub failed ({rc}): {proc.stderr.read().decode(errors='replace')}"

    base = Counter(before["rejections"])

    def counted() -> int:
        for p in peak:
            peak[p] = max(peak[p], rss_mib(pids[p]))
        return sum((Counter(stats(gw)["rejections"]) - base).values())

    wait_until(lambda: counted() >= VOLUME, 30 + VOLUME / 2000, interval=0.2, what=f"{VOLUME} messages rejected")
    took = time.monotonic() - started
    wait_until(lambda: stats(gw)["mqtt"]["unacknowledged"] == 0, 10, what="every malformed message acknowledged")
    after = stats(gw)
    got = Counter(after["rejections"]) - base
    assert got == wanted, f"counted {dict(got)}, sent {dict(wanted)}"

    # No crash: the same three processes, no actor died or restarted, no error reported.
    assert gateway_pids(gw) == pids, "a process of the gateway was restarted"
    assert not after["errors"], after["errors"]
    assert not after["devices"]["counters"].get("device_failures"), after["devices"]["counters"]
    assert not [line for line in gw.lines if "died" in line or "Unhandled exception" in line]
    # Nothing of it reached the database.
    assert db.one("SELECT COUNT(*) FROM telemetry WHERE device_uuid != ?", warm.uuid) == 0

    # Memory: as the gateway reports it (inspect stats) and as /proc sees it.
    growth = {p: after["memory"][f"{p}_rss_mb"] - before["memory"][f"{p}_rss_mb"] for p in ("core", "store")}
    seen = {p: rss_mib(pids[p]) - rss_before[p] for p in ("core", "store")}
    print(f"\n{VOLUME} malformed messages counted in {took:.1f} s; {dict(got)}; RSS (inspect) core "
          f"{before['memory']['core_rss_mb']} -> {after['memory']['core_rss_mb']} MB, store "
          f"{before['memory']['store_rss_mb']} -> {after['memory']['store_rss_mb']} MB; peak (/proc) core "
          f"{peak['core']:.1f}, store {peak['store']:.1f} MB")
    assert all(g < RSS_GROWTH_MB for g in growth.values()), f"RSS grew by {growth} MB (inspect stats)"
    assert all(g < RSS_GROWTH_MB for g in seen.values()), f"RSS grew by {seen} MB (/proc)"

    # Still serving.
    dev = devices("fault-flood-after")
    dev.announce(boot_id=1)
    dev.telemetry(seq=1, boot_id=1)
    wait_until(lambda: db.count(dev.uuid) == 1 and db.field(dev.uuid, "status") == "online", 10,
               what="a good device served after the flood")
    assert gw.proc.poll() is None


# -- 5. kill -9 of the store process ----------------------------------------------

EXIT_WITHIN_S = 1.0


def test_kill_9_of_the_store_stops_the_gateway_at_once_and_a_restart_loses_nothing(gateways, db, broker):
    """`kill -9` of the store process alone, mid-stream: the launcher stops
    core and exits non-zero within EXIT_WITHIN_S (so runit restarts the
    whole; issue 11 measured 0.3 s), nothing of the gateway is left running,
    no actor of core dies of the closed channel on the way, and after a
    restart every seq is stored exactly once."""
    gw = gateways(**UNLIMITED)
    pids = gateway_pids(gw)
    assert set(pids) == {"launcher", "core", "store"}, pids
    uuid = "fault-store-kill"
    n = 5000
    stream = Stream(broker.port, uuid, n, pause_every=100, pause_s=0.03).start()
    try:
        wait_until(lambda: db.count(uuid) >= n // 10, 30, what="the first tenth stored")
        assert not stream.done.is_set(), "the stream ended before the kill"
        killed = time.monotonic()
        os.kill(pids["store"], signal.SIGKILL)
        rc = gw.proc.wait(10)
        exited_after = time.monotonic() - killed
        assert rc != 0, "the launcher exited 0 after its store process was killed"
        wait_until(lambda: not alive(pids["core"]), 5, what="the core process gone")
        assert db.count(uuid) < n, "everything was stored before the kill; nothing was cut"
        assert any("the store process exited unexpectedly" in line for line in gw.lines), gw.lines[-20:]
        stream.wait(60)  # the broker keeps what the gateway missed
        gateways()  # the same database, the same persistent session
        wait_until(lambda: db.count(uuid) >= n, 60, what=f"all {n} messages stored after the restart")
        assert_each_seq_once(db, uuid, n)
    finally:
        stream.stop()
    print(f"\nlauncher exited {rc} {exited_after:.2f} s after the store's kill -9")
    assert exited_after < EXIT_WITHIN_S, f"the launcher exited {exited_after:.2f} s after the store was killed:\n" \
        + "\n".join(line for line in gw.lines if "core" in line or "launcher" in line)
    # Core stops because its store went away, not because its own actors crash on the closed channel.
    crashed = [line for line in gw.lines if "Unhandled exception" in line or "Exception in thread" in line]
    assert not crashed, "core's actors crashed while it stopped:\n" + "\n".join(crashed)


# -- 6. the whole gateway frozen past its keep-alive -------------------------------

KEEPALIVE_S = 2
WILL_WITHIN_S = 1.5 * KEEPALIVE_S + 5 + 3  # Mosquitto 2.0.11's 5 s keep-alive scan, and slack


def test_a_gateway_frozen_past_its_keepalive_reconnects_and_loses_nothing(gateways, db, broker, watcher):
    """SIGSTOP of the launcher, core and store while a stream goes on, at
    least 3 x the MQTT keep-alive and until the broker has dropped the
    silent gateway and published its Will (seen here): after SIGCONT the
    gateway reconnects by itself, every seq is stored exactly once, and no
    process was restarted.

    Mosquitto 2.0.11 (Debian 12) checks keep-alives in a scan every 5 s
    (its newer O(1) check came in 2.0.21), so it drops a client 1.5 x
    keep-alive plus up to about 6 s after its last packet: measured here,
    3 to 9 s with a keep-alive of 2 s."""
    gw = gateways(mqtt_keepalive_s=KEEPALIVE_S, **UNLIMITED)
    pids = gateway_pids(gw)
    uuid = "fault-frozen"
    n = 15000
    status_topic = "autocore/gateway/status"

    def offline_statuses() -> int:
        return sum(1 for m in watcher.messages(status_topic) if json.loads(m.payload).get("status") == "offline")

    stream = Stream(broker.port, uuid, n, pause_every=100, pause_s=0.1).start()  # about 15 s
    try:
        wait_until(lambda: db.count(uuid) >= 500, 30, what="the first 500 stored")
        offline_before = offline_statuses()
        mark = len(gw.lines)
        frozen_pids = list(pids.values())
        freeze(frozen_pids)
        frozen_at = time.monotonic()
        try:
            try:
                wait_until(lambda: offline_statuses() > offline_before, WILL_WITHIN_S,
                           what="the broker publishing the frozen gateway's Will")
            except AssertionError as exc:
                log = (broker.directory / "mosquitto.log").read_text().splitlines()
                raise AssertionError(f"{exc}; the broker's log ends:\n" + "\n".join(log[-15:])) from None
            will_after = time.monotonic() - frozen_at
            remaining = frozen_at + 3 * KEEPALIVE_S - time.monotonic()
            if remaining > 0:
                time.sleep(remaining)  # holding the freeze for its set time
            assert not stream.done.is_set(), "the stream ended during the freeze; nothing came after it"
        finally:
            thaw(frozen_pids)
        frozen_for = time.monotonic() - frozen_at
        gw.wait_for_line("(connection 2)", 15, after=mark)
        stream.wait(60)
        wait_until(lambda: db.count(uuid) >= n, 60, what=f"all {n} messages stored")
        assert_each_seq_once(db, uuid, n)
        wait_until(lambda: stats(gw)["mqtt"]["unacknowledged"] == 0, 10, what="every message acknowledged")
    finally:
        stream.stop()
    print(f"\nfrozen {frozen_for:.1f} s (keep-alive {KEEPALIVE_S} s, the Will after {will_after:.1f} s); "
          f"reconnected; {n} stored once each")
    assert gw.proc.poll() is None
    assert gateway_pids(gw) == pids, "a process of the gateway was restarted"
    assert stats(gw)["mqtt"]["connected"]
