"""The Syncer on a real SQLite file: what a commit promises is delivered only
after an fdatasync of the write-ahead log, in the order it came, one sync
for many; nothing is held where every commit is durable already; a failed
fsync releases nothing and stops the actor. (That the sync is what a power
cut needs is tested against the cut itself: tests/integration/test_power_cut.py.)"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import pytest

from actors.messages import Deadline, Schedule, WhenDurable
from actors.syncer import Syncer
from gateway.settings import Settings
from storage.durability import WalSync, open_log_sync


class Channel:
    def __init__(self) -> None:
        self.sent: list = []

    def send(self, message) -> None:
        self.sent.append(message)


class Scheduler:
    def __init__(self) -> None:
        self.scheduled: list[Schedule] = []

    def tell(self, message) -> None:
        self.scheduled.append(message)


class CountingSync:
    """A WalSync that counts (and can fail) around the real fdatasync."""

    def __init__(self, real: WalSync, fail: bool = False) -> None:
        self.real = real
        self.fail = fail
        self.calls = 0

    def sync(self) -> None:
        self.calls += 1
        if self.fail:
            raise OSError(5, "Input/output error")
        self.real.sync()

    def close(self) -> None:
        self.real.close()


def wal_database(tmp_path) -> str:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = str(tmp_path / "gw.db")
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=wal")
    conn.execute("CREATE TABLE t (x)")
    conn.execute("INSERT INTO t VALUES (1)")
    conn.close()
    return path


def syncer(tmp_path, **settings) -> tuple[Syncer, Channel, Scheduler]:
    path = wal_database(tmp_path)
    channel, scheduler = Channel(), Scheduler()
    s = Syncer(Settings(db_path=path, **settings), channel, scheduler)
    return s, channel, scheduler


def test_messages_wait_for_one_sync_and_go_in_order(tmp_path):
    s, channel, scheduler = syncer(tmp_path, db_sync_ms=1000)
    assert s.log_sync is not None
    s.log_sync = counting = CountingSync(s.log_sync)
    s.handle(WhenDurable(("a", "b")))  # the first: synced at once
    assert channel.sent == ["a", "b"] and counting.calls == 1
    s.handle(WhenDurable(("c",)))
    s.handle(WhenDurable(("d",)))
    assert channel.sent == ["a", "b"] and counting.calls == 1  # within the interval: they wait
    assert scheduler.scheduled and scheduler.scheduled[-1].key == "group-sync"
    s.rule.last_sync_at -= 10  # the interval has passed
    s.handle(Deadline("group-sync", 0.0))
    assert channel.sent == ["a", "b", "c", "d"] and counting.calls == 2  # one sync for both
    assert s.state()["syncs"] == 2 and s.state()["waiting"] == 0


def test_an_urgent_message_is_synced_at_once(tmp_path):
    s, channel, _ = syncer(tmp_path, db_sync_ms=1000)
    s.handle(WhenDurable(("first",)))
    s.handle(WhenDurable(("normal",)))
    s.handle(WhenDurable(("command",), urgent=True))
    assert channel.sent == ["first", "normal", "command"]


def test_reply_to_gets_its_messages_told(tmp_path):
    s, channel, _ = syncer(tmp_path)

    class Ref:
        told: list = []

        def tell(self, m):
            self.told.append(m)

    ref = Ref()
    s.handle(WhenDurable(("heads",), reply_to=ref))
    assert ref.told == ["heads"] and channel.sent == []


def test_full_synchronous_and_the_unsafe_setting_deliver_at_once(tmp_path):
    for i, settings in enumerate(({"db_synchronous": "FULL"}, {"db_unsafe_ack_before_sync": True})):
        s, channel, scheduler = syncer(tmp_path / str(i), db_sync_ms=1000, **settings)
        assert s.log_sync is None
        s.handle(WhenDurable(("x",)))
        s.handle(WhenDurable(("y",)))
        assert channel.sent == ["x", "y"] and not scheduler.scheduled
    assert "unsafe" in s.state()["mode"]


def test_a_failed_fsync_releases_nothing_and_stops_the_syncer(tmp_path):
    s, channel, _ = syncer(tmp_path)
    s.log_sync = CountingSync(s.log_sync, fail=True)
    with pytest.raises(OSError):
        s.handle(WhenDurable(("ack",)))
    assert channel.sent == []


def test_the_actor_delivers_what_waits_when_it_stops(tmp_path):
    path = wal_database(tmp_path)
    channel, scheduler = Channel(), Scheduler()
    ref = Syncer.start(Settings(db_path=path, db_sync_ms=60000), channel, scheduler)
    try:
        ref.tell(WhenDurable(("one",)))
        ref.tell(WhenDurable(("two",)))  # waits a minute for its sync
    finally:
        ref.stop()
    assert channel.sent == ["one", "two"]


def test_the_log_is_synced_again_after_sqlite_made_a_new_one(tmp_path):
    path = wal_database(tmp_path)
    log_sync = open_log_sync(path, "NORMAL")
    assert isinstance(log_sync, WalSync)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("INSERT INTO t VALUES (2)")
    log_sync.sync()
    assert log_sync._inode is not None
    conn.close()  # the last connection: SQLite checkpoints and deletes the log
    assert not os.path.exists(path + "-wal")
    log_sync.sync()  # no log: nothing to do, and the database file is never opened
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("INSERT INTO t VALUES (3)")
    log_sync.sync()
    st = os.stat(path + "-wal")
    assert log_sync._inode == (st.st_dev, st.st_ino)  # the new log, not the deleted one
    conn.close()
    log_sync.close()


def test_no_log_sync_where_commits_are_durable_already(tmp_path):
    assert open_log_sync(str(tmp_path / "a.db"), "FULL") is None
    assert open_log_sync("postgresql://u@localhost/db", "NORMAL") is None
    assert open_log_sync(":memory:", "NORMAL") is None


def test_a_sync_never_drops_the_locks_of_this_process_connections(tmp_path):
    """Closing any descriptor of the database file drops every POSIX lock
    the process holds on it (SQLite's own warning): the sync must never
    open it. Seen once: another program's connection, closing, then found
    itself alone, checkpointed and deleted the log, and the gateway went on
    writing into the deleted file: its rows were gone for every reader."""
    path = wal_database(tmp_path)
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("PRAGMA synchronous=NORMAL")
    writer.execute("INSERT INTO t VALUES (10)")
    log_sync = open_log_sync(path, "NORMAL")
    assert log_sync is not None
    log_sync.sync()
    # Another program opens, reads and closes: it must see it is not alone.
    other = subprocess.run([sys.executable, "-c", "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
                            "c.execute('SELECT COUNT(*) FROM t').fetchone(); c.close()", path], capture_output=True)
    assert other.returncode == 0, other.stderr
    assert os.path.exists(path + "-wal"), "the other program took itself for the last connection"
    writer.execute("INSERT INTO t VALUES (11)")
    log_sync.sync()
    reader = sqlite3.connect(path)
    assert reader.execute("SELECT COUNT(*) FROM t WHERE x >= 10").fetchone()[0] == 2
    reader.close()
    writer.close()
    log_sync.close()
