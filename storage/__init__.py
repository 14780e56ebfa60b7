"""Storage: the SQLite database shared with the Config App, or a
PostgreSQL server (`AUTOCORE_DB_URL`).

`storage.db` opens it (pragmas) and binds the `database` proxy,
`storage.migrations.migrate` brings its schema up to date; `storage.url`
says which engine a location means and `storage.postgres` holds what
differs on PostgreSQL; the repositories `storage.devices`, `storage.events`,
`storage.telemetry` and `storage.commands` take and return plain values
(frozen dataclasses), never peewee model instances. Imports only protocol/.
"""

from typing import Any

__all__ = [
    "DatabaseBusy",
    "close_database",
    "data_version",
    "database",
    "open_database",
    "open_reader",
    "write_transaction",
]


def __getattr__(name: str) -> Any:
    # storage.db's names, imported when first asked for: importing
    # storage.url alone must not import peewee (storage/imports.py).
    if name in __all__:
        from storage import db

        return getattr(db, name)
    raise AttributeError(f"module 'storage' has no attribute {name!r}")
