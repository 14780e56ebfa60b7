"""A claim the database refuses for now (another program holds the write
lock) is not lost: the DbWriter tells the CommandFeed, which then looks at
the pending commands again on its next poll even though the change signal
saw nothing new (on PostgreSQL a rolled-back claim sends no NOTIFY)."""

import sqlite3
import time

from actors.command_feed import CommandFeed
from actors.db_writer import DbWriter
from actors.messages import ClaimCommands, ClaimDeferred, Deadline
from storage import commands as command_repo
from storage.db import close_database, open_database
from storage.migrations import migrate
from tests.support.recorder import Recorder


class Settings:
    command_ttl_s = 300.0
    command_poll_ms = 100
    db_busy_timeout_ms = 100
    db_path = ""
    share_group = ""  # one instance

    @property
    def database(self):
        return self.db_path


def test_a_deferred_claim_makes_the_feed_look_again(tmp_path):
    settings = Settings()
    settings.db_path = str(tmp_path / "autocore.db")
    open_database(settings.db_path, busy_timeout_ms=100)
    migrate()
    try:
        cid = command_repo.insert_command("dev-1", "ping", {}, now=time.time(), ttl_s=60)
        writer, feed_ref, channel = DbWriter(settings, Recorder()), Recorder(), Recorder()
        # Another program holds the write lock: the claim is rolled back.
        other = sqlite3.connect(settings.db_path, isolation_level=None, timeout=10)
        other.execute("BEGIN IMMEDIATE")
        try:
            writer.handle(ClaimCommands((cid,), feed=feed_ref))
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert writer.counters["claims_deferred"] == 1
        assert feed_ref.told == [ClaimDeferred()]
        assert command_repo.get_command(cid).status == "pending"

        # The feed: its first poll takes the change and asks for the claim;
        # with nothing new it would not query again, but after ClaimDeferred it does.
        scheduler, claims = Recorder(), Recorder()
        feed = CommandFeed(settings, claims, scheduler, channel)
        feed.on_start()
        try:
            feed.handle(Deadline("command-feed", time.time()))
            assert [type(m) for m in claims.told] == [ClaimCommands]
            feed.handle(Deadline("command-feed", time.time()))
            assert len(claims.told) == 1  # nothing changed: no query
            feed.handle(ClaimDeferred())
            feed.handle(Deadline("command-feed", time.time()))
            assert len(claims.told) == 2 and claims.told[1].ids == (cid,)
        finally:
            feed.on_stop()
    finally:
        close_database()
