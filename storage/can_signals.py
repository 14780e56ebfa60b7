"""CAN definitions where they are kept: the Config App's `can_signals`
table and DBC files.

The table is the Config App's: read here, never created or altered. It may
be missing (no Config App, or one that has not made it yet): then there
are no Config App definitions, and none of this is an error. Reading is one
SELECT, so a change the Config App commits in one transaction is seen
whole or not at all.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from typing import Any, Sequence

from protocol.can import build_catalog
from storage.db import sqlite_errors
from storage.url import SQLITE

TABLE = "can_signals"
# The columns the decoder reads; a table lacking one of them (another
# program's table of that name) has no definitions for us.
COLUMNS = ("id", "signal_name", "can_id", "start_bit", "length_bits", "byte_order", "data_type", "scale_factor",
           "offset", "unit", "min_value", "max_value", "is_active")
REQUIRED = frozenset({"signal_name", "can_id", "start_bit", "length_bits"})
OPTIONAL = tuple(c for c in COLUMNS if c not in REQUIRED)


def _connection(db: Any) -> sqlite3.Connection:
    return db if isinstance(db, sqlite3.Connection) else db.connection()


def read_rows(db: Any) -> tuple[dict, ...] | None:
    """Every `can_signals` row (active or not: the catalog decides) as a
    dict of the columns above, ordered by id; None when there is no such
    table. Works on a sqlite3 connection or a peewee database. The
    Config App's tables live in SQLite only: on PostgreSQL there are none."""
    if getattr(db, "engine", SQLITE) != SQLITE:
        return None
    conn = _connection(db)
    with sqlite_errors():
        have = {row[1] for row in conn.execute(f'PRAGMA table_info("{TABLE}")')}
        if not REQUIRED <= have:
            return None
        cols = [c for c in COLUMNS if c in have]
        order = " ORDER BY id" if "id" in have else ""
        select = ", ".join(f'"{c}"' for c in cols)
        found = conn.execute(f'SELECT {select} FROM "{TABLE}"{order}').fetchall()
    return tuple(dict(zip(cols, row)) for row in found)


@dataclass(frozen=True)
class DbcText:
    path: str
    device_type: str | None
    text: str | None  # None: unreadable (see error)
    stamp: tuple | None  # (mtime_ns, size): a change means read it again
    error: str | None = None


def file_stamp(path: str) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


def read_dbc(path: str, device_type: str | None = None) -> DbcText:
    """A DBC file's text; an unreadable file is an `error`, never an exception.
    DBC files are mostly ASCII but often written by Windows tools: bytes
    that are not UTF-8 are read as cp1252 so a comment cannot stop a load."""
    stamp = file_stamp(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        return DbcText(path, device_type, None, stamp, f"DBC file {path}: cannot read it: {exc.strerror or exc}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("cp1252", errors="replace")
    return DbcText(path, device_type, text, stamp)


def stamps(files: Sequence[tuple[str | None, str]]) -> tuple:
    """What says whether any configured DBC file changed."""
    return tuple(file_stamp(path) for _, path in files)


class CanDefinitions:
    """The definitions in force: the Config App's rows and the DBC files,
    made into one immutable `CanCatalog`. `refresh` reads the table again
    (one SELECT) and stats the DBC files; a new catalog is built only when
    something really changed, and a DBC file is parsed again only when its
    modification time or size changed. Used by the store's CanFeed actor and
    by the CLI."""

    def __init__(self, dbc_files: Sequence[tuple[str | None, str]] = ()) -> None:
        self.dbc_files = tuple(dbc_files)
        self._parsed: dict[tuple[str | None, str], tuple[tuple | None, Any, str | None]] = {}
        self._rows: Any = object()  # nothing read yet
        self._stamps: Any = object()
        self.catalog = build_catalog(None)
        self.config_app_table = False
        self.changes = 0

    def files_changed(self) -> bool:
        return stamps(self.dbc_files) != self._stamps

    def refresh(self, db: Any | None) -> bool:
        """Read again; True if the catalog changed. `db` None: no database
        (DBC files only). Raises DatabaseBusy if the database stayed locked."""
        rows = read_rows(db) if db is not None else None
        now = stamps(self.dbc_files)
        if rows == self._rows and now == self._stamps:
            return False
        files, problems = [], []
        for key in self.dbc_files:
            device_type, path = key
            stamp = file_stamp(path)
            cached = self._parsed.get(key)
            if cached is None or cached[0] != stamp or stamp is None:
                cached = self._parse(path, device_type)
                self._parsed[key] = cached
            _, parsed, error = cached
            if error:
                problems.append(error)
            else:
                files.append(parsed)
        self._rows, self._stamps = rows, now
        self.config_app_table = rows is not None
        self.catalog = build_catalog(rows, files, problems)
        self.changes += 1
        return True

    @staticmethod
    def _parse(path: str, device_type: str | None) -> tuple[tuple | None, Any, str | None]:
        # Imported here: cantools (and python-can under it) costs about 0.2 s
        # and some memory at start, for nothing when no DBC file is set.
        from protocol.dbc import BadDbc, load_dbc_text

        got = read_dbc(path, device_type)
        if got.text is None:
            return got.stamp, None, got.error
        try:
            return got.stamp, load_dbc_text(got.text, path, device_type), None
        except BadDbc as exc:
            return got.stamp, None, str(exc)
