"""Versioned, idempotent schema migrations.

`STEPS` is an ordered list of (version, name, function). `migrate()` runs
the ones `schema_version` does not list yet, each recorded in the same
transaction as its changes (DDL is transactional on SQLite and on
PostgreSQL), so a crash leaves
either a step and its record or neither. Every step is also safe to run on
a schema that already has its changes: the Config App may have created the
tables first, with only the contract's columns, and a step re-run by hand
must not fail. Add new steps at the end; never edit an applied one.

The same steps run on both engines. The SQLite-only parts (PRAGMAs, the
old layouts an earlier gateway left in a Config App file) are skipped on
PostgreSQL, where no such file ever existed; the PostgreSQL-only part (the
trigger that signals changes to `commands`) is a recorded no-op on SQLite.
"""

from __future__ import annotations

import re
import time
import uuid
from contextlib import contextmanager
from typing import Callable, Iterator

from peewee import Entity, Model

from storage.db import POSTGRESQL, SQLITE, SQLITE_NOW_SQL, database, write_transaction
from storage.models import (
    CONTRACT_MODELS,
    GATEWAY_DEVICE_COLUMNS,
    CommandChange,
    Device,
    GatewayMeta,
    SchemaVersion,
    Telemetry,
    UplinkCursor,
)


def _existing_columns(table: str) -> set[str]:
    return {c.name for c in database.get_columns(table)}


def _ensure_indexes(model: type[Model]) -> None:
    """Create the model's indexes unless an index on the same columns with
    the same uniqueness exists already (under any name, e.g. the Config
    App's), since a duplicate index would only slow every insert."""
    table = model._meta.table_name
    have = {(tuple(i.columns), bool(i.unique)) for i in database.get_indexes(table)}
    schema = model._schema
    for index in model._meta.fields_to_index():
        columns = tuple(f.column_name for f in index._expressions)
        if (columns, bool(index._unique)) not in have:
            database.execute(schema._create_index(index, safe=True))


def _add_columns(model: type[Model], names: tuple[str, ...]) -> None:
    """ALTER TABLE ... ADD COLUMN for each of `names` the table lacks, with
    the column definition taken from the model (one place for DDL)."""
    table = model._meta.table_name
    missing = [n for n in names if n not in _existing_columns(table)]
    for name in missing:
        field = model._meta.fields[name]
        ctx = model._schema._create_context()
        ctx.literal("ALTER TABLE ").sql(Entity(table)).literal(" ADD COLUMN ").sql(field.ddl(ctx))
        database.execute(ctx)


def create_contract_tables() -> None:
    _rename_old_registry()  # a registry made under its old name keeps its rows
    for model in CONTRACT_MODELS:
        model._schema.create_table(safe=True)
        _ensure_indexes(model)


def add_gateway_device_columns() -> None:
    # On a database whose registry still has its old name, step 4 adds them.
    if database.table_exists(Device._meta.table_name):
        _add_columns(Device, GATEWAY_DEVICE_COLUMNS)


IDENTITY_INDEX = "telemetry_identity"
_OLD_IDENTITY_INDEX = "telemetry_device_uuid_boot_id_seq_idx"  # what step 1 made before step 3 existed


def partial_identity_index() -> None:
    """The message identity as a partial unique index over rows with a seq.

    A row without seq can never collide (NULLs are distinct in SQLite), yet
    in a full unique index the rows of a 2.2 relay board (no seq, no boot)
    pile up under one key per channel, and inserts slowed from 190k to 90k
    rows/s as the table grew. INSERT OR IGNORE refuses repeats the same way.
    """
    table = Telemetry._meta.table_name
    columns = ("device_uuid", "boot_id", "seq", "idx")
    theirs = [i.name for i in database.get_indexes(table)
              if i.unique and tuple(i.columns) == columns and i.name not in (IDENTITY_INDEX, _OLD_IDENTITY_INDEX)]
    if not theirs:  # a Config App's own identity index is kept, not doubled
        database.execute_sql(
            f"CREATE UNIQUE INDEX IF NOT EXISTS {IDENTITY_INDEX} ON {table} ({', '.join(columns)}) WHERE seq IS NOT NULL"
        )
    database.execute_sql(f"DROP INDEX IF EXISTS {_OLD_IDENTITY_INDEX}")


OLD_REGISTRY = "devices"  # the registry's name before the Config App's table of that name was known


def _is_gateway_registry(table: str) -> bool:
    """The gateway's old registry (uuid primary key, `device_type`), as
    opposed to the Config App's `devices` (integer `id`, `type`)."""
    columns = _existing_columns(table)
    return {"uuid", "device_type"} <= columns and "id" not in columns


