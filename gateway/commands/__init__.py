"""The operator subcommands of `gateway` (docs/cli.md).

`inspect` asks the running gateway through its control socket
(gateway.control); `devices`, `command`, `telemetry`, `db`, `config` and `can`
work on the database and the settings and need no running gateway.
gateway.cli registers them on `main` with `register`.
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


# A subcommand module imported on its own (a test, a tool) needs gateway.cli
# (setting_options), which registers the subcommands: load it first, so the
# modules are never half imported when it does.
import gateway.cli  # noqa: E402,F401
