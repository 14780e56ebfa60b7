"""The operator subcommands of `gateway` (docs/cli.md).

`inspect` asks the running gateway through its control socket
(gateway.control); `devices`, `command`, `telemetry`, `db`, `config` and `can`
work on the database and the settings and need no running gateway.
gateway.cli's `main` imports each when it is used (LAZY_COMMANDS); they
take what they share (settings flags, `--json`, exit codes) from `common`,
never from gateway.cli, so no import goes both ways.
"""

from __future__ import annotations

# name -> "module:attribute", imported when the command is used (gateway.cli's LazyGroup).
LAZY_COMMANDS = {
    "inspect": "gateway.commands.inspect:inspect",
    "devices": "gateway.commands.devices:devices",
    "command": "gateway.commands.command:command",
    "telemetry": "gateway.commands.telemetry:telemetry",
    "db": "gateway.commands.db:db",
    "config": "gateway.commands.config:config",
    "can": "gateway.commands.can:can",
    # the fleet side of the uplink (issue 14)
    "fleet-ingest": "gateway.fleet:fleet_ingest",
    "fleet-command": "gateway.fleet:fleet_command",
    "simulate": "gateway.simulate:simulate",
}
