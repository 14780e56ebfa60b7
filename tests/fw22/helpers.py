"""What the firmware 2.2 end-to-end tests share: the gateway as a
subprocess with the store's database bound for the test's own reads and
writes, and a read-only query of its file."""

from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from typing import Iterator

from storage.db import close_database, open_database
from tests.support.gateway import GatewayProcess


@contextmanager
def running_gateway(broker, tmp_path, **settings) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(tmp_path / "gw", broker.port, **settings)
    gw.start()
    open_database(str(gw.db_path))
    try:
        yield gw
    finally:
        close_database()
        if gw.proc is not None and gw.proc.poll() is None:
            gw.kill()


def query(gw, sql, args=()):
    conn = sqlite3.connect(f"file:{gw.db_path}?mode=ro", uri=True, timeout=5)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()
