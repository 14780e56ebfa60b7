"""`gateway inspect` against a stand-in control socket (rendering, --json,
--watch) and against none (the not-running line). The real gateway is in
test_live.py."""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgpack
import pytest

ROOT = Path(__file__).resolve().parents[2]
VIEWS = [["actors"], ["devices"], ["device", "relay-01"], ["commands"], ["stats"]]

NOW = time.time()
DEVICE = {
    "uuid": "relay-01", "status": "online", "dialect": "v1", "device_type": "relay_board", "boot_id": 7,
    "encoding": "json", "last_seen": NOW - 2, "timeout_s": 15.0, "offline_in_s": 13.0, "messages": 1200,
    "rate_per_s": 12.5, "rejected": 3, "rejections": {"bad_json": 2, "too_large": 1}, "seq_gaps": 4,
    "seq_repeats": 1, "clock_skew": 0, "stale_wills": 0, "relays": {"2": False, "1": True, "10": True},
    "commands": {"window": 1, "out": [{"id": 41, "device": "relay-01", "state": "sent", "type": "relay_control",
                                        "attempts": 2, "deadline_in_s": 3.2, "waiting_for_device": False}],
                 "queued": [42, 43]},
    "counters": {"messages": 1200, "seq_gaps": 4}, "actor": {"mailbox": 0, "handled": 900, "restarts": 1},
}
REPLIES = {
    "actors": {"version": 1, "actors": [
        {"name": "MqttIO", "process": "core", "parent": None, "mailbox": 0, "handled": 5000, "rate_per_s": 120.5,
         "restarts": 0, "summary": "connected, 0 unacknowledged, backlog 0", "counters": {}, "state": {}, "error": None},
        {"name": "DeviceSupervisor", "process": "core", "parent": None, "mailbox": 1, "handled": 20,
         "rate_per_s": 0.1, "restarts": 0, "summary": "1 actors, 1 online, 1 known", "counters": {}, "state": {},
         "error": None},
        {"name": "DbWriter", "process": "store", "parent": None, "mailbox": 12, "handled": 300, "rate_per_s": 20.0,
         "restarts": 0, "summary": "300 batches, last commit 1.5 ms", "counters": {}, "state": {}, "error": None},
        {"name": "Retention", "process": "store", "parent": None, "mailbox": None, "handled": None,
         "rate_per_s": None, "restarts": 0, "summary": None, "counters": {}, "state": {},
         "error": "no answer: Timeout"},
        {"name": "Device[relay-01]", "process": "core", "parent": "DeviceSupervisor", "mailbox": 0, "handled": 900,
         "rate_per_s": 12.5, "restarts": 1, "summary": "online v1 1 out 2 queued", "counters": {}, "state": {},
         "error": None},
    ]},
    "devices": {"version": 1, "devices": [DEVICE]},
    "device": {"version": 1, "device": DEVICE},
    "commands": {"version": 1, "commands": [
        {"id": 41, "device": "relay-01", "state": "sent", "type": "relay_control", "attempts": 2,
         "deadline_in_s": 3.2, "waiting_for_device": False},
        {"id": 42, "device": "relay-01", "state": "queued", "type": None, "attempts": None, "deadline_in_s": None,
         "waiting_for_device": False},
    ]},
    "stats": {"version": 1, "stats": {
        "gateway_id": "autocore-gateway", "uptime_s": 3725.0,
        "mqtt": {"connected": True, "connection": 2, "connected_since": NOW - 60, "broker": "127.0.0.1:1883",
                 "received": 10, "completed": 9, "unacknowledged": 1, "max_unacknowledged": 50000,
                 "accepting": True, "outgoing_backlog": {"commands": 0, "other": 2}, "counters": {"acked": 9}},
        "router": {"rejections": {"bad_json": 2}, "batch_sizes": {"1": 4}, "counters": {"messages": 10}},
        "rejections": {"bad_json": 2},
        "devices": {"actors": 1, "max_actors": 10000, "known": 3, "online": 1},
        "channel": {"frames_sent": 5, "frames_received": 6},
        "batcher": {"buffered_rows": 0, "at_writer": 0, "largest_batch": 40, "batch_rows": 2000, "max_age_ms": 50},
        "writer": {"batches": 8, "rows_inserted": 80, "rows_repeated": 2,
                   "commit_ms": {"last": 1.5, "max": 9.25, "mean": 2.0,
                                 "histogram": {"le": [1, 2, 5, 10], "counts": [50, 40, 9, 1, 0]}}, "counters": {}},
        "commands": {"polls": 100, "queries": 3},
        "retention": {"enabled": True, "retention_days": 30.0, "db_max_mb": 512.0, "running": False, "runs": 2,
                      "pruned_age": 100, "pruned_size": 5, "next_run_in_s": 42.0, "db_used_mb": 12.5},
        "memory": {"core_rss_mb": 30.5, "store_rss_mb": 25.0},
        "errors": [],
    }},
}


