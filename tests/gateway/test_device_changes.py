"""`gateway devices forget` and `gateway devices dialect` on the database
alone (no gateway running), and against a control socket that answers with
an error (the database is then left alone). The running gateway's side is in
test_live.py and tests/sim/test_deploy.py."""

from __future__ import annotations

import json
import socket
import sqlite3
import struct
import threading

import msgpack
import pytest


def query(cli, sql, *args):
    conn = sqlite3.connect(f"file:{cli.db_path}?mode=ro", uri=True)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def events(cli, uuid):
    return [(e, json.loads(d)) for e, d in query(cli, "SELECT event, detail FROM device_events WHERE device_uuid = ? "
                                                       "ORDER BY id", uuid)]


def test_dialect_sets_the_registry_and_writes_an_event_once(filled_db):
    cli = filled_db
    result = cli("devices", "dialect", "relay-01", "fw22")
    assert result.exit_code == 0, result.output
    assert result.stdout == ("relay-01: dialect fw22 (was v1); its 2.2 messages are accepted "
                             "(no gateway is running; it reads this at its start).\n")
    assert query(cli, "SELECT protocol FROM gateway_devices WHERE uuid = 'relay-01'") == [("fw22",)]
    assert events(cli, "relay-01") == [("dialect_change", {"from": "v1", "to": "fw22", "by": "operator"})]
    again = cli("devices", "dialect", "relay-01", "fw22", "--json")
    assert again.exit_code == 0
    assert json.loads(again.stdout) == {"uuid": "relay-01", "dialect": "fw22", "was": "fw22", "dialect_locked": False,
                                        "boot_id": 7, "registry": True, "gateway": "not running", "gateway_knew": None}
    assert len(events(cli, "relay-01")) == 1  # nothing changed, nothing recorded
    back = cli("devices", "dialect", "relay-01", "v1")
    assert back.exit_code == 0 and "2.2 messages for it are refused (it has boot_id 7)" in back.stdout
    unlocked = cli("devices", "dialect", "display-01", "v1")
    assert unlocked.exit_code == 0 and "no boot_id yet" in unlocked.stdout


def test_forget_removes_the_registry_row_and_keeps_the_history(filled_db):
    cli = filled_db
    telemetry = query(cli, "SELECT count(*) FROM telemetry WHERE device_uuid = 'relay-01'")
    result = cli("devices", "forget", "relay-01")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("forgot relay-01: removed from the registry (it was v1, online, boot 7); "
                                    "no gateway is running.")
    assert query(cli, "SELECT uuid FROM gateway_devices") == [("display-01",)]
    assert query(cli, "SELECT count(*) FROM telemetry WHERE device_uuid = 'relay-01'") == telemetry
    assert query(cli, "SELECT count(*) FROM commands WHERE device_uuid = 'relay-01'") == [(2,)]
    assert events(cli, "relay-01") == [("forgotten", {"by": "operator", "protocol": "v1", "boot_id": 7})]
    again = cli("devices", "forget", "relay-01")
    assert again.exit_code == 1
    assert again.stderr == f"error: no device relay-01 in {cli.db_path}\n"
    as_json = cli("devices", "forget", "display-01", "--json")
    doc = json.loads(as_json.stdout)
    assert doc["registry"] is True and doc["gateway"] == "not running" and doc["was"]["protocol"] == "fw22"


@pytest.mark.parametrize("args", [("devices", "forget", "bad/uuid"), ("devices", "dialect", "relay-01", "v2"),
                                  ("devices", "dialect", "+", "v1"), ("devices", "forget")])
def test_usage_errors_exit_2(filled_db, args):
    result = filled_db(*args)
    assert result.exit_code == 2, result.output


def test_an_unknown_device_or_no_database_is_exit_1(filled_db, cli, tmp_path):
    result = filled_db("devices", "dialect", "nobody", "fw22")
    assert result.exit_code == 1 and result.stderr == f"error: no device nobody in {filled_db.db_path}\n"
    missing = cli("devices", "forget", "relay-01", "--db-path", str(tmp_path / "none.db"))
    assert missing.exit_code == 1 and "no database at" in missing.stderr


class ErrorServer:
    """A control socket whose gateway answers every request with an error."""

    def __init__(self, path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(1)
        self.requests = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn:
                (size,) = struct.unpack(">I", conn.recv(4))
                self.requests.append(msgpack.unpackb(conn.recv(size)))
                reply = msgpack.packb({"error": "the device's actor kept stopping; try again"})
                conn.sendall(struct.pack(">I", len(reply)) + reply)

    def close(self):
        self.server.close()


def test_a_gateway_that_cannot_be_told_leaves_the_database_alone(filled_db):
    cli = filled_db
    server = ErrorServer(cli.socket_path)
    try:
        for args in (("forget", "relay-01"), ("dialect", "relay-01", "fw22")):
            result = cli("devices", *args)
            assert result.exit_code == 1
            assert result.stderr == ("error: the running gateway could not be told: the device's actor kept "
                                     "stopping; try again; the database was not changed\n")
    finally:
        server.close()
    assert server.requests == [{"what": "forget", "uuid": "relay-01"},
                               {"what": "set_dialect", "uuid": "relay-01", "dialect": "fw22"}]
    assert query(cli, "SELECT protocol FROM gateway_devices WHERE uuid = 'relay-01'") == [("v1",)]
    assert events(cli, "relay-01") == []
