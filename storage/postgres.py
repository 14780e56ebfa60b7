"""The PostgreSQL engine: what differs from SQLite, in one place.

Driver: psycopg 3 through peewee's `Psycopg3Database`. Its `cursor.copy()`
streams Python rows into `COPY ... FROM STDIN` (the telemetry fast path
below) and `connection.notifies()` reads LISTEN/NOTIFY without a query
(the command feed's change signal); psycopg2 would need a hand-built CSV
buffer and a select() loop for the same.

* Types: IntegerField is BIGINT, FloatField DOUBLE PRECISION and AutoField
  BIGSERIAL here (peewee's defaults, INTEGER and REAL, would cut a boot id
  and round an epoch time to the minute).
* Transactions: peewee's plain BEGIN; SQLite's lock types are ignored.
  PostgreSQL locks rows, not the database, so "busy" means a lock wait past
  `lock_timeout` (the busy timeout), a deadlock or a serialization failure:
  `DatabaseBusy`, the transaction rolled back, safe to retry. A full disk
  (SQLSTATE 53100) is `DatabaseFull`.
* Telemetry: COPY into a per-connection temporary staging table, then one
  `INSERT ... SELECT ... ON CONFLICT DO NOTHING` (FIELD-NOTES: about 46k
  rows/s against 11k for a multi-row VALUES insert; no RETURNING).
* Change signal: a statement trigger on `commands` (migration 5) sends
  NOTIFY on channel `autocore_commands`; `change_count` drains the
  notifications a reader connection received, without a round trip.
"""

from __future__ import annotations

import logging
import weakref
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import peewee
from playhouse.psycopg3_ext import Psycopg3Database

from storage.errors import DatabaseBusy, DatabaseFull, DatabaseGone
from storage.url import POSTGRESQL, DatabaseTarget

COMMANDS_CHANNEL = "autocore_commands"

log = logging.getLogger("autocore.db")

# What the writer sessions found of the server's durability settings
# (`_durable_commits`), for inspection.
DURABILITY: dict[str, str] = {}

FIELD_TYPES = {"INT": "BIGINT", "FLOAT": "DOUBLE PRECISION", "AUTO": "BIGSERIAL"}

# SQLSTATEs: lock_not_available, deadlock_detected, serialization_failure.
_BUSY_STATES = {"55P03", "40P01", "40001"}
_FULL_STATES = {"53100"}  # disk_full
# admin_shutdown, crash_shutdown, cannot_connect_now; class 08 is
# connection_exception. An OperationalError without a SQLSTATE is libpq's
# own: the server closed the connection, or none could be made.
_GONE_STATES = {"57P01", "57P02", "57P03"}
_CLOSED_TEXTS = ("connection is closed", "connection is lost", "server closed the connection")

NOW_SQL = "(extract(epoch from now())::double precision)"

# Seconds to wait for a server that does not answer (libpq's connect_timeout).
CONNECT_TIMEOUT_S = 5


def _is_gone(exc: BaseException) -> bool:
    """Whether `exc` (psycopg's, or peewee's wrapping of it) says the
    connection to the server is lost or cannot be made."""
    import psycopg

    for candidate in (exc, exc.__cause__, exc.__context__, *exc.args[:1]):
        if isinstance(candidate, psycopg.OperationalError):
            state = candidate.sqlstate
            if state is None or state.startswith("08") or state in _GONE_STATES:
                return True
        if isinstance(candidate, psycopg.InterfaceError) and any(t in str(candidate) for t in _CLOSED_TEXTS):
            return True
    return False


def _sqlstate(exc: BaseException) -> str | None:
    # peewee re-raises psycopg's error as its own class, with the original
    # as the context of the new one.
    for candidate in (exc, exc.__cause__, exc.__context__, *exc.args[:1]):
        state = getattr(candidate, "sqlstate", None)
        if state:
            return state
    return None


@contextmanager
def pg_errors() -> Iterator[None]:
    """psycopg and peewee errors as the gateway's: DatabaseBusy,
    DatabaseFull, DatabaseGone, else peewee's own classes (DataError,
    IntegrityError, OperationalError...), so callers catch one family
    whatever the engine."""
    try:
        yield
    except (DatabaseBusy, DatabaseFull, DatabaseGone):
        raise
    except Exception as exc:
        import psycopg

        if not isinstance(exc, (psycopg.Error, peewee.PeeweeException)):
            raise
        if _is_gone(exc):
            raise DatabaseGone(" ".join(str(exc).split()) or "the database server cannot be reached") from exc
        state = _sqlstate(exc)
        if state in _BUSY_STATES:
            raise DatabaseBusy(str(exc)) from exc
        if state in _FULL_STATES:
            raise DatabaseFull(str(exc)) from exc
        if isinstance(exc, psycopg.Error):
            # peewee's wrapper maps psycopg's classes to its own by name.
            with peewee.__exception_wrapper__:
                raise exc
        raise


