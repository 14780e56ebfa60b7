"""Versioned, idempotent schema migrations.

`STEPS` is an ordered list of (version, name, function). `migrate()` runs
the ones `schema_version` does not list yet, each recorded in the same
transaction as its changes (SQLite DDL is transactional), so a crash leaves
either a step and its record or neither. Every step is also safe to run on
a schema that already has its changes: the Config App may have created the
tables first, with only the contract's columns, and a step re-run by hand
must not fail. Add new steps at the end; never edit an applied one.
"""

from __future__ import annotations

import time
from typing import Callable

from peewee import Entity, Model

from storage.db import database, write_transaction
from storage.models import CONTRACT_MODELS, GATEWAY_DEVICE_COLUMNS, Device, SchemaVersion, Telemetry


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
    for model in CONTRACT_MODELS:
        model._schema.create_table(safe=True)
        _ensure_indexes(model)


def add_gateway_device_columns() -> None:
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


Step = tuple[int, str, Callable[[], None]]

STEPS: list[Step] = [
    (1, "contract tables and indexes", create_contract_tables),
    (2, "gateway columns of devices (protocol, relay_count, encoding)", add_gateway_device_columns),
    (3, "message identity as a partial unique index (rows with a seq)", partial_identity_index),
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
    done: list[int] = []
    with write_transaction():
        SchemaVersion._schema.create_table(safe=True)
        have = {v for (v,) in SchemaVersion.select(SchemaVersion.version).tuples()}
        for version, name, step in STEPS:
            if version in have:
                continue
            step()
            SchemaVersion.insert(version=version, name=name, applied_at=applied_at).execute()
            done.append(version)
    return done