def move_registry() -> None:
    """The registry becomes `gateway_devices`, leaving `devices` to the
    Config App (PROTOCOL.md, "The Config App's database").

    * An older gateway's `devices` is renamed, rows and all. SQLite's
      RENAME would rewrite every foreign key that points at `devices` (the
      Config App's `relay_boards`, `telemetry_data`, made after ours) to
      point at `gateway_devices`; `migrate()` turns foreign keys off and
      `legacy_alter_table` on around the steps, so they stay as they are.
    * Where `devices` is the Config App's, an older gateway added its
      three columns to it (and then failed to start): they are dropped
      again, and only if they are exactly what it added.
    """
    _rename_old_registry()
    Device._schema.create_table(safe=True)
    _add_columns(Device, GATEWAY_DEVICE_COLUMNS)
    _ensure_indexes(Device)
    if (database.engine == SQLITE and database.table_exists(OLD_REGISTRY)
            and not _is_gateway_registry(OLD_REGISTRY)):
        _drop_columns_an_older_gateway_added(OLD_REGISTRY)


def _rename_old_registry() -> None:
    registry = Device._meta.table_name
    if (not database.table_exists(registry) and database.table_exists(OLD_REGISTRY)
            and _is_gateway_registry(OLD_REGISTRY)):
        database.execute_sql(f'ALTER TABLE "{OLD_REGISTRY}" RENAME TO "{registry}"')


# What migration 2 of an older gateway added to the Config App's `devices`.
_ADDED_TO_CONFIG_APP = {"protocol": "TEXT", "relay_count": "INTEGER", "encoding": "TEXT"}


def _drop_columns_an_older_gateway_added(table: str) -> None:
    cursor = database.execute_sql(f'PRAGMA table_info("{table}")')
    declared = {row[1]: (row[2] or "").upper() for row in cursor.fetchall()}
    for name, type_ in _ADDED_TO_CONFIG_APP.items():
        if declared.get(name) == type_:
            database.execute_sql(f'ALTER TABLE "{table}" DROP COLUMN "{name}"')


def commands_change_signal() -> None:
    """PostgreSQL: NOTIFY from a statement trigger on `commands`, so the
    command feed wakes on a change instead of querying every poll (what
    `PRAGMA data_version` gives it on SQLite, for free)."""
    if database.engine != POSTGRESQL:
        return
    from storage.postgres import COMMANDS_TRIGGER_SQL

    for statement in COMMANDS_TRIGGER_SQL:
        database.execute_sql(statement)


# -- the fleet uplink (issue 14) ------------------------------------------------

# Tables whose ids the uplink sends: an id must never be handed out twice.
UPLINK_ID_TABLES = ("telemetry", "device_events", "commands")
ORIGIN_INDEX = "commands_origin_id"