class FakeGateway:
    """Answers on a unix socket as the Inspector does, from REPLIES."""

    def __init__(self, path: Path, replies: dict = REPLIES, serve: int | None = None) -> None:
        self.path = path
        self.replies = replies
        self.requests: list[dict] = []
        self.serve_left = serve
        path.parent.mkdir(parents=True, exist_ok=True)
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(8)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn:
                size = struct.unpack(">I", conn.recv(4))[0]
                request = msgpack.unpackb(conn.recv(size), raw=False)
                self.requests.append(request)
                what = request.get("what")
                if what == "device" and request.get("uuid") != "relay-01":
                    reply = {"error": f"no device {request.get('uuid')} in the running gateway"}
                else:
                    reply = self.replies.get(what, {"error": "unknown"})
                data = msgpack.packb(reply, use_bin_type=True)
                conn.sendall(struct.pack(">I", len(data)) + data)
            if self.serve_left is not None:
                self.serve_left -= 1
                if self.serve_left == 0:
                    self.close()
                    return

    def close(self) -> None:
        self.server.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


@pytest.fixture
def fake(cli):
    gw = FakeGateway(cli.socket_path)
    yield gw
    gw.close()


# -- no gateway --------------------------------------------------------------


@pytest.mark.parametrize("view", VIEWS, ids=lambda v: v[0])
@pytest.mark.parametrize("extra", [[], ["--json"], ["--watch", "0.1"]], ids=["table", "json", "watch"])
def test_no_gateway_is_one_line_and_exit_1(cli, view, extra):
    result = cli("inspect", *view, *extra)
    assert result.exit_code == 1
    assert result.stderr == f"gateway is not running: no socket at {cli.socket_path}\n"
    assert result.stdout == ""


def test_the_line_names_the_default_path_as_configured(tmp_path):
    """The real program, from a directory without a gateway: the default run dir."""
    proc = subprocess.run([sys.executable, str(ROOT / "bin" / "gateway"), "inspect", "actors"], cwd=tmp_path,
                          capture_output=True, text=True, env={k: v for k, v in os.environ.items()
                                                                if not k.startswith("AUTOCORE_")}, timeout=30)
    assert proc.returncode == 1
    assert proc.stderr == "gateway is not running: no socket at var/run/gateway.sock\n"
    assert proc.stdout == ""


def test_a_socket_left_by_a_killed_gateway(cli):
    cli.socket_path.parent.mkdir(parents=True)
    left = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    left.bind(str(cli.socket_path))
    left.close()  # the file stays, nobody listens
    result = cli("inspect", "stats")
    assert result.exit_code == 1
    assert result.stderr == (f"gateway is not running: nothing listens on {cli.socket_path} "
                             "(left by a gateway that was killed)\n")


# -- rendering ---------------------------------------------------------------


def test_actors_tree(cli, fake):
    result = cli("inspect", "actors")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["ACTOR", "MAILBOX", "HANDLED", "RATE/S", "RESTARTS", "STATE"]
    names = [line.split()[0] for line in lines[1:]]
    assert names == ["core", "MqttIO", "DeviceSupervisor", "Device[relay-01]", "store", "DbWriter", "Retention"]
    assert lines[1] == "core process"
    assert lines[4].startswith("    Device[relay-01]")  # under its supervisor
    assert lines[2].startswith("  MqttIO")
    assert "no answer: Timeout" in lines[7]
    # numeric columns right-aligned: their last characters line up with the header's
    end = lines[0].index("HANDLED") + len("HANDLED")
    assert [line[end - 4:end] for line in (lines[2], lines[3], lines[6])] == ["5000", "  20", " 300"]
    assert fake.requests == [{"what": "actors"}]


def test_devices_table(cli, fake):
    result = cli("inspect", "devices")
    assert result.exit_code == 0, result.output
    header, row = result.stdout.splitlines()
    assert header.split() == ["UUID", "NAME", "STATUS", "DIALECT", "TYPE", "BOOT", "LAST", "SEEN", "MSGS", "RATE/S",
                              "REJECTED", "GAPS", "REPEATS", "OUT", "QUEUED"]
    cells = row.split()
    # No database here, so no name the owner gave it.
    assert cells[:6] + cells[7:] == ["relay-01", "-", "online", "v1", "relay_board", "7", "ago", "1200", "12.5", "3",
                                     "4", "1", "1", "2"]
    assert cells[6].endswith("s")  # how long ago, e.g. 2.1s


