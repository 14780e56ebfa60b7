"""What the commands share (gateway.cli's and the subcommands'): errors and
exit codes, the settings flags and `--json`, durations, and opening the
database for reading or writing. It imports no command module, so every
command module can import it without a cycle."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import os
import re
import sys
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Callable, Iterator

import click

from gateway.settings import SETTING_FIELDS, Settings, SettingsError, env_name, flag_name, load_settings

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2


class Failure(click.ClickException):
    """A runtime failure: one line on stderr, exit code 1."""

    exit_code = EXIT_RUNTIME

    def __init__(self, message: str, prefix: str = "error: ") -> None:
        super().__init__(message)
        self.prefix = prefix

    def show(self, file: Any = None) -> None:
        click.echo(f"{self.prefix}{self.message}", err=True)


def fail_line(message: str) -> Failure:
    """A failure shown as the line itself, with no `error:` in front (the
    not-running message is meant to be read, and grepped, as it is)."""
    return Failure(message, prefix="")


# -- options ---------------------------------------------------------------

ALL_SETTINGS_NOTE = ("Every setting of `gateway run` is also accepted here as a flag (`gateway run --help` "
                     "lists them; `gateway config show` shows their values).")


CONFIG_VARIABLE = "AUTOCORE_CONFIG"  # the --config file, from the environment


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
    wrapper = click.option("--config", type=click.Path(dir_okay=False), default=None, envvar=CONFIG_VARIABLE,
                           help=f"TOML file of settings (keys as the variables, with or without AUTOCORE_) "
                                f"[{CONFIG_VARIABLE}]: the service's file, so a shell sees its settings too.")(wrapper)
    if show is not None and wrapper.__doc__:
        wrapper.__doc__ = inspect.cleandoc(wrapper.__doc__) + "\n\n" + ALL_SETTINGS_NOTE
    return wrapper


# -- output ---------------------------------------------------------------


def json_option(func: Callable) -> Callable:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts (keys in docs/cli.md).")(func)


def _default(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def to_json(value: Any, *, lines: bool = False) -> str:
    """One JSON document: indented, or compact on one line (JSON Lines, for
    `--watch` and `--follow`)."""
    if lines:
        return json.dumps(value, default=_default, ensure_ascii=False, separators=(",", ":"))
    return json.dumps(value, default=_default, ensure_ascii=False, indent=2)


def echo_json(value: Any, *, lines: bool = False) -> None:
    click.echo(to_json(value, lines=lines))


def record_dict(record: Any) -> dict:
    """A repository record (frozen dataclass) as a plain dict."""
    out = dataclasses.asdict(record)
    for key, value in out.items():
        if isinstance(value, tuple):
            out[key] = list(value)
    return out


# -- durations and times -----------------------------------------------------

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_duration(text: str) -> float:
    """`90`, `90s`, `10m`, `1h30m`, `7d`, `2w`, `500ms` -> seconds. ValueError otherwise."""
    t = text.strip().lower().replace(" ", "")
    if not t:
        raise ValueError("empty duration")
    try:
        value = float(t)
    except ValueError:
        pos, total = 0, 0.0
        for m in _PART.finditer(t):
            if m.start() != pos:
                break
            total += float(m.group(1)) * _UNITS[m.group(2)]
            pos = m.end()
        if pos != len(t) or pos == 0:
            raise ValueError(f"{text!r} is not a duration such as 30s, 10m, 1h30m or 7d") from None
        value = total
    if value != value or value < 0:
        raise ValueError(f"{text!r} is not a duration such as 30s, 10m, 1h30m or 7d")
    return value


def parse_time(text: str) -> float:
    """An ISO 8601 time (`2025-01-08T10:30:00Z`, `2025-01-08`; no offset
    means UTC) -> seconds since the epoch. ValueError otherwise."""
    t = text.strip()
    if t.endswith(("Z", "z")):
        t = t[:-1] + "+00:00"
    dt = datetime.fromisoformat(t)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


class TimeBound(click.ParamType):
    """`10m` (that long ago), or an ISO 8601 time -> seconds since the epoch."""

    name = "DURATION|TIME"

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        if isinstance(value, (int, float)):
            return float(value)
        try:
            return time.time() - parse_duration(value)
        except ValueError as duration_error:
            try:
                return parse_time(value)
            except ValueError:
                self.fail(f"{value!r}: {duration_error}, or a time such as 2025-01-08T10:30:00Z", param, ctx)


class Duration(click.ParamType):
    name = "DURATION"

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        if isinstance(value, (int, float)):
            return float(value)
        try:
            return parse_duration(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


TIME_BOUND = TimeBound()
DURATION = Duration()


# -- the database --------------------------------------------------------------


def _where(settings: Settings) -> str:
    from storage.url import parse_location

    return parse_location(settings.database).display


def _missing(settings: Settings) -> Failure:
    return Failure(
        f"no database at {_where(settings)} (the gateway creates it at its first start; "
        "`gateway db migrate` creates it now)"
    )


def database_error(settings: Settings, exc: BaseException) -> Failure:
    from storage.db import DatabaseBusy

    if isinstance(exc, DatabaseBusy) or "locked" in str(exc):
        return Failure(f"the database {_where(settings)} stayed locked by another program for "
                       f"{settings.db_busy_timeout_ms} ms; try again")
    text = " ".join(str(exc).split())  # a driver's message may span lines
    return Failure(f"database {_where(settings)}: {text}")


@contextmanager
def reading(settings: Settings) -> Iterator[Any]:
    """A read-only connection to the database, which must exist; pass it
    as `db=` to the repositories. It never takes the write lock, so it
    never holds up the gateway."""
    from storage.db import database_errors, database_exists, open_reader

    if not database_exists(settings.database):
        raise _missing(settings)
    errors = database_errors()
    db = open_reader(settings.database, busy_timeout_ms=settings.db_busy_timeout_ms)
    try:
        db.connect()
        yield db
    except errors as exc:
        raise database_error(settings, exc) from None
    finally:
        if not db.is_closed():
            db.close()


@contextmanager
def writing(settings: Settings, *, create: bool = False, migrate: bool = False) -> Iterator[Any]:
    """The database bound as the repositories' `database`, for a few short
    write transactions. It must exist unless `create`."""
    from storage.db import close_database, database_errors, database_exists, open_database
    from storage.migrations import migrate as run_migrations

    if not create and not database_exists(settings.database):
        raise _missing(settings)
    errors = database_errors()
    try:
        # FULL for the CLI's own few commits (a command it reports queued,
        # a cancel): each is durable when the CLI says so, power cut or not.
        db = open_database(settings.database, synchronous="FULL",
                           busy_timeout_ms=settings.db_busy_timeout_ms, register_devices=settings.config_app_register)
        if migrate:
            run_migrations()
    except errors + (OSError,) as exc:
        raise database_error(settings, exc) from None
    try:
        yield db
    except errors as exc:
        raise database_error(settings, exc) from None
    finally:
        close_database()


# -- shell completion ------------------------------------------------------------


def _completion_location(ctx: click.Context) -> str:
    """The database completion reads: `--db-url` or `--db-path` if already
    typed, else the environment, else the default (a `--config` file is
    not read)."""
    root = ctx
    url = path = None
    while root is not None:
        url = url or root.params.get("db_url")
        path = path or root.params.get("db_path")
        root = root.parent
    return (url or os.environ.get("AUTOCORE_DB_URL") or path or os.environ.get("AUTOCORE_DB_PATH")
            or Settings().db_path)


def complete_device(ctx: click.Context, param: Any, incomplete: str) -> list[str]:
    """Shell completion of a device uuid from the devices table."""
    from storage.completion import device_uuids

    return device_uuids(_completion_location(ctx), incomplete)


def complete_open_command(ctx: click.Context, param: Any, incomplete: str) -> list[str]:
    """Shell completion of the id of a command that has not finished."""
    from storage.completion import open_command_ids

    return open_command_ids(_completion_location(ctx), incomplete)
