"""`gateway inspect device`: the recent relay commands others sent a 2.2
board (the Config App's UI, a display), rendered from the device's reply."""

from __future__ import annotations

import time

from gateway.commands.inspect import render_device, render_relay_commands

NOW = time.time()
OBSERVED = {"waiting": 1, "recent": [
    {"at": NOW, "channel": 5, "command": "toggle", "state": None, "user": "display",
     "source": "esp32-display-7f3a", "command_id": None, "outcome": "waiting"},
    {"at": NOW - 3, "channel": 3, "command": None, "state": True, "function_type": "toggle", "user": "config_app",
     "source": None, "command_id": None, "outcome": "error", "after_s": 0.05, "error_code": "ERR_002",
     "error_message": "missing command field"},
]}


def test_recent_relay_commands_section():
    text = render_device({"uuid": "esp32-9c1a77b0e2f41d03", "status": "online", "dialect": "fw22",
                          "relay_commands": OBSERVED})
    section = text.split("recent relay commands (sent by others)\n", 1)[1].splitlines()
    assert section[0].split() == ["AT", "CHANNEL", "COMMAND", "FROM", "ANSWER", "AFTER"]
    assert "toggle" in section[1] and "display" in section[1] and "waiting" in section[1]
    assert "state on" in section[2] and "config_app" in section[2]
    assert "error: ERR_002 missing command field" in section[2] and "50ms" in section[2]


def test_no_section_without_relay_commands():
    assert render_relay_commands(None) == ""
    assert render_relay_commands({"waiting": 0, "recent": []}) == ""
    assert "recent relay commands" not in render_device({"uuid": "dev1", "status": "online"})
