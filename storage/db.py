"""Opening the database: the SQLite file the gateway shares with the
Config App, or a PostgreSQL server (storage/postgres.py).

Where it is comes as a location (storage/url.py): a URL
(`sqlite:///var/autocore.db`, `postgresql://user@host/autocore`) or a plain
SQLite path. Everything that differs between the two engines stays in
storage/; what is above it calls the same functions on both. Each database
class names its `engine` and renders the few SQL words that differ
(`now_sql`, `scalar_max` in peewee's context) so models and queries stay
shared.

One `DatabaseProxy` (`database`) is bound at start-up by `open_database`;
every model and repository goes through it. peewee keeps one connection per
thread, so the thread that owns the writer (the DbWriter actor) has the only
gateway connection that writes; a reader thread gets its own connection
either implicitly through the proxy or explicitly from `open_reader`.

Busy database. The Config App writes to the same file from another process.
When it holds the write lock, our statement waits up to `busy_timeout_ms`
and then goes on; only if the lock is still held after that does it fail,
with `DatabaseBusy`. The enclosing `write_transaction` has then been rolled
back as a whole, so the caller may simply retry the same batch later (and,
for MQTT, withhold the acks meanwhile).

Transactions. On the writer, every transaction (`write_transaction()`,
and a plain `database.atomic()` too) is BEGIN IMMEDIATE: it takes the write
lock up front, where the busy timeout applies. A DEFERRED transaction that
reads first and writes later can fail at once with SQLITE_BUSY_SNAPSHOT
when another connection committed in between, without waiting. Nested, a
transaction is a savepoint of the outer one. So wrap a DbWriter batch in
one `write_transaction()` and keep reads that need no lock (the poller's)
on a reader connection.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import sys
import time
from contextlib import contextmanager
from typing import Iterator

import peewee
from peewee import DatabaseProxy, Node, SqliteDatabase

from storage.errors import DatabaseBusy, DatabaseFull, sqlite_errors
from storage.url import POSTGRESQL, SQLITE, parse_location

log = logging.getLogger(__name__)

database = DatabaseProxy()

SYNCHRONOUS_MODES = ("NORMAL", "FULL")

_SAVEPOINT_ENDS = ("ROLLBACK TO SAVEPOINT", "RELEASE SAVEPOINT")


# The current time as REAL epoch seconds, for SQL defaults (unixepoch()
# needs SQLite 3.38; this works everywhere).
SQLITE_NOW_SQL = "((julianday('now') - 2440587.5) * 86400.0)"


class GatewayDatabase(SqliteDatabase):
    """SqliteDatabase whose lock time-outs raise `DatabaseBusy`.

    BEGIN, every statement and COMMIT pass through these methods, so a
    caller sees one exception type whichever step hit the lock.
    `begin_lock` is the lock type of a plain `atomic()`: IMMEDIATE for the
    writer, so even `database.atomic()` waits for the lock at BEGIN rather
    than failing later (see the module doc); deferred for a reader.
    """

    engine = SQLITE

    def __init__(self, *args, begin_lock: str | None = None, **kwargs):
        self._begin_lock = begin_lock
        super().__init__(*args, **kwargs)

    def get_context_options(self):
        options = super().get_context_options()
        options.update(now_sql=SQLITE_NOW_SQL, scalar_max="MAX")
        return options

    def begin(self, lock_type=None):
        super().begin(lock_type or self._begin_lock)

    def execute_sql(self, sql, params=None, commit=None):
        if sql.startswith(_SAVEPOINT_ENDS) and not self._state.closed and not self.connection().in_transaction:
            # SQLite rolled the whole transaction back by itself (it may on
            # SQLITE_FULL or an I/O error): its savepoints are gone, and
            # peewee unwinding them would hide the real error under "no such
            # savepoint".
            return self.cursor()
        with sqlite_errors():
            return super().execute_sql(sql, params)

    def commit(self):
        with sqlite_errors():
            return super().commit()

    def connect(self, reuse_if_open=False):
        # Pragmas run at connect; journal_mode=WAL may meet a lock too.
        with sqlite_errors():
            return super().connect(reuse_if_open)


def open_database(
    location: str,
    *,
    synchronous: str = "NORMAL",
    busy_timeout_ms: int = 5000,
    autocheckpoint: bool = True,
    register_devices: bool = True,
    wal_limit_bytes: int = -1,
) -> SqliteDatabase:
    """Open the writer database at `location` (a URL or a SQLite path) and
    bind `database` to it. The schema is the caller's to bring up to date
    (`storage.migrations.migrate`), so this module never imports the models
    it is below. On PostgreSQL the SQLite-only options (synchronous, WAL) do
    not apply; `busy_timeout_ms` is its lock_timeout.

    Pragmas are applied on every connection peewee opens (one per thread):
    busy_timeout first, so that switching to WAL waits for a lock instead
    of failing; then journal_mode=WAL, synchronous and foreign_keys.
    synchronous=NORMAL in WAL loses at most the last commits on a power cut,
    never consistency; FULL also survives that, at a cost per commit.
    `register_devices`: whether a device the Config App's `devices` lacks
    gets a row there (storage/config_app.py). `wal_limit_bytes`: the size
    the write-ahead log is cut back to when it starts over (-1: never).
    """
    sync = synchronous.upper()
    if sync not in SYNCHRONOUS_MODES:
        raise ValueError(f"synchronous must be one of {', '.join(SYNCHRONOUS_MODES)}, got {synchronous!r}")
    if busy_timeout_ms <= 0:
        raise ValueError(f"busy_timeout_ms must be greater than 0, got {busy_timeout_ms}")
    target = parse_location(location)
    from storage import config_app

    config_app.configure(register=register_devices)
    if target.engine == POSTGRESQL:
        from storage.postgres import PostgresDatabase

        db = PostgresDatabase(target, busy_timeout_ms=busy_timeout_ms)
        database.initialize(db)
        db.connect(reuse_if_open=True)
        return db
    path = target.file
    _make_parent(path)
    db = GatewayDatabase(
        path,
        timeout=busy_timeout_ms / 1000.0,
        begin_lock="IMMEDIATE",
        pragmas=[
            ("busy_timeout", int(busy_timeout_ms)),
            ("journal_mode", "wal"),
            ("synchronous", sync),
            ("foreign_keys", 1),
            # Statement journals (kept by a statement that may have to undo
            # its part of a transaction) and temporary tables in memory, not
            # in files under /var/tmp: measured, those files took about as
            # many bytes as the write-ahead log itself (issue 11, disk wear).
            ("temp_store", "memory"),
            # Off for the gateway's writer: a checkpoint inside a commit waits
            # on fsync and stalls ingest; actors/checkpointer.py runs them on
            # a connection of its own instead.
            ("wal_autocheckpoint", 1000 if autocheckpoint else 0),
            # Once a checkpoint has copied the whole WAL, the writer's next
            # commit starts it over and cuts the file back to this size (an
            # ftruncate): no checkpoint has to block writers to shrink it.
            ("journal_size_limit", int(wal_limit_bytes)),
        ],
    )
    database.initialize(db)
    db.connect(reuse_if_open=True)
    mode = db.execute_sql("PRAGMA journal_mode").fetchone()[0]
    if mode.lower() != "wal" and path != ":memory:":
        # Some file systems (network mounts) cannot do WAL; readers then
        # block the writer, which is worth knowing but not fatal.
        log.warning("database %s runs in journal_mode=%s, not wal", path, mode)
    return db


def open_reader(location: str, *, busy_timeout_ms: int = 5000) -> peewee.Database:
    """A second, independent connection for a reader (the command poller).

    Not bound to `database`: pass it as `db=` to the repositories' read
    functions, and to `data_version`. `query_only` (a read-only session
    on PostgreSQL) makes an accidental write through it fail instead of
    competing with the writer.
    """
    target = parse_location(location)
    if target.engine == POSTGRESQL:
        from storage.postgres import PostgresDatabase

        return PostgresDatabase(target, busy_timeout_ms=busy_timeout_ms, read_only=True)
    return GatewayDatabase(
        target.path,
        timeout=busy_timeout_ms / 1000.0,
        pragmas=[("busy_timeout", int(busy_timeout_ms)), ("query_only", 1)],
    )


def close_database() -> None:
    """Close the calling thread's connection and unbind `database`.

    peewee connections are per thread: another thread that used the
    database should close its own (`database.close()`) before this.
    """
    if database.obj is None:
        return
    if not database.is_closed():
        database.close()
    database.initialize(None)


def write_transaction(db=None):
    """`db.atomic()` that takes the write lock at BEGIN (see module doc)."""
    return (database if db is None else db).atomic("IMMEDIATE")


class WriteWaits:
    """How long a `timed_write_transaction` waited: for the write lock at
    BEGIN and in COMMIT. Together they are the transaction's stall (what a
    checkpoint, another program's lock or the disk adds), as opposed to
    the work of its statements, which grows with the batch."""

    __slots__ = ("begin_s", "commit_s")

    def __init__(self) -> None:
        self.begin_s = 0.0
        self.commit_s = 0.0

    @property
    def stall_s(self) -> float:
        return self.begin_s + self.commit_s


@contextmanager
def timed_write_transaction(waits: WriteWaits, db=None) -> Iterator[None]:
    """`write_transaction()` that records its BEGIN and COMMIT in `waits`."""
    transaction = write_transaction(db)
    started = time.perf_counter()
    transaction.__enter__()
    waits.begin_s = time.perf_counter() - started
    try:
        yield
    except BaseException:
        if not transaction.__exit__(*sys.exc_info()):
            raise
        return
    started = time.perf_counter()
    transaction.__exit__(None, None, None)
    waits.commit_s = time.perf_counter() - started


def data_version(db=None) -> int:
    """A number that changes when the commands may have changed, as seen by
    the calling thread's connection to `db`: a poller that sees the same
    number as last time can skip its query.

    SQLite: `PRAGMA data_version`, which changes only when another
    connection commits (anything). PostgreSQL: the count of notifications
    from the trigger on `commands` (storage/postgres.py).
    """
    target = database if db is None else db
    if getattr(target, "engine", SQLITE) == POSTGRESQL:
        from storage.postgres import change_count

        return change_count(target)
    conn = target if isinstance(target, sqlite3.Connection) else target.connection()
    with sqlite_errors():
        return conn.execute("PRAGMA data_version").fetchone()[0]


class ChangeWatch:
    """"Has anything changed since I last looked?" for a poller on its own
    reader connection. `table` "commands" has a cheap signal on both
    engines (`data_version`); for others PostgreSQL has none, so there
    every look says yes (the caller's query is an index range scan)."""

    def __init__(self, db, table: str = "commands") -> None:
        self.db = db
        self.cheap = table == "commands" or getattr(db, "engine", SQLITE) == SQLITE
        self.version: int | None = None

    def changed(self) -> bool:
        if not self.cheap:
            return True
        version = data_version(self.db)
        if version == self.version:
            return False
        self.version = version
        return True

    def again(self) -> None:
        """Make the next `changed()` say yes (more is waiting)."""
        self.version = None


def describe_location(location: str) -> tuple[str, str]:
    """(engine, location without password) for logs and `config show`."""
    target = parse_location(location)
    return target.engine, target.display


def database_exists(location: str) -> bool:
    """False for a SQLite file not created yet (the CLI says so instead
    of creating an empty one); a server is assumed to be there."""
    target = parse_location(location)
    if target.engine != SQLITE:
        return True
    return target.file == ":memory:" or os.path.exists(target.file)


class DatabaseUnreachable(Exception):
    """The database cannot be opened at all (no server, refused, bad
    credentials, an unwritable directory); the message is one line."""


def check_reachable(location: str, timeout_s: float = 5.0) -> None:
    """Raise DatabaseUnreachable (one line, no password) unless the
    database can be connected to now."""
    target = parse_location(location)
    try:
        if target.engine == POSTGRESQL:
            from storage.postgres import check_reachable as pg_check

            pg_check(target, timeout_s)
        else:
            _make_parent(target.file)
            sqlite3.connect(target.file, timeout=timeout_s).close()
    except Exception as exc:  # any driver's error: reported, not raised on
        text = " ".join(str(exc).split()) or type(exc).__name__
        raise DatabaseUnreachable(f"cannot reach the database {target.display}: {text}") from None


def database_errors() -> tuple[type[BaseException], ...]:
    """The exceptions a database call may raise on either engine."""
    errors: tuple[type[BaseException], ...] = (peewee.PeeweeException, sqlite3.Error)
    # psycopg comes with peewee, unless this process is on SQLite alone and
    # left it out (storage/imports.py): then none of its errors can occur.
    psycopg = sys.modules.get("psycopg")
    return errors + (psycopg.Error,) if psycopg is not None else errors


def unstorable_errors() -> tuple[type[BaseException], ...]:
    """Errors that say "this value cannot be stored" (a number past a
    column's range, a type no column holds), not "the database is in
    trouble": the writer leaves the value out instead of stopping."""
    return (OverflowError, TypeError, ValueError, sqlite3.InterfaceError, sqlite3.IntegrityError,
            sqlite3.DataError, peewee.InterfaceError, peewee.IntegrityError, peewee.DataError)


class EngineSQL(Node):
    """A SQL word that differs between the engines, taken from the
    database's context options (see `get_context_options`)."""

    def __init__(self, key: str, template: str = "{}") -> None:
        self.key = key
        self.template = template

    def __sql__(self, ctx):
        return ctx.literal(self.template.format(getattr(ctx.state, self.key)))


def greatest(*args):
    """The larger of the arguments: MAX(a, b) in SQLite, GREATEST in PostgreSQL."""
    from peewee import NodeList, EnclosedNodeList

    return NodeList((EngineSQL("scalar_max"), EnclosedNodeList(args)), glue="")


def free_disk_bytes(location: str) -> int | None:
    """Bytes free to this process on the file system holding the database
    file at `location`; None where that cannot be told (":memory:", a
    PostgreSQL server: its disk is not ours to watch)."""
    target = parse_location(location)
    if target.engine != SQLITE:
        return None
    path = target.file
    if path == ":memory:" or path.startswith("file:"):
        return None
    try:
        st = os.statvfs(os.path.dirname(os.path.abspath(path)))
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def _make_parent(path: str) -> None:
    if not path or path == ":memory:" or path.startswith("file:"):
        return
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)


def bound(query, db=None):
    """`query` run on `db` (a reader from `open_reader`) instead of the
    proxy; with db None, unchanged."""
    return query if db is None else query.bind(db)
