"""The `gateway` command line (click).

Every setting is a flag of the same name as its variable
(`AUTOCORE_MQTT_PORT` <=> `--mqtt-port`), on every command that needs
settings; flags beat the environment, which beats the `--config` file.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

import click

from gateway.commands import LAZY_COMMANDS
from gateway.commands.common import EXIT_RUNTIME, EXIT_USAGE, setting_options
from gateway.settings import LoadedSettings


class LazyGroup(click.Group):
    """A group whose subcommands are imported when one is used (click's
    documented lazy loading): `gateway run`, which runit starts and
    restarts, does not pay for importing the operator commands and the
    simulator."""

    def __init__(self, *args, lazy: dict[str, str], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy and cmd_name not in self.commands:
            module, _, attribute = self.lazy[cmd_name].partition(":")
            self.add_command(getattr(importlib.import_module(module), attribute), cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, lazy=LAZY_COMMANDS,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="autocore-gateway", prog_name="gateway", message="%(prog)s %(version)s")
def main() -> None:
    """AutoCore Gateway: the MQTT hub of a vehicle.

    Exit codes: 0 done, 1 a runtime failure (no gateway running, database
    locked, a command that did not succeed), 2 a usage error (bad option or
    setting). Shell completion: `_GATEWAY_COMPLETE=bash_source gateway`
    (or zsh_source, fish_source) prints the script; see docs/cli.md.

    \b
    Examples:
      gateway run                      # the gateway in the foreground (what runit calls)
      gateway run --mqtt-port 1884     # the same against another broker port
      gateway inspect devices --watch  # what the running gateway knows, refreshed
      gateway command send esp32-relay-01 relay_control --param relay_id=1 --param state=true --wait
      gateway telemetry esp32-relay-01 --since 10m
      gateway config show              # every setting and where its value came from
    """


@main.command()
@setting_options
def run(loaded: LoadedSettings) -> None:
    """Run the gateway in the foreground until SIGTERM or Ctrl-C.

    \b
    Example:
      AUTOCORE_DB_PATH=/data/autocore.db gateway run --mqtt-host 127.0.0.1
    """
    from actors.logs import setup_logging
    from gateway.launcher import exit_without_teardown
    from gateway.launcher import run as launch
    from storage.imports import import_peewee_for

    s = loaded.settings
    import_peewee_for(s.database)
    from storage.db import DatabaseUnreachable, check_reachable

    setup_logging(s.log_level, s.log_format, "launcher")
    if s.share_group:
        from storage.url import POSTGRESQL, parse_location

        if parse_location(s.database).engine != POSTGRESQL:
            # Several instances share one database: SQLite is one vehicle's.
            click.echo(f"error: AUTOCORE_SHARE_GROUP={s.share_group} needs a PostgreSQL AUTOCORE_DB_URL (several "
                       f"instances share one database), got {s.database_shown}", err=True)
            sys.exit(EXIT_USAGE)  # a bad setting: runit backs off on 2
        if s.uplink_url:
            # The uplink is one vehicle's: its cursor assumes ids that commit
            # in order, which several writers on PostgreSQL do not keep.
            click.echo(f"error: AUTOCORE_UPLINK_URL is for one instance (one vehicle); unset it or "
                       f"AUTOCORE_SHARE_GROUP={s.share_group}", err=True)
            sys.exit(EXIT_USAGE)
    try:
        # The control socket's directory (runit's ./run makes /run/autocore
        # at every boot; a shell session may not be allowed to).
        os.makedirs(s.run_dir, exist_ok=True)
    except OSError as exc:
        click.echo(f"error: AUTOCORE_RUN_DIR={s.run_dir} cannot be created: {exc.strerror}", err=True)
        sys.exit(EXIT_USAGE)
    try:
        # Before any process starts: an unreachable server is one line and
        # a non-zero exit (runit tries again), not two tracebacks.
        check_reachable(s.database)
    except DatabaseUnreachable as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_RUNTIME)
    logging.getLogger("autocore.launcher").info("starting: broker %s:%s, database %s", s.mqtt_host, s.mqtt_port,
                                                s.database_shown)
    exit_without_teardown(launch(s))


if __name__ == "__main__":
    main()
