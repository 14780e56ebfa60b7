"""The database commands through click's CliRunner: no gateway running."""

from __future__ import annotations

import json
import sqlite3
import time

import pytest

from gateway.commands.command import build_parameters, parse_param_value


def test_devices_table_is_aligned(filled_db):
    result = filled_db("devices")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["UUID", "STATUS", "TYPE", "NAME", "PROTOCOL", "FIRMWARE", "IP", "BOOT", "LAST",
                                "SEEN", "FIRST", "SEEN"]
    assert [line.split()[0] for line in lines[1:]] == ["display-01", "relay-01"]
    # every column starts at the same place on every line
    status_at = lines[0].index("STATUS")
    assert all(line[status_at:].split()[0] in ("STATUS", "online", "offline") for line in lines)
    assert "Relays front" in lines[2]


def test_devices_status_filter_and_json(filled_db):
    result = filled_db("devices", "--status", "offline", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert [d["uuid"] for d in doc["devices"]] == ["display-01"]
    assert {"uuid", "device_type", "name", "firmware_version", "status", "first_seen", "last_seen", "boot_id",
            "protocol", "capabilities"} <= set(doc["devices"][0])
    assert doc["devices"][0]["protocol"] == "fw22"


def test_devices_bad_status_is_a_usage_error(filled_db):
    result = filled_db("devices", "--status", "asleep")
    assert result.exit_code == 2
    assert "asleep" in result.stderr


def test_no_database_is_one_line_and_exit_1(cli):
    for args in (["devices"], ["command", "list"], ["telemetry", "relay-01"], ["command", "send", "x", "y"],
                 ["db", "prune", "--older-than", "7d"]):
        result = cli(*args)
        assert result.exit_code == 1, (args, result.output)
        assert result.stderr.splitlines() == [f"error: no database at {cli.db_path} (the gateway creates it at its "
                                              "first start; `gateway db migrate` creates it now)"]
    assert not cli.db_path.exists()  # no stray database created by a typo


def test_command_send_inserts_the_row_the_config_app_would(filled_db):
    before = time.time()
    result = filled_db("command", "send", "relay-01", "relay_control", "--param", "relay_id=2",
                       "--param", "state=false", "--param", "label=front light", "--timeout", "7.5",
                       "--ttl", "2m", "--max-attempts", "4", "--json")
    assert result.exit_code == 0, result.output
    cmd = json.loads(result.stdout)["command"]
    row = sqlite3.connect(filled_db.db_path).execute(
        "SELECT device_uuid, command_type, parameters, topic, status, created_at, expires_at, timeout, "
        "max_attempts, attempts, sent_at, completed_at FROM commands WHERE id = ?", (cmd["id"],)).fetchone()
    device, ctype, params, topic, status, created, expires, timeout, max_attempts, attempts, sent, completed = row
    assert (device, ctype, topic, status, timeout, max_attempts, attempts, sent, completed) == (
        "relay-01", "relay_control", "command", "pending", 7.5, 4, 0, None, None)
    assert json.loads(params) == {"relay_id": 2, "state": False, "label": "front light"}
    assert before <= created <= time.time()
    assert expires == pytest.approx(created + 120)
    assert cmd["parameters"] == {"relay_id": 2, "state": False, "label": "front light"}
    # no gateway runs here: it says so, on stderr
    assert "the gateway does not seem to be running" in result.stderr


def test_command_send_defaults_come_from_the_settings(filled_db):
    result = filled_db("command", "send", "relay-01", "reboot", "--json",
                       env={"AUTOCORE_COMMAND_TTL_S": "60", "AUTOCORE_COMMAND_MAX_ATTEMPTS": "5"})
    assert result.exit_code == 0, result.output
    cmd = json.loads(result.stdout)["command"]
    assert cmd["timeout"] is None  # NULL: the gateway's default, as the Config App leaves it
    assert cmd["max_attempts"] == 5
    assert cmd["expires_at"] == pytest.approx(cmd["created_at"] + 60)
    assert cmd["parameters"] == {} and cmd["topic"] == "command"


def test_command_send_relay_topic_and_params_json(filled_db):
    result = filled_db("command", "send", "relay-01", "relay_control", "--topic", "relay/command",
                       "--params-json", '{"relays": [{"relay_id": 1, "action": "toggle"}], "x": 1}',
                       "--param", "x=2")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("command 3 pending: relay_control ")
    row = sqlite3.connect(filled_db.db_path).execute("SELECT topic, parameters FROM commands WHERE id = 3").fetchone()
    assert row[0] == "relay/command"
    assert json.loads(row[1]) == {"relays": [{"relay_id": 1, "action": "toggle"}], "x": 2}


def test_command_send_warns_about_an_unknown_or_offline_device(filled_db):
    unknown = filled_db("command", "send", "new-board", "ping")
    assert unknown.exit_code == 0
    assert "warning: no device new-board in the database yet" in unknown.stderr
    offline = filled_db("command", "send", "display-01", "ping")
    assert "note: device display-01 is offline" in offline.stderr


@pytest.mark.parametrize("args, complaint", [
    (["bad uuid!", "ping"], "is not a device id"),
    (["relay-01", " "], "must not be empty"),
    (["relay-01", "x", "--param", "novalue"], "is not KEY=VALUE"),
    (["relay-01", "x", "--params-json", "[1, 2]"], "must be a JSON object"),
    (["relay-01", "x", "--params-json", "{oops"], "not valid JSON"),
    (["relay-01", "x", "--topic", "commands"], "commands"),
    (["relay-01", "x", "--timeout", "0"], "--timeout"),
    (["relay-01", "x", "--ttl", "soon"], "soon"),
    (["relay-01", "x", "--max-attempts", "0"], "--max-attempts"),
    (["relay-01"], "Missing argument 'TYPE'"),
])
def test_command_send_usage_errors_exit_2_and_insert_nothing(filled_db, args, complaint):
    result = filled_db("command", "send", *args)
    assert result.exit_code == 2, result.output
    assert complaint in result.stderr
    count = sqlite3.connect(filled_db.db_path).execute("SELECT COUNT(*) FROM commands").fetchone()[0]
    assert count == 2


def test_param_values_are_json_where_they_can_be():
    assert parse_param_value("1") == 1
    assert parse_param_value("2.5") == 2.5
    assert parse_param_value("true") is True
    assert parse_param_value("null") is None
    assert parse_param_value("[1,2]") == [1, 2]
    assert parse_param_value("on") == "on"
    assert parse_param_value('"1"') == "1"
    assert parse_param_value("") == ""
    assert build_parameters(("a=1", "b=x=y"), '{"a": 0, "c": true}') == {"a": 1, "b": "x=y", "c": True}


def test_command_list_table_filters_and_json(filled_db):
    result = filled_db("command", "list")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split()[:5] == ["ID", "DEVICE", "TYPE", "TOPIC", "STATUS"]
    assert [line.split()[0] for line in lines[1:]] == ["2", "1"]  # newest first
    assert lines[1].rstrip().endswith("busy")
    failed = filled_db("command", "list", "--status", "failed", "--json")
    doc = json.loads(failed.stdout)
    assert [(c["id"], c["status"], c["error_message"]) for c in doc["commands"]] == [(2, "failed", "busy")]
    assert filled_db("command", "list", "--device", "display-01").stdout.strip() == "no commands for display-01"
    assert filled_db("command", "list", "--status", "nonsense").exit_code == 2


def test_command_cancel(filled_db):
    ok = filled_db("command", "cancel", "1")
    assert ok.exit_code == 0, ok.output
    assert "command 1 cancel requested (it was pending)" in ok.stdout
    status = sqlite3.connect(filled_db.db_path).execute("SELECT status FROM commands WHERE id = 1").fetchone()[0]
    assert status == "cancel_requested"
    again = filled_db("command", "cancel", "1")
    assert again.exit_code == 0 and "already requested" in again.stdout
    final = filled_db("command", "cancel", "2")
    assert final.exit_code == 1
    assert final.stderr.strip() == "error: command 2 is already failed; nothing to cancel"
    missing = filled_db("command", "cancel", "99")
    assert missing.exit_code == 1 and "no command 99" in missing.stderr
    assert filled_db("command", "cancel", "abc").exit_code == 2


def test_command_send_wait_without_gateway_gives_up_with_exit_1(filled_db):
    result = filled_db("command", "send", "relay-01", "ping", "--wait", "--wait-timeout", "0.3")
    assert result.exit_code == 1
    assert "command 3 pending" in result.stdout
    assert "error: command 3 is still pending after 300ms" in result.stderr


def test_telemetry_newest_n_oldest_first(filled_db):
    result = filled_db("telemetry", "relay-01", "--metric", "fuel_level", "--limit", "3")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["TIME", "SOURCE", "METRIC", "VALUE", "UNIT", "TAG", "BOOT", "SEQ"]
    assert [line.split()[4] for line in lines[1:]] == ["57", "58", "59"]
    # values are right-aligned under their header
    value_end = lines[0].index("VALUE") + len("VALUE")
    assert all(line[value_end - 1] != " " for line in lines[1:])


def test_telemetry_filters_and_since(filled_db):
    since = filled_db("telemetry", "relay-01", "--since", "1h", "--json")
    rows = json.loads(since.stdout)["telemetry"]
    assert len(rows) == 20 and all(r["device_uuid"] == "relay-01" for r in rows)
    assert {"id", "ts", "received_at", "source", "metric", "value", "unit", "tag", "raw", "boot_id", "seq"} <= set(rows[0])
    can = json.loads(filled_db("telemetry", "relay-01", "--source", "can", "--json").stdout)["telemetry"]
    assert {r["metric"] for r in can} == {"RPM"} and can[-1]["tag"] == "0x200"
    everything = json.loads(filled_db("telemetry", "relay-01", "--limit", "1000", "--json").stdout)["telemetry"]
    assert len(everything) == 21
    raw = filled_db("telemetry", "display-01")
    assert "0a1b" in raw.stdout  # raw CAN bytes shown as hex
    none = filled_db("telemetry", "relay-01", "--metric", "oil")
    assert none.exit_code == 0 and none.stdout.strip() == "no telemetry for relay-01 (metric oil)"
    assert filled_db("telemetry", "relay-01", "--since", "yesterday").exit_code == 2


def test_telemetry_follow_yields_rows_as_they_are_stored(filled_db):
    from gateway.commands.telemetry import follow_rows
    from storage import migrations
    from storage import telemetry as telemetry_repo
    from storage.db import close_database, database, open_database, open_reader

    reader = open_reader(str(filled_db.db_path))
    seen = []
    follow = follow_rows(reader, "relay-01", 0, metric="RPM", poll_s=0.01,
                         stop=lambda: len(seen) >= 12)
    for _ in range(10):
        seen.append(next(follow))
    assert [r.value for r in seen] == [2000 + i for i in range(10)]
    open_database(str(filled_db.db_path))
    migrations.migrate()
    try:
        now = time.time()
        telemetry_repo.insert_rows(database, [
            ("relay-01", 8, 1, 0, now, now, "can", "RPM", 3000, "rpm", None, None),
            ("relay-01", 8, 1, 1, now, now, "analog", "fuel_level", 1, "%", None, None),
            ("display-01", 8, 1, 0, now, now, "can", "RPM", 1, "rpm", None, None),
            ("relay-01", 8, 2, 0, now, now, "can", "RPM", 3001, "rpm", None, None),
        ])
    finally:
        close_database()
    seen += [next(follow), next(follow)]
    assert [r.value for r in seen[-2:]] == [3000, 3001]
    reader.close()


def test_db_migrate_creates_and_is_idempotent(cli):
    first = cli("db", "migrate")
    assert first.exit_code == 0, first.output
    assert "applied 1: contract tables and indexes" in first.stdout
    assert cli.db_path.exists()
    again = cli("db", "migrate", "--json")
    doc = json.loads(again.stdout)
    assert doc["applied"] == [] and doc["version"] == doc["version_before"] >= 2


def test_db_prune_older_than(filled_db):
    result = filled_db("db", "prune", "--older-than", "7d")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("deleted 1 telemetry rows taken before ")
    assert json.loads(filled_db("db", "prune", "--older-than", "7d", "--json").stdout)["deleted"] == 0
    count = sqlite3.connect(filled_db.db_path).execute("SELECT COUNT(*) FROM telemetry").fetchone()[0]
    assert count == 21
    missing = filled_db("db", "prune")
    assert missing.exit_code == 2 and "--older-than" in missing.stderr
    assert filled_db("db", "prune", "--older-than", "7 days").exit_code == 2


def test_database_locked_by_another_program_is_one_line_exit_1(filled_db):
    holder = sqlite3.connect(filled_db.db_path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        result = filled_db("command", "send", "relay-01", "ping", env={"AUTOCORE_DB_BUSY_TIMEOUT_MS": "100"})
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert result.exit_code == 1, result.output
    assert result.stderr.strip().splitlines() == [
        f"error: the database {filled_db.db_path} stayed locked by another program for 100 ms; try again"]