def _sqlite_autoincrement(table: str) -> None:
    """Rebuild `table` with `id INTEGER PRIMARY KEY AUTOINCREMENT`.

    Without AUTOINCREMENT SQLite hands out max(id) + 1, so once retention
    deletes the newest rows (a table pruned empty) their ids come back, and
    the uplink's cursor, which already holds them as sent, would skip the
    new rows. SQLite cannot add the keyword in place: the table is renamed,
    made again from its own CREATE statement plus the keyword, its rows
    copied (ids kept: sqlite_sequence starts at their max), the old one
    dropped and its indexes and triggers made again from their own
    statements. `migrate()` has legacy_alter_table on, so the rename
    rewrites nothing else. One-time cost: the copy of the table."""
    row = database.execute_sql("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone()
    if row is None or "AUTOINCREMENT" in row[0].upper():
        return
    create, n = re.subn(r'^(.*?("id"|\bid\b)\s+INTEGER\s+(NOT\s+NULL\s+)?PRIMARY\s+KEY)', r"\1 AUTOINCREMENT",
                        row[0], count=1, flags=re.IGNORECASE | re.DOTALL)
    if n != 1:
        raise RuntimeError(f"cannot make {table}.id AUTOINCREMENT: its id is not an INTEGER PRIMARY KEY ({row[0]!r})")
    others = [sql for (sql,) in database.execute_sql(
        "SELECT sql FROM sqlite_master WHERE type IN ('index', 'trigger') AND tbl_name = ? AND sql IS NOT NULL "
        "ORDER BY type", (table,)).fetchall()]
    columns = ", ".join(f'"{c}"' for c in (r[1] for r in database.execute_sql(f'PRAGMA table_info("{table}")')))
    old = f"{table}__before_autoincrement"
    database.execute_sql(f'ALTER TABLE "{table}" RENAME TO "{old}"')
    database.execute_sql(create)
    database.execute_sql(f'INSERT INTO "{table}" ({columns}) SELECT {columns} FROM "{old}" ORDER BY id')
    database.execute_sql(f'DROP TABLE "{old}"')
    for sql in others:
        database.execute_sql(sql)


_SQLITE_CHANGE_TRIGGERS = (
    f"""CREATE TRIGGER IF NOT EXISTS uplink_command_inserted AFTER INSERT ON commands
BEGIN INSERT INTO uplink_command_changes (command_id, status, at) VALUES (NEW.id, NEW.status, {SQLITE_NOW_SQL}); END""",
    f"""CREATE TRIGGER IF NOT EXISTS uplink_command_changed AFTER UPDATE OF status ON commands
WHEN NEW.status IS NOT OLD.status
BEGIN INSERT INTO uplink_command_changes (command_id, status, at) VALUES (NEW.id, NEW.status, {SQLITE_NOW_SQL}); END""",
)


def uplink_tables() -> None:
    """What the fleet uplink keeps in the database: ids never reused
    (SQLite AUTOINCREMENT; PostgreSQL's sequences never go back anyway),
    the database's own uuid, the cursor, fleet commands' `origin_id`
    (unique: a redelivery inserts nothing) and the outbox of command state
    changes (triggers, so every writer's changes are caught)."""
    # A database an older gateway left half made (its steps recorded, some
    # tables never created) gets them now: nothing below works without them.
    create_contract_tables()
    if database.engine == SQLITE:
        for table in UPLINK_ID_TABLES:
            _sqlite_autoincrement(table)
    for model in (GatewayMeta, UplinkCursor, CommandChange):
        model._schema.create_table(safe=True)
    if database.engine == SQLITE:
        _sqlite_autoincrement(CommandChange._meta.table_name)  # made by peewee without the keyword
    GatewayMeta.insert(key="database_id", value=str(uuid.uuid4())).on_conflict_ignore().execute()
    if "origin_id" not in _existing_columns("commands"):
        database.execute_sql("ALTER TABLE commands ADD COLUMN origin_id TEXT")
    # NULLs are distinct on both engines: local commands have none.
    database.execute_sql(f"CREATE UNIQUE INDEX IF NOT EXISTS {ORIGIN_INDEX} ON commands (origin_id)")
    if database.engine == POSTGRESQL:
        from storage.postgres import COMMAND_CHANGES_TRIGGER_SQL

        statements: tuple[str, ...] = COMMAND_CHANGES_TRIGGER_SQL
    else:
        statements = _SQLITE_CHANGE_TRIGGERS
    for statement in statements:
        database.execute_sql(statement)


def lease_tables() -> None:
    """Several instances (issue 13): the bucket leases and the instances'
    heartbeats (storage/leases.py). Empty and unread with one instance."""
    from storage import leases

    leases.create_tables()


Step = tuple[int, str, Callable[[], None]]

STEPS: list[Step] = [
    (1, "contract tables and indexes", create_contract_tables),
    (2, "gateway columns of devices (protocol, relay_count, encoding)", add_gateway_device_columns),
    (3, "message identity as a partial unique index (rows with a seq)", partial_identity_index),
    (4, "the registry is gateway_devices; the Config App's devices is left as it made it", move_registry),
    (5, "a change signal on commands (PostgreSQL: NOTIFY from a trigger)", commands_change_signal),
    (6, "fleet uplink: ids never reused, database id, cursor, origin_id, command change outbox", uplink_tables),
    (7, "lease tables of several instances (gateway_leases, gateway_instances)", lease_tables),
]


def current_version() -> int:
    if not database.table_exists(SchemaVersion._meta.table_name):
        return 0
    row = SchemaVersion.select(SchemaVersion.version).order_by(SchemaVersion.version.desc()).first()
    return row.version if row else 0


def migrate(*, now: float | None = None) -> list[int]:
    """Apply the steps not applied yet; return their versions.

    Runs in one IMMEDIATE transaction, so two processes starting together
    migrate one after the other and the second finds nothing to do.
    `now` (default: the wall clock) is only recorded as `applied_at`.
    """
    applied_at = time.time() if now is None else now
    with _renames_keep_foreign_keys():
        return _migrate(applied_at)


@contextmanager
def _renames_keep_foreign_keys() -> Iterator[None]:
    """Both pragmas are needed for a RENAME to leave other tables' foreign
    keys alone, and `foreign_keys` cannot change inside a transaction.
    SQLite only: PostgreSQL's RENAME never rewrites other tables' keys."""
    if database.engine != SQLITE:
        yield
        return
    fk = database.execute_sql("PRAGMA foreign_keys").fetchone()[0]
    legacy = database.execute_sql("PRAGMA legacy_alter_table").fetchone()[0]
    database.execute_sql("PRAGMA foreign_keys = OFF")
    database.execute_sql("PRAGMA legacy_alter_table = ON")
    try:
        yield
    finally:
        database.execute_sql(f"PRAGMA legacy_alter_table = {int(legacy)}")
        database.execute_sql(f"PRAGMA foreign_keys = {int(fk)}")


def _migrate(applied_at: float) -> list[int]:
    done: list[int] = []
    with write_transaction():
        if database.engine == POSTGRESQL:
            # BEGIN takes no lock there: two gateways starting at once
            # would race on CREATE TABLE. They take turns instead.
            from storage.postgres import lock_for_migration

            lock_for_migration(database)
        SchemaVersion._schema.create_table(safe=True)
        have = {v for (v,) in SchemaVersion.select(SchemaVersion.version).tuples()}
        for version, name, step in STEPS:
            if version in have:
                continue
            step()
            SchemaVersion.insert(version=version, name=name, applied_at=applied_at).execute()
            done.append(version)
    return done
