"""The Checkpointer on a real SQLite file: with the writer's automatic
checkpoint off, it copies the log into the database and truncates the log
once it is past its bound."""

import os
import sqlite3

from actors.checkpointer import Checkpointer
from gateway.settings import Settings
from storage import telemetry
from storage.db import close_database, database, open_database


class NoScheduler:
    def tell(self, message):
        pass


def test_checkpoints_copy_the_log_and_truncate_it_past_its_bound(tmp_path):
    path = str(tmp_path / "gw.db")
    open_database(path, autocheckpoint=False)
    try:
        assert database.execute_sql("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        rows = [("d", 1, i, 0, 1.0, 1.0, "analog", "m", float(i), None, None, None) for i in range(20000)]
        telemetry.insert_rows(database, rows)
        wal = path + "-wal"
        assert os.path.getsize(wal) > 1024 * 1024  # nothing copied it yet
        cp = Checkpointer(Settings(db_path=path, db_wal_max_mb=0.5), NoScheduler())
        cp.on_start()
        try:
            cp.checkpoint()
            assert cp.counters["truncated"] == 1
            assert os.path.getsize(wal) == 0
            # Everything is in the database file itself now.
            other = sqlite3.connect(path)
            assert other.execute("SELECT COUNT(*) FROM telemetry").fetchone()[0] == 20000
            other.close()
            # A small log stays (only copied): truncating it would gain nothing.
            telemetry.insert_rows(database, [("d", 2, 1, 0, 1.0, 1.0, "a", "m", 1.0, None, None, None)])
            cp.checkpoint()
            assert cp.counters["truncated"] == 1 and cp.counters["passive"] == 2
            assert cp.state()["wal_mb"] < 0.5
        finally:
            cp.on_stop()
    finally:
        close_database()
