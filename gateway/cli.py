"""The `gateway` command line (click).

Every setting is a flag of the same name as its variable
(`AUTOCORE_MQTT_PORT` <=> `--mqtt-port`), on every command that needs
settings; flags beat the environment, which beats the `--config` file.
"""

from __future__ import annotations

import functools
import inspect
import logging
import sys
from typing import Any, Callable

import click

from gateway.settings import SETTING_FIELDS, LoadedSettings, SettingsError, env_name, flag_name, load_settings

EXIT_RUNTIME = 1
EXIT_USAGE = 2


ALL_SETTINGS_NOTE = ("Every setting of `gateway run` is also accepted here as a flag (`gateway run --help` "
                     "lists them; `gateway config show` shows their values).")


def setting_options(func: Callable | None = None, *, show: tuple[str, ...] | None = None) -> Callable:
    """Add `--config` and one flag per setting; pass `loaded` (LoadedSettings).

    `@setting_options` lists every flag in `--help`; `@setting_options(show=
    ("db_path",))` lists only those (the others are accepted all the same,
    and the help says so), so an operator command's help stays short. A bad
    setting, wherever it comes from, is one line naming it and exit code 2.
    """
    if func is None:
        return lambda f: setting_options(f, show=show)

    @functools.wraps(func)
    def wrapper(*args: Any, config: str | None = None, **kwargs: Any) -> Any:
        flags = {f.name: kwargs.pop(f.name) for f in SETTING_FIELDS}
        try:
            loaded = load_settings(config, flags=flags)
        except SettingsError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_USAGE)
        return func(*args, loaded=loaded, **kwargs)

    for f in reversed(SETTING_FIELDS):
        wrapper = click.option(
            flag_name(f.name), f.name, default=None, metavar="VALUE",
            help=f"{f.metadata['help']} [{env_name(f.name)}; default {f.default!r}]",
            show_default=False, hidden=show is not None and f.name not in show,
        )(wrapper)
    wrapper = click.option("--config", type=click.Path(dir_okay=False), default=None,
                           help="TOML file of settings (keys as the variables, with or without AUTOCORE_).")(wrapper)
    if show is not None and wrapper.__doc__:
        wrapper.__doc__ = inspect.cleandoc(wrapper.__doc__) + "\n\n" + ALL_SETTINGS_NOTE
    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
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
    from gateway.launcher import run as launch

    from storage.db import DatabaseUnreachable, check_reachable

    s = loaded.settings
    setup_logging(s.log_level, s.log_format, "launcher")
    try:
        # Before any process starts: an unreachable server is one line and
        # a non-zero exit (runit tries again), not two tracebacks.
        check_reachable(s.database)
    except DatabaseUnreachable as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_RUNTIME)
    logging.getLogger("autocore.launcher").info("starting: broker %s:%s, database %s", s.mqtt_host, s.mqtt_port,
                                                s.database_shown)
    sys.exit(launch(s))


from gateway.simulate import simulate  # noqa: E402

main.add_command(simulate)

from gateway.commands import register  # noqa: E402

register(main)

if __name__ == "__main__":
    main()
