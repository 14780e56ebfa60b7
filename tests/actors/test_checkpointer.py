"""The Checkpointer on a real SQLite file: with the writer's automatic
checkpoint off, it copies the log into the database; the writer cuts the
log's file back to its bound when it starts the log over (no checkpoint
blocks commits to do it); below the free-space reserve the Checkpointer
truncates it at once."""

import os
import sqlite3

from actors.checkpointer import Checkpointer
from gateway.settings import Settings
from storage import migrations, telemetry
from storage.db import close_database, database, open_database


class NoScheduler:
    def tell(self, message):
        pass


def rows(boot, n):
    return [("d", boot, i, 0, 1.0, 1.0, "analog", "m", float(i), None, None, None) for i in range(n)]


def test_checkpoints_copy_the_log_and_the_writer_cuts_it_back_to_its_bound(tmp_path):
    path = str(tmp_path / "gw.db")
    open_database(path, autocheckpoint=False, wal_limit_bytes=512 * 1024)
    migrations.migrate()
    try:
        assert database.execute_sql("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        telemetry.insert_rows(database, rows(1, 20000))
        wal = path + "-wal"
        assert os.path.getsize(wal) > 1024 * 1024  # nothing copied it yet
        cp = Checkpointer(Settings(db_path=path, db_wal_max_mb=0.5, db_reserve_mb=0), NoScheduler())
        cp.on_start()
        try:
            cp.checkpoint()
            assert cp.counters["truncated"] == 0 and cp.counters["passive"] == 1
            # Everything is in the database file itself now.
            other = sqlite3.connect(path)
            assert other.execute("SELECT COUNT(*) FROM telemetry").fetchone()[0] == 20000
            other.close()
            assert os.path.getsize(wal) > 1024 * 1024  # a checkpoint does not shrink it...
            telemetry.insert_rows(database, rows(2, 1))
            assert os.path.getsize(wal) <= 512 * 1024  # ...the writer's next commit does
        finally:
            cp.on_stop()
    finally:
        close_database()


def test_below_the_reserve_a_copied_log_is_truncated_at_once(tmp_path):
    path = str(tmp_path / "gw.db")
    open_database(path, autocheckpoint=False)
    migrations.migrate()
    try:
        telemetry.insert_rows(database, rows(1, 5000))
        # A reserve larger than any disk: always short of space.
        cp = Checkpointer(Settings(db_path=path, db_reserve_mb=1e9), NoScheduler())
        cp.on_start()
        try:
            cp.checkpoint()
            assert cp.counters["truncated"] == 1
            assert os.path.getsize(path + "-wal") == 0
        finally:
            cp.on_stop()
    finally:
        close_database()
