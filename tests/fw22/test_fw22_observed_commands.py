"""Relay commands others publish on a 2.2 board's `relays/set` (the Config
App's UI, a display), end to end: a real Mosquitto, the gateway as a
subprocess, the SQLite file read back. They are recorded as `relay_command`
events with the board's answer as `relay_command_result`, never acted on,
and the gateway's own relays/set never comes back as one (No Local)."""

from __future__ import annotations

import json
import time

import orjson
import paho.mqtt.client as mqtt
import pytest
from click.testing import CliRunner

from gateway.cli import main
from simulator import Fleet, FleetConfig, Fw22Options
from storage.commands import get_command, insert_command
from tests.fw22.helpers import query, running_gateway
from tests.support.broker import wait_until

GATEWAY_ID = "gw-observer"
FAKE_RELAY = "esp32-0bse7ved00000001"


@pytest.fixture
def gateway(broker, tmp_path):
    with running_gateway(broker, tmp_path, gateway_id=GATEWAY_ID, fw22_periods="esp32_relay=30",
                         command_timeout_s=2, command_poll_ms=50) as gw:
        yield gw


def events(gw, uuid, event):
    rows = query(gw, "SELECT detail FROM device_events WHERE device_uuid = ? AND event = ? ORDER BY id", (uuid, event))
    return [json.loads(detail) for (detail,) in rows]


def status_of(gw, uuid):
    rows = query(gw, "SELECT status, protocol FROM gateway_devices WHERE uuid = ?", (uuid,))
    return rows[0] if rows else None


class Client:
    """A plain MQTT client: the Config App's UI, a display, or a relay board played by the test."""

    def __init__(self, port: int, name: str) -> None:
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{name}-{time.monotonic_ns()}")
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def publish(self, topic: str, body: dict, retain: bool = False) -> None:
        self.client.publish(topic, orjson.dumps(body), qos=1, retain=retain).wait_for_publish(5)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def inspect_device(gw, uuid, *flags):
    env = {"AUTOCORE_DB_PATH": gw.env["AUTOCORE_DB_PATH"], "AUTOCORE_RUN_DIR": gw.env["AUTOCORE_RUN_DIR"]}
    result = CliRunner().invoke(main, ["inspect", "device", uuid, *flags], env=env, prog_name="gateway")
    assert result.exit_code == 0, result.output
    return result.stdout


def test_config_app_command_and_the_boards_state_change_are_recorded(broker, gateway):
    board = Client(broker.port, "relay")
    config_app = Client(broker.port, "config-app")
    try:
        board.publish(f"autocore/devices/{FAKE_RELAY}/status",
                      {"protocol_version": "2.2.0", "uuid": FAKE_RELAY, "status": "online", "type": "esp32_relay",
                       "firmware_version": "2.0.0", "channels": 4}, retain=True)
        board.publish(f"autocore/devices/{FAKE_RELAY}/relays/state",
                      {"protocol_version": "2.2.0", "uuid": FAKE_RELAY, "board_id": 1,
                       "channels": {"1": False, "2": False, "3": False, "4": False}})
        wait_until(lambda: status_of(gateway, FAKE_RELAY) == ("online", "fw22"), 10, what="relay online")
        wait_until(lambda: inspect_json(gateway).get("relays", {}).get("3") is False, 10,
                   what="the gateway knowing channel 3 is off")

        config_app.publish(f"autocore/devices/{FAKE_RELAY}/relays/set",
                           {"protocol_version": "2.2.0", "channel": 3, "state": True, "function_type": "toggle",
                            "user": "config_app", "timestamp": "2025-01-08T10:30:00Z"})
        observed = wait_until(lambda: events(gateway, FAKE_RELAY, "relay_command"), 10, what="relay_command event")
        assert observed == [{"channel": 3, "command": None, "state": True, "function_type": "toggle",
                             "user": "config_app", "source": None, "command_id": None}]

        board.publish(f"autocore/devices/{FAKE_RELAY}/relays/state",
                      {"protocol_version": "2.2.0", "uuid": FAKE_RELAY, "board_id": 1,
                       "channels": {"1": False, "2": False, "3": True, "4": False}})
        (result,) = wait_until(lambda: events(gateway, FAKE_RELAY, "relay_command_result"), 10,
                               what="relay_command_result event")
        assert result["outcome"] == "applied" and result["channel"] == 3 and result["state"] is True
        assert result["observed_command"] == observed[0] and result["confirmed_by"] == "relays/state"

        # Visible in `gateway inspect device`.
        shown = inspect_json(gateway)["relay_commands"]
        assert shown["waiting"] == 0
        assert [(c["channel"], c["user"], c["outcome"]) for c in shown["recent"]] == [(3, "config_app", "applied")]
        human = inspect_device(gateway, FAKE_RELAY)
        assert "recent relay commands" in human and "config_app" in human and "applied" in human
        # Never acted on: the gateway sent no command for it.
        assert query(gateway, "SELECT COUNT(*) FROM commands")[0][0] == 0
    finally:
        board.close()
        config_app.close()


