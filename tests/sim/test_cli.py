"""`gateway simulate` as a command."""

from __future__ import annotations

import json

from click.testing import CliRunner

from gateway.cli import main
from gateway.simulate import format_progress

from tests.support.broker import free_port


def invoke(*args: str):
    return CliRunner().invoke(main, ["simulate", *args])


def test_help_lists_the_options():
    result = invoke("--help")
    assert result.exit_code == 0
    for option in ("--devices", "--duration", "--connections", "--msgpack", "--command-latency", "--failure-rate",
                   "--reboot-every", "--flap-every", "--late-will", "--fw22-switching", "--fw22-state-interval",
                   "--mqtt-host", "--mqtt-username", "--topic-prefix", "--telemetry-qos"):
        assert option in result.output


def test_bad_options_are_usage_errors():
    for args, words in [
        (["--devices", "toaster=3"], "unknown device kind"),
        (["--mqtt-host", "192.0.2.1"], "allow-remote"),
        (["--command-latency", "0.5-0.1"], "LOW <= HIGH"),
        (["--late-will", "--connections", "shared"], "per-device"),
        (["--duration", "0"], "duration"),
    ]:
        result = invoke(*args)
        assert result.exit_code == 2, (args, result.output)
        assert words in result.output, (args, result.output)


def test_a_short_run_against_a_broker(broker, tmp_path):
    summary = tmp_path / "summary.json"
    result = invoke("--mqtt-port", str(broker.port), "--devices", "sensor_board=2,fw22_display=1,fw22_relay=1",
                    "--duration", "1.2", "--fw22-switching", "--no-progress", "--summary-json", str(summary))
    assert result.exit_code == 0, result.output
    assert "simulating 4 devices" in result.output and "done:" in result.output
    figures = json.loads(summary.read_text())
    assert figures["connects"] == 4 and figures["published"] >= 8 and figures["devices"] == 4


def test_without_a_broker_the_command_fails():
    result = invoke("--mqtt-port", str(free_port()), "--devices", "mobile=1", "--duration", "0.5", "--no-progress")
    assert result.exit_code == 1
    assert "no device could connect" in result.output


def test_the_progress_line_names_what_matters():
    line = format_progress({"elapsed": 12.2, "duration": 60, "online": 7, "devices": 7, "published": 1234,
                            "rate": 101.2, "telemetry": 1000, "commands": 3, "duplicates": 1, "reboots": 2,
                            "heartbeats": 8, "relays_set": 1, "publish_refused.out of memory": 4})
    assert line.startswith("sim 12/60s  7/7 online  1,234 sent (101/s)")
    assert "3 commands (1 repeats)" in line and "2 reboots" in line and "4 publishes refused" in line
