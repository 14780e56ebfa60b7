"""The operator subcommands of `gateway` (docs/cli.md).

`inspect` asks the running gateway through its control socket
(gateway.control); `devices`, `command`, `telemetry`, `db`, `config` and `can`
work on the database and the settings and need no running gateway.
gateway.cli registers them on `main` with `register`; they take what they
share (settings flags, `--json`, exit codes) from `common`, never from
gateway.cli, so no import goes both ways.
"""

from __future__ import annotations

import click


def register(main: click.Group) -> None:
    from gateway.commands.can import can
    from gateway.commands.command import command
    from gateway.commands.config import config
    from gateway.commands.db import db
    from gateway.commands.devices import devices
    from gateway.commands.inspect import inspect
    from gateway.commands.telemetry import telemetry

    for cmd in (inspect, devices, command, telemetry, db, config, can):
        main.add_command(cmd)
    # The fleet side of the uplink (issue 14).
    from gateway.fleet import fleet_command, fleet_ingest

    main.add_command(fleet_ingest)
    main.add_command(fleet_command)