def test_device_detail(cli, fake):
    result = cli("inspect", "device", "relay-01")
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert fake.requests == [{"what": "device", "uuid": "relay-01"}]
    for expected in ("status       online (offline in 13s without a message)", "messages     1200 (12.5/s)",
                     "rejected     3 (bad_json 2, too_large 1)", "seq gaps     4", "relays       1 on, 2 off, 10 on",
                     "commands     window 1, 1 out, 2 queued (queued: 42, 43)",
                     "actor        mailbox 0, handled 900, restarts 1"):
        assert expected in text
    assert text.splitlines()[-2].split() == ["ID", "DEVICE", "STATE", "TYPE", "ATTEMPTS", "DEADLINE", "IN", "NOTE"]
    assert text.splitlines()[-1].split() == ["41", "relay-01", "sent", "relay_control", "2", "3.2s"]


def test_unknown_device_is_an_error_line_and_exit_1(cli, fake):
    result = cli("inspect", "device", "ghost")
    assert result.exit_code == 1
    assert result.stderr == "error: no device ghost in the running gateway\n"


def test_commands_and_stats(cli, fake):
    commands = cli("inspect", "commands").stdout.splitlines()
    assert [line.split()[:3] for line in commands[1:]] == [["41", "relay-01", "sent"], ["42", "relay-01", "queued"]]
    stats = cli("inspect", "stats")
    assert stats.exit_code == 0, stats.output
    for expected in ("gateway    autocore-gateway, up 1h02m",
                     "unacknowledged    1 of at most 50000",
                     "rejections   bad_json 2",
                     "commit        last 1.5 ms, mean 2 ms, p99 <= 5 ms, max 9.25 ms",
                     "retention  30 days, at most 512 MB; 105 rows pruned in 2 runs; database uses 12.5 MB; "
                     "next run in 42s",
                     "memory     core 30.5 MB, store 25 MB"):
        assert expected in stats.stdout


@pytest.mark.parametrize("view", VIEWS, ids=lambda v: v[0])
def test_json_is_the_reply_as_it_is(cli, fake, view):
    result = cli("inspect", *view, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == REPLIES[view[0]]


def test_watch_refreshes_until_count(cli, fake):
    started = time.monotonic()
    result = cli("inspect", "devices", "--watch", "0.1", "--count", "3")
    assert result.exit_code == 0, result.output
    assert result.stdout.count("gateway inspect devices  every 0.1s") == 3
    assert result.stdout.count("relay-01") == 3
    assert len(fake.requests) == 3
    assert time.monotonic() - started >= 0.2
    lines = cli("inspect", "stats", "--json", "--watch", "0.1", "--count", "2").stdout.splitlines()
    assert [json.loads(line) for line in lines] == [REPLIES["stats"]] * 2


def test_watch_default_interval_and_uuid_first(cli, fake):
    from gateway.commands.inspect import DEFAULT_WATCH_S

    result = cli("inspect", "device", "relay-01", "--watch", "--count", "1")
    assert result.exit_code == 0, result.output
    assert f"gateway inspect device relay-01  every {DEFAULT_WATCH_S:g}s" in result.stdout
    assert cli("inspect", "stats", "--watch", "0").exit_code == 2


def test_watch_outlives_a_gateway_restart(cli):
    gw = FakeGateway(cli.socket_path, serve=1)
    try:
        result = cli("inspect", "commands", "--watch", "0.1", "--count", "3")
    finally:
        gw.close()
    assert result.exit_code == 0, result.output
    assert result.stdout.count("relay_control") == 1
    assert result.stdout.count(f"gateway is not running: no socket at {cli.socket_path}") == 2


def test_device_view_shows_a_firmware_22_hold_with_its_remaining_time():
    from gateway.commands.inspect import render_device

    text = render_device({"uuid": "esp32-9c1a77b0e2f41d03", "status": "online", "dialect": "fw22", "encoding": "json",
                          "relays": {"3": True, "1": False},
                          "commands": {"window": 1, "queued": [], "out": [
                              {"id": 7, "device": "esp32-9c1a77b0e2f41d03", "state": "sent", "type": "relay_control",
                               "attempts": 1, "deadline_in_s": 0.2, "waiting_for_device": False,
                               "hold": {"channel": 3, "remaining_s": 1.25, "heartbeats": 4}}]}})
    lines = dict(line.split(None, 1) for line in text.splitlines()[:17] if line.strip())
    assert lines["dialect"] == "fw22, json"
    assert lines["relays"] == "1 off, 3 on"
    assert lines["held"] == "channel 3 for 1.2s more (command 7, 4 heartbeats)"


def test_the_store_line_names_a_stall_and_what_waits():
    from gateway.commands.inspect import _store_state

    stalled = {"state": "database_unreachable", "stalled_for_s": 12.0, "waiting_batches": 3, "waiting_rows": 90,
               "retry_in_s": 4.0, "disk_free_mb": 500.0}
    line = _store_state(stalled, {})
    assert line.startswith("DATABASE UNREACHABLE for ") and "3 batches (90 rows) waiting, unacknowledged" in line
    assert _store_state({**stalled, "state": "disk_full"}, {}).startswith("DISK FULL for ")
    assert _store_state({"state": "ok", "disk_free_mb": 500.0}, {}).startswith("ok, disk free")
