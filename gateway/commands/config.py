"""`gateway config show`: the effective configuration and where each value came from."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

from gateway import tables
from gateway.commands.common import CONFIG_VARIABLE, EXIT_USAGE, echo_json, json_option, setting_options
from gateway.settings import ENV_PREFIX, SETTING_FIELDS, LoadedSettings, env_name, flag_name, unsafe_settings
from storage.url import parse_location, redact


@click.group()
def config() -> None:
    """The gateway's configuration.

    \b
    Example:
      gateway config show --config /etc/autocore/gateway.toml
    """


# AUTOCORE_* variables that are not settings of the gateway: the launcher's
# own (AUTOCORE__*), `make run`'s, the simulator's and the tests'.
NOT_SETTINGS = (ENV_PREFIX + "_", ENV_PREFIX + "DEMO_", ENV_PREFIX + "SIM_", ENV_PREFIX + "TEST_")


def unknown_environment(environ: dict[str, str] | None = None) -> list[str]:
    """AUTOCORE_* variables that are no setting: a misspelt name is
    otherwise silently ignored."""
    environ = dict(os.environ if environ is None else environ)
    known = {env_name(f.name) for f in SETTING_FIELDS}
    return sorted(k for k in environ
                  if k.startswith(ENV_PREFIX) and k not in known and k != CONFIG_VARIABLE and not k.startswith(NOT_SETTINGS))


@config.command()
@json_option
@setting_options(show=())
def show(loaded: LoadedSettings, as_json: bool) -> None:
    """Every setting's effective value and its source: default, file,
    environment or flag (flags beat the environment, which beats the file).

    The first line names the database backend in use (sqlite or
    postgresql, and where; a URL's password shown as ***). Secrets are
    shown as ***. A bad value anywhere is one line naming the
    setting and what is wrong, and exit code 2. AUTOCORE_* variables that
    are no setting (a misspelt name) are warned about on stderr, and so is
    a value that trades durability away (marked UNSAFE in the table,
    "unsafe": true in JSON).

    \b
    Examples:
      gateway config show
      AUTOCORE_MQTT_PORT=1884 gateway config show --json
    """
    config_file = click.get_current_context().params.get("config")
    rows = []
    unsafe = set(unsafe_settings(loaded.settings))
    for f in SETTING_FIELDS:
        value = getattr(loaded.settings, f.name)
        if f.metadata.get("secret") and value:
            value = "***"
        if f.name == "db_url" and value:
            value = redact(value)  # the password, if any, is a secret
        rows.append({
            "name": f.name,
            "variable": env_name(f.name),
            "flag": flag_name(f.name),
            "value": value,
            "default": f.default,
            "source": loaded.sources[f.name],
            "unsafe": f.name in unsafe,
        })
    target = parse_location(loaded.settings.database)
    engine, where = target.engine, target.display
    backend = {"engine": engine, "location": where}
    for name in unknown_environment():
        click.echo(f"warning: {name} is set but is no setting (ignored)", err=True)
    for r in rows:
        if r["unsafe"]:
            click.echo(f"warning: {r['variable']}={r['value']} trades durability away: a power cut loses "
                       "messages the gateway acknowledged", err=True)
    if as_json:
        echo_json({"config_file": config_file, "backend": backend, "settings": rows})
        return
    if config_file:
        click.echo(f"config file: {config_file}")
    click.echo(f"database: {engine} {where}\n")
    click.echo(tables.table(
        ["VARIABLE", "VALUE", "SOURCE"],
        [[r["variable"], ("-" if r["value"] is None else str(r["value"])) + ("  UNSAFE" if r["unsafe"] else ""),
          f"file {config_file}" if r["source"] == "file" else r["source"]] for r in rows],
        right=(),
    ))


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))  # a JSON string is a TOML basic string


def sample_text() -> str:
    """Every setting as a commented line of TOML, its help above it, its
    default as the value: uncomment what differs on this vehicle."""
    lines = ["# AutoCore Gateway settings (TOML). Uncomment and change what differs here;",
             "# the environment (AUTOCORE_<NAME>) and flags (--<name>) beat this file.",
             "# Use it with --config FILE or AUTOCORE_CONFIG=FILE.", ""]
    for f in SETTING_FIELDS:
        lines.append(f"# {f.metadata['help']}")
        if f.default is None:
            lines.append(f"# {f.name} =   (no default)")
        else:
            lines.append(f"# {f.name} = {_toml_value(f.default)}")
        lines.append("")
    return "\n".join(lines)


@config.command()
def sample() -> None:
    """Print a commented starter TOML file of every setting and its default.

    \b
    Example:
      gateway config sample > /etc/autocore/gateway.toml
    """
    click.echo(sample_text(), nl=False)


def _nearest_existing(path: str) -> str:
    path = os.path.abspath(path)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def _writable_dir(path: str, what: str) -> str | None:
    """None if `path` is a writable directory or could be made as one."""
    if os.path.exists(path):
        if not os.path.isdir(path):
            return f"{what} {path} is not a directory"
        return None if os.access(path, os.W_OK | os.X_OK) else f"{what} {path} is not writable by this user"
    parent = _nearest_existing(path)
    if not os.path.isdir(parent):
        return f"{what} {path} cannot be made: {parent} is not a directory"
    return None if os.access(parent, os.W_OK | os.X_OK) else f"{what} {path} cannot be made: {parent} is not writable"


def check_problems(settings: Any, broker_timeout_s: float = 3.0) -> tuple[list[str], list[str]]:
    """(what is fine, what is wrong), one line each, changing nothing."""
    import socket

    from gateway.settings import parse_dbc_files
    from storage.db import DatabaseUnreachable, check_reachable
    from storage.url import SQLITE

    ok: list[str] = []
    problems: list[str] = []
    target = parse_location(settings.database)
    if target.engine == SQLITE:
        path = target.file
        problem = _writable_dir(os.path.dirname(os.path.abspath(path)), "the database's directory")
        if problem is None and os.path.exists(path) and not os.access(path, os.R_OK | os.W_OK):
            problem = f"the database {path} is not writable by this user"
        (problems.append(problem) if problem else ok.append(
            f"database {path} {'writable' if os.path.exists(path) else 'can be created'}"))
    else:
        try:
            check_reachable(settings.database, timeout_s=broker_timeout_s)
            ok.append(f"database {target.display} reachable")
        except DatabaseUnreachable as exc:
            problems.append(str(exc))
    problem = _writable_dir(settings.run_dir, "the run directory (AUTOCORE_RUN_DIR)")
    (problems.append(problem) if problem else ok.append(f"run directory {settings.run_dir} usable"))
    for name in ("mqtt_tls_ca", "mqtt_tls_cert", "mqtt_tls_key"):
        path = getattr(settings, name)
        if path:
            if os.access(path, os.R_OK) and os.path.isfile(path):
                ok.append(f"{env_name(name)} {path} readable")
            else:
                problems.append(f"{env_name(name)}: {path} cannot be read")
    for _, path in parse_dbc_files(settings.can_dbc):
        if os.access(path, os.R_OK) and os.path.isfile(path):
            ok.append(f"DBC file {path} readable")
        else:
            problems.append(f"AUTOCORE_CAN_DBC: {path} cannot be read")
    try:
        socket.create_connection((settings.mqtt_host, settings.mqtt_port), timeout=broker_timeout_s).close()
        ok.append(f"broker {settings.mqtt_host}:{settings.mqtt_port} reachable")
    except OSError as exc:
        problems.append(f"the broker at {settings.mqtt_host}:{settings.mqtt_port} cannot be reached: "
                        f"{exc.strerror or exc}")
    return ok, problems


@config.command()
@json_option
@setting_options(show=())
def check(loaded: LoadedSettings, as_json: bool) -> None:
    """A dry run of the start: is each thing the gateway needs there?

    Checks, changing nothing: the settings, the database (a SQLite file's
    directory writable, or the server reachable), the run directory, the
    TLS and DBC files named, and the broker (a TCP connection). One line
    per thing; exit code 2 if anything is wrong.

    \b
    Examples:
      gateway config check --config /etc/autocore/gateway.toml
      AUTOCORE_CONFIG=/etc/autocore/gateway.toml gateway config check --json
    """
    ok, problems = check_problems(loaded.settings)
    if as_json:
        echo_json({"ok": ok, "problems": problems})
    else:
        for line in ok:
            click.echo(f"ok: {line}")
        for line in problems:
            click.echo(f"error: {line}", err=True)
    if problems:
        sys.exit(EXIT_USAGE)
