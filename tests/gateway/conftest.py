"""Fixtures of the CLI tests: a clean environment, a CliRunner bound to a
database and run dir in tmp_path, and a database with some rows in it."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from gateway.cli import main


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    """No AUTOCORE_* setting of the developer's shell leaks into a test."""
    for name in list(os.environ):
        if name.startswith("AUTOCORE_"):
            monkeypatch.delenv(name)


class Cli:
    def __init__(self, db_path: Path, run_dir: Path) -> None:
        self.db_path = db_path
        self.run_dir = run_dir
        self.env = {"AUTOCORE_DB_PATH": str(db_path), "AUTOCORE_RUN_DIR": str(run_dir)}
        self.runner = CliRunner()

    def __call__(self, *args: str, env: dict | None = None, input: str | None = None):
        return self.runner.invoke(main, list(args), env={**self.env, **(env or {})}, input=input, prog_name="gateway")

    @property
    def socket_path(self) -> Path:
        return self.run_dir / "gateway.sock"


@pytest.fixture
def cli(tmp_path) -> Cli:
    return Cli(tmp_path / "var" / "autocore.db", tmp_path / "run")


@pytest.fixture
def filled_db(cli):
    """A migrated database: two devices, telemetry, a few commands."""
    from protocol.values import DeviceFacts
    from storage import commands as command_repo
    from storage import devices as device_repo
    from storage import migrations
    from storage import telemetry as telemetry_repo
    from storage.db import close_database, database, open_database

    now = time.time()
    open_database(str(cli.db_path))
    migrations.migrate()
    try:
        device_repo.upsert_facts("relay-01", DeviceFacts(device_type="relay_board", firmware_version="1.2.0",
                                                          name="Relays front"), now - 100, "v1", "json")
        device_repo.set_status("relay-01", "online", now - 5, boot_id=7)
        device_repo.ensure_device("display-01", now - 3600, "fw22")
        device_repo.set_status("display-01", "offline", now - 60)
        rows = []
        for i in range(10):
            rows.append(("relay-01", 7, i, 0, now - 600 + i * 60, now - 600 + i * 60, "analog", "fuel_level",
                         50.0 + i, "%", None, None))
            rows.append(("relay-01", 7, i, 1, now - 600 + i * 60, now - 600 + i * 60, "can", "RPM", 2000 + i,
                         "rpm", "0x200", None))
        rows.append(("relay-01", 7, 100, 0, now - 9 * 86400, now - 9 * 86400, "analog", "fuel_level", 10.0, "%",
                     None, None))
        rows.append(("display-01", None, None, None, now - 30, now - 30, "can_raw", "0x123", None, None, None,
                     b"\x0a\x1b"))
        telemetry_repo.insert_rows(database, rows)
        command_repo.insert_command("relay-01", "relay_control", {"relay_id": 1, "state": True}, now=now - 50,
                                    ttl_s=300)
        done = command_repo.insert_command("relay-01", "reboot", {}, now=now - 40, ttl_s=300)
        for status in ("queued", "sent"):
            command_repo.transition(done, status, now - 39, attempts=1)
        command_repo.transition(done, "failed", now - 38, error_message="busy")
    finally:
        close_database()
    return cli