class PostgresDatabase(Psycopg3Database):
    """Psycopg3Database with the gateway's types, error classes, lock
    timeout, and (for readers) read-only sessions."""

    engine = POSTGRESQL

    def __init__(self, target: DatabaseTarget, *, busy_timeout_ms: int = 5000, read_only: bool = False):
        params = dict(target.params)
        params.setdefault("connect_timeout", CONNECT_TIMEOUT_S)
        self._busy_timeout_ms = int(busy_timeout_ms)
        self._read_only = read_only
        self.target = target
        super().__init__(target.database, field_types=FIELD_TYPES, **params)

    def get_context_options(self):
        options = super().get_context_options()
        options.update(now_sql=NOW_SQL, scalar_max="GREATEST")
        return options

    def _initialize_connection(self, conn):
        with conn.cursor() as cur:
            cur.execute(f"SET lock_timeout = {self._busy_timeout_ms}")
            if self._read_only:
                cur.execute("SET default_transaction_read_only = on")
            else:
                # Made here, outside any transaction, so that a rolled-back
                # batch cannot take it away; one per session (writers only).
                cur.execute(_STAGE_DDL)
                self._durable_commits(cur)

    def _durable_commits(self, cur) -> None:
        """The gateway acknowledges a message once its commit returns, so
        that commit must be durable: `synchronous_commit = off` (which a
        server or a role may set as its default) returns before the WAL
        is flushed, and is turned back on for this session; a stronger
        value (on, remote_write, remote_apply, local) is kept. `fsync = off`
        on the server cannot be undone from here: said once in the log
        (and in `gateway inspect stats`), as a power cut there loses
        acknowledged messages."""
        cur.execute("SHOW synchronous_commit")
        if str(cur.fetchone()[0]).lower() == "off":
            cur.execute("SET synchronous_commit = on")
            DURABILITY["synchronous_commit"] = "off on the server; on for the gateway's sessions"
        else:
            DURABILITY.setdefault("synchronous_commit", "kept")
        cur.execute("SHOW fsync")
        fsync = str(cur.fetchone()[0]).lower()
        if fsync == "off" and DURABILITY.get("fsync") != "off":
            log.error("PostgreSQL at %s runs with fsync = off: a power cut or a crash of its computer loses "
                      "messages the gateway acknowledged; turn it on (postgresql.conf: fsync = on)",
                      self.target.display)
        DURABILITY["fsync"] = fsync

    def _heal(self) -> None:
        """Close a connection the server or the network cut (outside a
        transaction), so that this use opens a new one: a store survives a
        PostgreSQL restart instead of failing on the dead connection."""
        if self.is_closed() or self.in_transaction():
            return
        conn = super().connection()
        if conn.broken or conn.closed:
            self.close()

    def connection(self):
        self._heal()
        with pg_errors():
            return super().connection()

    def begin(self, lock_type=None):  # noqa: ARG002 - SQLite's BEGIN IMMEDIATE has no meaning here
        self._heal()
        with pg_errors():
            super().begin()

    def execute_sql(self, sql, params=None, commit=None):
        self._heal()
        with pg_errors():
            return super().execute_sql(sql, params)

    def commit(self):
        with pg_errors():
            return super().commit()

    def rollback(self):
        # On a lost connection the server has ended the transaction: a
        # ROLLBACK would only fail, and its error would hide the one that
        # says the server is gone.
        if not self.is_closed() and super().connection().broken:
            return None
        with pg_errors():
            return super().rollback()

    def connect(self, reuse_if_open=False):
        with pg_errors():
            return super().connect(reuse_if_open)


# -- telemetry -----------------------------------------------------------------

_STAGE = "telemetry_stage"
_STAGE_TYPES = {"device_uuid": "text", "boot_id": "bigint", "seq": "bigint", "idx": "bigint",
                "ts": "double precision", "received_at": "double precision", "source": "text",
                "metric": "text", "value": "double precision", "unit": "text", "tag": "text", "raw": "bytea"}