def inspect_json(gw):
    return json.loads(inspect_device(gw, FAKE_RELAY, "--json"))["device"]


def test_answers_of_the_simulated_firmware_and_no_echo_of_the_gateways_own(broker, gateway):
    config = FleetConfig(devices={"fw22_relay": 1, "fw22_relay_switching": 1}, port=broker.port, duration=60, seed=7,
                         fw22=Fw22Options(state_interval=30.0))
    fleet = Fleet(config)
    uuids = {d.kind: d.uuid for d in fleet.devices}
    today, switching = uuids["fw22_relay"], uuids["fw22_relay_switching"]
    display = Client(broker.port, "display")
    config_app = Client(broker.port, "config-app")
    fleet.start()
    try:
        for uuid in (today, switching):
            wait_until(lambda u=uuid: status_of(gateway, u) == ("online", "fw22"), 10, what=f"{uuid} online")

        # The gateway's own relay_control to a 2.2 board: sent on relays/set, confirmed by relays/state.
        own = insert_command(switching, "relay_control", {"channel": 2, "command": "on"}, now=time.time(), ttl_s=60)
        row = wait_until(lambda: (r := get_command(own)) is not None and r.is_final and r, 10, what="own command")
        assert row.status == "succeeded"

        # A display's command to the same board, after it: the switching firmware applies it.
        display.publish(f"autocore/devices/{switching}/relays/set",
                        {"protocol_version": "2.2.0", "channel": 5, "command": "on", "source": "esp32-display-7f3a",
                         "user": "display"})
        (result,) = wait_until(lambda: events(gateway, switching, "relay_command_result"), 10,
                               what="the display's command answered")
        assert result["outcome"] == "applied" and result["channel"] == 5 and result["state"] is True
        # Only the display's command was recorded: the gateway's own never came back to it.
        commands = events(gateway, switching, "relay_command")
        assert [(c["channel"], c["user"], c["source"]) for c in commands] == [(5, "display", "esp32-display-7f3a")]
        # ... not even to be ignored there (the broker kept it away: No Local).
        counters = json.loads(inspect_device(gateway, switching, "--json"))["device"]["counters"]
        assert counters.get("relay_commands_own", 0) == 0 and counters["relay_commands_observed"] == 1

        # The Config App's UI to today's firmware: refused with ERR_002 (no `command`), recorded as the answer.
        config_app.publish(f"autocore/devices/{today}/relays/set",
                           {"protocol_version": "2.2.0", "channel": 3, "state": True, "function_type": "toggle",
                            "user": "config_app", "timestamp": "2025-01-08T10:30:00Z"})
        (result,) = wait_until(lambda: events(gateway, today, "relay_command_result"), 10,
                               what="the Config App's command answered")
        assert result["outcome"] == "error" and result["error_code"] == "ERR_002"
        assert result["observed_command"]["user"] == "config_app"
        assert len(events(gateway, today, "error")) == 1  # the error itself stays an `error` event

        # A display command today's firmware accepts but does not switch: no answer within the command timeout.
        display.publish(f"autocore/devices/{today}/relays/set",
                        {"protocol_version": "2.2.0", "channel": 4, "command": "toggle", "source": "esp32-display-7f3a",
                         "user": "display"})
        results = wait_until(lambda: (r := events(gateway, today, "relay_command_result")) and len(r) == 2 and r, 10,
                             what="the unanswered command timing out")
        assert results[1]["outcome"] == "no_answer" and results[1]["channel"] == 4
        assert 1.5 <= results[1]["after_s"] <= 4.0  # the command timeout (2 s), by the Scheduler's deadline

        # Nothing of this touched the commands table beyond the gateway's own row.
        assert [r for (r,) in query(gateway, "SELECT id FROM commands")] == [own]
    finally:
        display.close()
        config_app.close()
        fleet.stop()
        fleet.join(10)
