"""Shell completion's reads: a uuid or a command id from the database, in
well under a second or not at all. Plain DB-API on a fresh connection
(no peewee, no migrations: completion runs at every TAB), read-only,
never creating a SQLite file that is not there."""

from __future__ import annotations

import os
from typing import Any

from storage.url import SQLITE, parse_location

_DEVICES_SQL = "SELECT uuid FROM gateway_devices WHERE uuid LIKE ? ESCAPE '\\' ORDER BY uuid LIMIT 200"
_OPEN_COMMANDS_SQL = ("SELECT id FROM commands WHERE status IN ('pending','queued','sent','accepted') "
                      "AND CAST(id AS TEXT) LIKE ? ESCAPE '\\' ORDER BY id DESC LIMIT 200")


def _like_prefix(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _query(location: str, sql: str, args: tuple) -> list[str]:
    try:
        target = parse_location(location)
    except ValueError:
        return []
    try:
        if target.engine == SQLITE:
            import sqlite3

            if not os.path.exists(target.file):
                return []
            conn: Any = sqlite3.connect(f"file:{target.file}?mode=ro", uri=True, timeout=0.5)
        else:
            import psycopg

            conn = psycopg.connect(dbname=target.database, **{**dict(target.params), "connect_timeout": 1})
            sql = sql.replace("?", "%s")
        try:
            return [str(r[0]) for r in conn.execute(sql, args)]
        finally:
            conn.close()
    except Exception:  # completion must never fail the shell
        return []


def device_uuids(location: str, prefix: str) -> list[str]:
    return _query(location, _DEVICES_SQL, (_like_prefix(prefix),))


def open_command_ids(location: str, prefix: str) -> list[str]:
    return _query(location, _OPEN_COMMANDS_SQL, (_like_prefix(prefix),))
