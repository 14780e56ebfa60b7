"""The CLI against the real thing: a Mosquitto broker, `bin/gateway run` as
a subprocess, and paho clients playing the devices. One gateway for the
module; every test uses devices of its own."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from click.testing import CliRunner

from gateway.cli import main
from tests.support.broker import Broker, wait_until
from tests.support.gateway import GatewayProcess

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("live")
    broker = Broker(workdir / "broker").start()
    gateway = GatewayProcess(workdir, broker.port, command_poll_ms=20)
    try:
        gateway.start()
        yield gateway, broker
    finally:
        try:
            gateway.stop()
        finally:
            broker.stop()


def run_cli(gateway: GatewayProcess, *args: str):
    env = {"AUTOCORE_DB_PATH": gateway.env["AUTOCORE_DB_PATH"], "AUTOCORE_RUN_DIR": gateway.env["AUTOCORE_RUN_DIR"]}
    return CliRunner().invoke(main, list(args), env=env, prog_name="gateway")


def ask_json(gateway: GatewayProcess, *args: str) -> dict:
    result = run_cli(gateway, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


class FakeDevice:
    """A v1 device: announces, and answers each command as `answer` says
    (a list of Response payloads to send in turn, or nothing)."""

    def __init__(self, port: int, uuid: str, answer=None) -> None:
        self.uuid = uuid
        self.answer = answer
        self.commands: list[dict] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"dev-{uuid}")
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.subscribe(f"autocore/devices/{uuid}/command", qos=2)
        assert subscribed.wait(5), "the device could not subscribe"
        self.publish("announce", {"device_type": "relay_board", "firmware_version": "1.2.0", "boot_id": 3,
                                  "capabilities": ["relay"]})

    def publish(self, kind: str, payload: dict) -> None:
        self.client.publish(f"autocore/devices/{self.uuid}/{kind}", json.dumps(payload), qos=1).wait_for_publish(5)

    def _on_message(self, client, userdata, message) -> None:
        command = json.loads(message.payload)
        self.commands.append(command)
        if self.answer is not None:
            threading.Thread(target=self.answer, args=(self, command), daemon=True).start()

    def respond(self, command: dict, **fields) -> None:
        self.publish("response", {"command_id": command["command_id"], **fields})

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def devices(live):
    made: list[FakeDevice] = []

    def make(uuid: str, answer=None) -> FakeDevice:
        _, broker = live
        device = FakeDevice(broker.port, uuid, answer)
        made.append(device)
        return device

    yield make
    for d in made:
        d.close()


def wait_online(gateway: GatewayProcess, uuid: str) -> dict:
    def online():
        doc = ask_json(gateway, "inspect", "devices")
        return next((d for d in doc["devices"] if d["uuid"] == uuid and d["status"] == "online"), None)

    return wait_until(online, 10, what=f"{uuid} online in the gateway")


def test_inspect_every_view_of_a_live_gateway(live, devices):
    gateway, _ = live
    dev = devices("insp-01")
    wait_online(gateway, "insp-01")
    for seq in (1, 2, 5, 5):  # a gap of two, then a repeat
        dev.publish("telemetry", {"seq": seq, "boot_id": 3, "analog_sensors": {"fuel_level": 50 + seq}})
    dev.publish("relay/status", {"relays": [{"relay_id": 1, "state": True}, {"relay_id": 2, "state": False}]})
    dev.client.publish("autocore/devices/insp-01/telemetry", b"{not json", qos=1).wait_for_publish(5)

    def settled():
        d = ask_json(gateway, "inspect", "device", "insp-01")["device"]
        return d if d["seq_repeats"] == 1 and d["relays"] and d["rejected"] == 1 else None

    d = wait_until(settled, 10, what="the device's messages counted")
    assert d["seq_gaps"] == 2 and d["boot_id"] == 3 and d["device_type"] == "relay_board"
    assert d["relays"] == {"1": True, "2": False}
    assert d["messages"] >= 6 and d["status"] == "online" and d["dialect"] == "v1"
    assert set(d) >= {"uuid", "status", "dialect", "device_type", "boot_id", "encoding", "last_seen", "timeout_s",
                      "offline_in_s", "messages", "rate_per_s", "rejected", "rejections", "seq_gaps",
                      "seq_repeats", "clock_skew", "stale_wills", "relays", "commands", "counters", "actor"}
    assert set(d["commands"]) == {"window", "out", "queued"}

    human = run_cli(gateway, "inspect", "device", "insp-01")
    assert human.exit_code == 0, human.output
    assert "seq gaps     2" in human.stdout and "relays       1 on, 2 off" in human.stdout

    actors = run_cli(gateway, "inspect", "actors")
    assert actors.exit_code == 0, actors.output
    names = [line.split()[0] for line in actors.stdout.splitlines()[1:]]
    assert names[0] == "core" and "store" in names
    core, store = names[1:names.index("store")], names[names.index("store") + 1:]
    assert {"MqttIO", "Router", "DeviceSupervisor", "Scheduler", "Inspector"} <= set(core)
    assert {"DbWriter", "TelemetryBatcher", "CommandFeed", "Retention", "Scheduler"} <= set(store)
    assert "Device[insp-01]" in core
    tree = ask_json(gateway, "inspect", "actors")["actors"]
    device_actor = next(a for a in tree if a["name"] == "Device[insp-01]")
    assert device_actor["parent"] == "DeviceSupervisor" and device_actor["process"] == "core"
    assert all(set(a) == {"name", "process", "parent", "mailbox", "handled", "rate_per_s", "restarts", "summary",
                          "counters", "state", "error"} for a in tree)

    # (a tiny batch waits a little before its commit, its acknowledgements with it)
    stats = wait_until(lambda: (got := ask_json(gateway, "inspect", "stats"))["stats"]["mqtt"]["unacknowledged"] == 0
                       and got, 10, what="every message acknowledged")
    assert stats["version"] == 1
    s = stats["stats"]
    assert s["mqtt"]["connected"] is True and s["mqtt"]["unacknowledged"] == 0
    assert sum(s["rejections"].values()) >= 1
    assert s["writer"]["batches"] >= 1 and set(s["writer"]["commit_ms"]) == {"last", "max", "mean", "histogram"}
    assert sum(s["writer"]["commit_ms"]["histogram"]["counts"]) == s["writer"]["batches"]
    assert sum(s["writer"]["stall_ms"]["histogram"]["counts"]) == s["writer"]["batches"]
    assert s["retention"]["enabled"] is True and s["retention"]["retention_days"] == 30
    assert s["memory"]["core_rss_mb"] > 0 and s["memory"]["store_rss_mb"] > 0
    # the documented keys (docs/cli.md), held to here: the sections are the actors' own state
    assert set(s) >= {"gateway_id", "uptime_s", "mqtt", "router", "rejections", "devices", "channel", "batcher",
                      "writer", "commands", "retention", "memory", "errors"}
    assert set(s["mqtt"]) >= {"connected", "connection", "connected_since", "last_disconnect", "broker", "received",
                              "completed", "unacknowledged", "max_unacknowledged", "accepting", "outgoing_backlog",
                              "max_outgoing", "counters"}
    assert set(s["router"]) >= {"rejections", "rate_limit", "batch_sizes", "counters"}
    assert set(s["devices"]) >= {"actors", "max_actors", "known", "online", "left_down", "counters"}
    assert set(s["batcher"]) >= {"buffered_rows", "buffered_writes", "buffered_tokens", "at_writer", "batch_rows",
                                 "max_age_ms", "largest_batch"}
    assert set(s["writer"]) >= {"batches", "rows_inserted", "rows_repeated", "commit_ms", "db_path", "rss_mb",
                                "gc", "counters"}
    # the store process's collector as AUTOCORE_STORE_GC_GEN0 sets it (default 20,000, not Python's 700)
    assert s["writer"]["gc"]["threshold"][0] == 20000 and len(s["writer"]["gc"]["collections"]) == 3
    assert set(s["commands"]) >= {"poll_ms", "polls", "queries", "cancels_waiting"}
    assert set(s["durability"]) >= {"mode", "interval_ms", "max_mb", "syncs", "waiting", "sync_ms", "wait_ms",
                                    "database", "counters"}
    assert s["durability"]["mode"] == "group commit" and s["durability"]["syncs"] >= 1
    assert "group commit:" in run_cli(gateway, "inspect", "stats").stdout
    assert set(s["retention"]) >= {"enabled", "retention_days", "db_max_mb", "running", "runs", "pruned_age",
                                   "pruned_size", "batches", "batch_ms_max", "busy", "last_run", "next_run_in_s",
                                   "db_used_mb", "over_limit_without_telemetry"}
    assert set(s["memory"]) == {"core_rss_mb", "store_rss_mb"}
    assert set(ask_json(gateway, "inspect", "commands")) == {"version", "commands"}
    table = run_cli(gateway, "inspect", "stats")
    assert table.exit_code == 0 and "connected since" in table.stdout

    watch = run_cli(gateway, "inspect", "devices", "--watch", "0.1", "--count", "2")
    assert watch.exit_code == 0 and watch.stdout.count("insp-01") == 2

    missing = run_cli(gateway, "inspect", "device", "nobody-here")
    assert missing.exit_code == 1
    assert missing.stderr == "error: no device nobody-here in the running gateway\n"

    # the database side agrees
    rows = json.loads(run_cli(gateway, "telemetry", "insp-01", "--metric", "fuel_level", "--json").stdout)
    assert [r["value"] for r in rows["telemetry"]] == [51, 52, 55]


def test_command_send_wait_follows_a_command_to_success(live, devices):
    gateway, _ = live
    released = threading.Event()

    def accept_then_succeed(device: FakeDevice, command: dict) -> None:
        device.respond(command, status="accepted")
        released.wait(20)
        device.respond(command, success=True, result={"relay_id": 1, "state": True}, execution_time=0.1)

    devices("cmd-ok", answer=accept_then_succeed)
    wait_online(gateway, "cmd-ok")
    # the real program, as an operator would run it
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "bin" / "gateway"), "command", "send", "cmd-ok", "relay_control",
         "--param", "relay_id=1", "--param", "state=true", "--wait"],
        env={**{k: v for k, v in os.environ.items() if not k.startswith("AUTOCORE_")},
             "AUTOCORE_DB_PATH": gateway.env["AUTOCORE_DB_PATH"], "AUTOCORE_RUN_DIR": gateway.env["AUTOCORE_RUN_DIR"]},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        def in_flight():
            cmds = ask_json(gateway, "inspect", "commands")["commands"]
            return next((c for c in cmds if c["device"] == "cmd-ok" and c["state"] == "accepted"), None)

        held = wait_until(in_flight, 15, what="the command accepted and in flight")
        assert held["type"] == "relay_control" and held["attempts"] == 1
        assert set(held) == {"id", "device", "state", "type", "attempts", "deadline_in_s", "waiting_for_device", "hold"}
        human = run_cli(gateway, "inspect", "commands")
        assert any(line.split()[1:3] == ["cmd-ok", "accepted"] for line in human.stdout.splitlines())
        # --wait has seen it accepted, and goes on waiting: accepted is not final
        wait_until(lambda: any(" accepted " in line for line in lines), 10, what="--wait to report accepted")
        assert proc.poll() is None
        released.set()
        proc.wait(20)
        reader.join(5)
        out, err = "".join(lines), proc.stderr.read()
    finally:
        released.set()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, (out, err)
    states = [line.split()[4] for line in out.splitlines()]
    assert states[0] == "pending" and states[-1] == "succeeded"
    assert "accepted" in states, out
    assert 'result {"relay_id":1,"state":true}' in out.splitlines()[-1]
    assert err == ""
    cmd = ask_json(gateway, "command", "list", "--device", "cmd-ok")["commands"][0]
    assert cmd["status"] == "succeeded" and cmd["result"] == {"relay_id": 1, "state": True}


def test_command_send_wait_exits_1_when_the_command_fails(live, devices):
    gateway, _ = live
    devices("cmd-bad", answer=lambda d, c: d.respond(c, success=False, error_message="relay 9 does not exist"))
    wait_online(gateway, "cmd-bad")
    result = run_cli(gateway, "command", "send", "cmd-bad", "relay_control", "--param", "relay_id=9", "--wait")
    assert result.exit_code == 1, result.output
    last = result.stdout.splitlines()[-1]
    assert " failed after " in last and last.endswith(": relay 9 does not exist")
    result = run_cli(gateway, "command", "send", "cmd-bad", "x", "--wait", "--json")
    assert result.exit_code == 1 and json.loads(result.stdout)["command"]["status"] == "failed"


def test_command_send_wait_exits_1_on_timeout(live, devices):
    gateway, _ = live
    silent = devices("cmd-silent")
    wait_online(gateway, "cmd-silent")
    result = run_cli(gateway, "command", "send", "cmd-silent", "ping", "--timeout", "0.2", "--max-attempts", "2",
                     "--wait")
    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()
    assert "(attempt 2 of 2)" in result.stdout
    assert lines[-1].split()[4] == "timeout"
    assert len(silent.commands) == 2 and silent.commands[0]["command_id"] == silent.commands[1]["command_id"]


def test_a_v1_device_refuses_2_2_messages_until_forgotten_or_set_fw22(live, devices):
    """`gateway devices forget` and `gateway devices dialect` against the
    running gateway: the refusal is counted where `inspect device` shows it,
    nothing of the refused message is stored, and each command changes the
    running core at once, not only the database."""
    gateway, _ = live
    dev = devices("dlc-01")  # announces with boot_id 3
    wait_online(gateway, "dlc-01")
    dev.publish("telemetry", {"seq": 1, "boot_id": 3, "analog_sensors": {"fuel_level": 40}})
    state_22 = {"protocol_version": "2.2.0", "board_id": 1, "channels": {"1": True}}
    dev.publish("relays/state", state_22)

    def refused():
        d = ask_json(gateway, "inspect", "device", "dlc-01")["device"]
        return d if d["dialect_conflict"] == 1 else None

    d = wait_until(refused, 10, what="the 2.2 message refused")
    assert d["dialect"] == "v1" and d["dialect_locked"] is True and d["relays"] == {}
    assert d["rejections"] == {"dialect_conflict": 1} and d["rejected"] == 1
    assert "dialect_conflict" in run_cli(gateway, "inspect", "device", "dlc-01").stdout
    # The telemetry before it is stored (batches wait a little when tiny);
    # the relay state never is: the Router refused it before any batch.
    stored = wait_until(lambda: ask_json(gateway, "telemetry", "dlc-01")["telemetry"], 10, what="the telemetry row")
    assert [r["source"] for r in stored] == ["analog"]  # the relay state was not stored

    forgot = ask_json(gateway, "devices", "forget", "dlc-01")
    assert forgot["registry"] is True and forgot["gateway"] == "running" and forgot["gateway_knew"] is True
    assert forgot["was"]["protocol"] == "v1" and forgot["was"]["boot_id"] == 3
    assert "dlc-01" not in [r["uuid"] for r in ask_json(gateway, "devices")["devices"]]
    d = ask_json(gateway, "inspect", "device", "dlc-01")["device"]
    assert d["status"] is None and d["boot_id"] is None and d["dialect_locked"] is False

    # its next message registers it afresh, in the dialect it speaks
    dev.publish("relays/state", state_22)

    def registered():
        return next((r for r in ask_json(gateway, "devices")["devices"] if r["uuid"] == "dlc-01"), None)

    row = wait_until(registered, 10, what="dlc-01 registered afresh")
    assert row["protocol"] == "fw22" and row["status"] == "online"
    wait_until(lambda: len(ask_json(gateway, "telemetry", "dlc-01")["telemetry"]) == 2, 10, what="the relay state stored")
    conn = sqlite3.connect(f"file:{gateway.db_path}?mode=ro", uri=True)
    try:
        history = [e for (e,) in conn.execute("SELECT event FROM device_events WHERE device_uuid = 'dlc-01' ORDER BY id")]
    finally:
        conn.close()
    # its history is kept: one refusal's event, the operator's forget, then the new registration
    assert history[:2] == ["announce", "online"] and history.count("dialect_conflict") == 1
    assert history.index("dialect_conflict") < history.index("forgotten") < len(history) - 1

    # back to v1 by the operator: no boot_id yet, so nothing is locked
    told = ask_json(gateway, "devices", "dialect", "dlc-01", "v1")
    assert told["dialect"] == "v1" and told["was"] == "fw22" and told["dialect_locked"] is False
    assert told["gateway"] == "running" and told["gateway_knew"] is True
    assert ask_json(gateway, "inspect", "device", "dlc-01")["device"]["dialect"] == "v1"
    text = run_cli(gateway, "devices", "dialect", "dlc-01", "v1")
    assert text.exit_code == 0 and "no boot_id yet" in text.stdout and "running gateway too" in text.stdout
