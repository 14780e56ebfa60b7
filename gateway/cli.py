"""The `gateway` command line (click).

Every setting is a flag of the same name as its variable
(`AUTOCORE_MQTT_PORT` <=> `--mqtt-port`), on every command that needs
settings; flags beat the environment, which beats the `--config` file.
"""

from __future__ import annotations

import functools
import logging
import sys
from typing import Any, Callable

import click

from gateway.settings import SETTING_FIELDS, LoadedSettings, SettingsError, env_name, flag_name, load_settings

EXIT_RUNTIME = 1
EXIT_USAGE = 2


def setting_options(func: Callable) -> Callable:
    """Add `--config` and one flag per setting; pass `loaded` (LoadedSettings)."""

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
            show_default=False,
        )(wrapper)
    wrapper = click.option("--config", type=click.Path(dir_okay=False), default=None,
                           help="TOML file of settings (keys as the variables, with or without AUTOCORE_).")(wrapper)
    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
def main() -> None:
    """AutoCore Gateway: the MQTT hub of a vehicle.

    \b
    Examples:
      gateway run                      # the gateway in the foreground (what runit calls)
      gateway run --mqtt-port 1884     # the same against another broker port
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

    s = loaded.settings
    setup_logging(s.log_level, s.log_format, "launcher")
    logging.getLogger("autocore.launcher").info("starting: broker %s:%s, database %s", s.mqtt_host, s.mqtt_port, s.db_path)
    sys.exit(launch(s))


from gateway.simulate import simulate  # noqa: E402

main.add_command(simulate)

if __name__ == "__main__":
    main()
