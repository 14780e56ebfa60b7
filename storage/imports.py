"""Importing peewee for a process that uses one engine only.

peewee imports psycopg, when it is installed, for its error classes alone:
about 150 ms of every process's start (the launcher, core and store), and
runit starts them again after every crash. A process whose database is a
SQLite file never meets a psycopg error, so it imports peewee with psycopg
hidden: peewee then finds no psycopg, as on a machine without it (its
documented optional dependency). A process on PostgreSQL imports peewee
as it is. The test suite, which uses both engines in one process, never
calls this.
"""

from __future__ import annotations

import sys

from storage.url import SQLITE, parse_location

HIDDEN_ON_SQLITE = ("psycopg", "psycopg2")


def import_peewee_for(location: str) -> None:
    """Import peewee, leaving psycopg out when `location` is SQLite. Call
    before anything imports storage.db; afterwards it changes nothing."""
    try:
        if "peewee" in sys.modules or parse_location(location).engine != SQLITE:
            return
    except ValueError:
        return  # a bad location is reported where the database is opened
    hidden = [name for name in HIDDEN_ON_SQLITE if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # `import name` raises ImportError
    try:
        import peewee  # noqa: F401
    finally:
        for name in hidden:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]