_STAGE_DDL = (f"CREATE TEMP TABLE IF NOT EXISTS {_STAGE} ("
              + ", ".join(f"{c} {t}" for c, t in _STAGE_TYPES.items()) + ") ON COMMIT DELETE ROWS")


def insert_telemetry(db, table: str, columns: Sequence[str], rows: Sequence[tuple]) -> int:
    """COPY `rows` into the staging table, then move the new ones into
    `table` in one statement; returns how many were new. The staging
    table is emptied right after (and at every commit), so several calls
    in one transaction never see each other's rows, and rows keep the
    order they came in (ids grow with arrival, as retention expects)."""
    conn = db.connection()
    cols = ", ".join(columns)
    with pg_errors():
        with conn.cursor() as cur:
            with cur.copy(f"COPY {_STAGE} ({cols}) FROM STDIN") as copy:
                write = copy.write_row
                for row in rows:
                    write(row)
            cur.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM {_STAGE} ON CONFLICT DO NOTHING")
            inserted = max(cur.rowcount, 0)
            # Emptied now, not only at commit: a salvaged batch calls this
            # once per row in one transaction. TRUNCATE of a session's own
            # temporary table costs what the commit's would (a DELETE
            # inside a CTE measured 10-15 % slower).
            cur.execute(f"TRUNCATE {_STAGE}")
            return inserted


def touch_last_seen(db, table: str, latest: dict[str, float]) -> int:
    conn = db.connection()
    with pg_errors(), conn.cursor() as cur:
        cur.executemany(f"UPDATE {table} SET last_seen = GREATEST(COALESCE(last_seen, %(ts)s), %(ts)s)"
                        f" WHERE uuid = %(uuid)s", [{"ts": ts, "uuid": uuid} for uuid, ts in latest.items()])
        return max(cur.rowcount, 0)


# -- the change signal -----------------------------------------------------------

_listening: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()  # connection -> notifications seen


def change_count(db) -> int:
    """A number that grows whenever a transaction that changed `commands`
    commits (NOTIFY from its trigger), as seen by this thread's connection
    to `db`. The first call starts listening and counts 1, so the caller
    queries once."""
    conn = db.connection()
    with pg_errors():
        if conn not in _listening:
            conn.execute(f"LISTEN {COMMANDS_CHANNEL}")
            _listening[conn] = 1
        got = sum(1 for _ in conn.notifies(timeout=0))
    if got:
        _listening[conn] += got
    return _listening[conn]


COMMANDS_TRIGGER_SQL = (
    f"""CREATE OR REPLACE FUNCTION autocore_commands_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('{COMMANDS_CHANNEL}', '');
  RETURN NULL;
END $$""",
    "DROP TRIGGER IF EXISTS commands_changed ON commands",
    "CREATE TRIGGER commands_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON commands"
    " FOR EACH STATEMENT EXECUTE FUNCTION autocore_commands_changed()",
)

# The fleet uplink's outbox of command state changes (migration 6): a row
# per insert and per change of status, whoever writes.
COMMAND_CHANGES_TRIGGER_SQL = (
    """CREATE OR REPLACE FUNCTION autocore_command_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' OR NEW.status IS DISTINCT FROM OLD.status THEN
    INSERT INTO uplink_command_changes (command_id, status, at)
      VALUES (NEW.id, NEW.status, extract(epoch from clock_timestamp())::double precision);
  END IF;
  RETURN NULL;
END $$""",
    "DROP TRIGGER IF EXISTS uplink_command_change ON commands",
    "CREATE TRIGGER uplink_command_change AFTER INSERT OR UPDATE OF status ON commands"
    " FOR EACH ROW EXECUTE FUNCTION autocore_command_change()",
)

# One key for every gateway's migrations: two starting at once take turns.
MIGRATION_LOCK_KEY = 0x6175746F636F7265 & 0x7FFFFFFFFFFFFFFF  # "autocore"


def lock_for_migration(db) -> None:
    db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))


def used_bytes(db) -> int:
    return int(db.execute_sql("SELECT pg_database_size(current_database())").fetchone()[0])


def check_reachable(target: DatabaseTarget, timeout_s: float) -> None:
    """Connect once and disconnect; raise with libpq's first line if the
    server cannot be reached or refuses us."""
    import psycopg

    params = dict(target.params)
    params.setdefault("connect_timeout", max(1, int(timeout_s)))
    with psycopg.connect(dbname=target.database, **params):
        pass
