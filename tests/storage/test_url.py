"""Where the database is: AUTOCORE_DB_URL / AUTOCORE_DB_PATH parsed
(storage/url.py), and a sqlite:// URL opening the same file a path would."""

from __future__ import annotations

import os

import pytest

from storage import devices, migrations
from storage.db import close_database, describe_location, free_disk_bytes, open_database
from storage.url import POSTGRESQL, SQLITE, parse_location, redact


@pytest.mark.parametrize("location, path", [
    ("var/autocore.db", "var/autocore.db"),
    ("sqlite:///var/autocore.db", "var/autocore.db"),
    ("sqlite:////data/autocore.db", "/data/autocore.db"),
    ("sqlite://", ":memory:"),
])
def test_sqlite_locations(location, path):
    target = parse_location(location)
    assert (target.engine, target.path) == (SQLITE, path)


def test_a_postgresql_url_gives_libpq_parameters_and_hides_its_password():
    target = parse_location("postgresql://gw:p%40ss@db.depot:5433/autocore?sslmode=require&connect_timeout=3")
    assert (target.engine, target.database) == (POSTGRESQL, "autocore")
    assert dict(target.params) == {"user": "gw", "password": "p@ss", "host": "db.depot", "port": 5433,
                                   "sslmode": "require", "connect_timeout": "3"}
    assert target.display == "postgresql://gw:***@db.depot:5433/autocore?sslmode=require&connect_timeout=3"
    assert parse_location("postgres://db/x").engine == POSTGRESQL
    assert redact("postgresql://gw@db/x") == "postgresql://gw@db/x"


@pytest.mark.parametrize("bad, says", [
    ("mysql://db/autocore", "unsupported database URL scheme 'mysql'"),
    ("postgresql://db.depot:5432/", "names no database"),
    ("postgresql://db.depot:port/x", "bad port"),
    ("sqlite://host/file.db", "no host"),
    ("", "no database given"),
])
def test_bad_locations_are_refused_with_a_reason(bad, says):
    with pytest.raises(ValueError, match=says):
        parse_location(bad)


@pytest.mark.sqlite_only
def test_a_sqlite_url_opens_the_file_a_path_would(tmp_path, engine):
    path = tmp_path / "data" / "autocore.db"
    open_database(f"sqlite:///{path}")  # an absolute path: four slashes in all
    migrations.migrate()
    try:
        devices.ensure_device("d1", 1.0, "v1")
    finally:
        close_database()
    assert os.path.exists(path)
    open_database(str(path))
    try:
        assert devices.get_device("d1") is not None
    finally:
        close_database()
    assert describe_location(f"sqlite:///{path}") == ("sqlite", f"sqlite:///{path}")
    assert free_disk_bytes(f"sqlite:///{path}") > 0
    assert free_disk_bytes("postgresql://db/x") is None
