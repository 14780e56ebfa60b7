"""Reading the Config App's can_signals and DBC files: absent, present,
created later, changed; never a change to the Config App's schema."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from storage.can_signals import CanDefinitions, read_rows
from storage.db import open_reader
from tests.support import config_app

DBC = Path(__file__).parents[1] / "protocol" / "data" / "engine_mux.dbc"


@pytest.mark.sqlite_only  # the Config App's can_signals lives in its SQLite file
def test_no_table_no_definitions(db, db_path):
    reader = open_reader(db_path)
    try:
        assert read_rows(reader) is None
        defs = CanDefinitions()
        assert defs.refresh(reader) is True
        assert len(defs.catalog) == 0 and defs.config_app_table is False
        assert defs.refresh(reader) is False  # nothing changed: no new catalog
    finally:
        reader.close()


@pytest.mark.sqlite_only  # the Config App's can_signals lives in its SQLite file
def test_a_table_created_while_running_is_picked_up_and_left_as_it_is(db, db_path):
    reader = open_reader(db_path)
    defs = CanDefinitions()
    try:
        defs.refresh(reader)
        config_app.create_all(db_path)
        conn = config_app.connect(db_path)
        config_app.seed_can_signals(conn)
        before = config_app.dump(conn, ("can_signals",))
        assert defs.refresh(reader) is True
        assert len(defs.catalog) == 14 and defs.config_app_table
        rows = read_rows(reader)
        assert [r["signal_name"] for r in rows][:2] == ["RPM", "TPS"]
        assert rows[1]["scale_factor"] == 0.392 and rows[0]["byte_order"] is None
        # a change of one row: a new catalog with it
        conn.execute("UPDATE can_signals SET scale_factor = 2 WHERE signal_name = 'RPM'")
        conn.commit()
        assert defs.refresh(reader) is True
        assert defs.catalog.decode(0x100, bytes.fromhex("C409"))[0][0].value == 5000
        conn.execute("UPDATE can_signals SET is_active = 0 WHERE can_id = '0x100'")
        conn.commit()
        assert defs.refresh(reader) is True
        assert 0x100 not in defs.catalog.common
        after = config_app.dump(conn, ("can_signals",))
        assert after["schema"] == before["schema"]
        conn.close()
    finally:
        reader.close()


@pytest.mark.sqlite_only  # the Config App's can_signals lives in its SQLite file
def test_a_table_of_another_shape_has_no_definitions(db, db_path):
    conn = sqlite3.connect(db_path)
    conn.execute("CREATE TABLE can_signals (id INTEGER PRIMARY KEY, name TEXT)")
    conn.commit()
    conn.close()
    reader = open_reader(db_path)
    try:
        assert read_rows(reader) is None
    finally:
        reader.close()


@pytest.mark.sqlite_only  # the Config App's can_signals lives in its SQLite file
def test_dbc_files_are_read_again_when_they_change(db, db_path, tmp_path):
    path = tmp_path / "ecu.dbc"
    shutil.copy(DBC, path)
    missing = str(tmp_path / "nope.dbc")
    defs = CanDefinitions([(None, str(path)), ("can_gateway", missing)])
    reader = open_reader(db_path)
    try:
        assert defs.refresh(reader) is True
        assert {d.name for d in defs.catalog.definitions} >= {"RPM", "MuxId", "OilTemp"}
        assert defs.catalog.problems == (f"DBC file {missing}: cannot read it: No such file or directory",)
        assert defs.files_changed() is False
        path.write_text(DBC.read_text().replace("RPM", "EngineSpeed"))
        os.utime(path, ns=(1, 1))  # a new stamp even within the clock's resolution
        assert defs.files_changed() is True
        assert defs.refresh(reader) is True
        names = {d.name for d in defs.catalog.definitions}
        assert "EngineSpeed" in names and "RPM" not in names
        path.write_text("this is not a DBC file")
        assert defs.refresh(reader) is True
        assert len(defs.catalog) == 0
        assert any(line.startswith(f"DBC file {path}:") for line in defs.catalog.problems)
    finally:
        reader.close()


@pytest.mark.postgresql_only
def test_on_postgresql_there_is_no_config_app_table_to_read(db):
    assert read_rows(db) is None
