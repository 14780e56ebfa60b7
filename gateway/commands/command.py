"""`gateway command send|list|cancel`: the `commands` table, used exactly as
the Config App uses it (PROTOCOL.md, "Commands and the Config App")."""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable

import click

from gateway import tables
from gateway.commands.common import (
    DURATION,
    EXIT_RUNTIME,
    Failure,
    complete_device,
    complete_open_command,
    echo_json,
    json_option,
    reading,
    record_dict,
    setting_options,
    writing,
)
from gateway.settings import LoadedSettings, Settings
from protocol import lifecycle
from protocol.lifecycle import S
from protocol.topics import COMMAND_TOPICS

STATUSES = tuple(status.value for status in S)
FINAL = frozenset(status.value for status in lifecycle.FINAL)
WAIT_POLL_S = 0.05
WAIT_SLACK_S = 10.0


@click.group()
def command() -> None:
    """Send, list and cancel device commands (the commands table).

    Needs no running gateway: a command waits in the database, as one the
    Config App wrote would, until the gateway sends it or it expires.

    \b
    Examples:
      gateway command send esp32-relay-01 relay_control --param relay_id=1 --param state=true --wait
      gateway command list --status sent
      gateway command cancel 42
    """


# -- send ----------------------------------------------------------------------


def _check_uuid(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    from protocol.topics import is_valid_uuid

    if value is not None and not is_valid_uuid(value):
        raise click.BadParameter(
            f"{value!r} is not a device id (1 to 64 characters of A-Z a-z 0-9 - _, starting with a letter or digit)"
        )
    return value


def _check_type(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not value.strip():
        raise click.BadParameter("the command type must not be empty")
    return value


def parse_param_value(text: str) -> Any:
    """`1` -> 1, `2.5` -> 2.5, `true` -> True, `null` -> None, `[1,2]` and
    `{"a":1}` -> themselves, anything else -> the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def build_parameters(params: tuple[str, ...], params_json: str | None) -> dict:
    """`--params-json` first, then each `--param key=value` over it."""
    parameters: dict[str, Any] = {}
    if params_json is not None:
        try:
            loaded = json.loads(params_json)
        except ValueError as exc:
            raise click.BadParameter(f"not valid JSON: {exc}", param_hint="'--params-json'") from None
        if not isinstance(loaded, dict):
            raise click.BadParameter("must be a JSON object, such as '{\"relay_id\": 1}'", param_hint="'--params-json'")
        parameters.update(loaded)
    for item in params:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="'--param'")
        parameters[key.strip()] = parse_param_value(value)
    return parameters


@command.command()
@click.argument("uuid", callback=_check_uuid, shell_complete=complete_device)
@click.argument("command_type", metavar="TYPE", callback=_check_type)
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
              help="A parameter; VALUE is read as JSON where it can be (1, true, \"on\", [1,2]), else as text. "
                   "Repeatable.")
@click.option("--params-json", metavar="JSON", default=None,
              help="All parameters as one JSON object; --param values are laid over it.")
@click.option("--topic", type=click.Choice(COMMAND_TOPICS), default=COMMAND_TOPICS[0], show_default=True,
              help="Where the gateway sends it: devices/UUID/command, or devices/UUID/relay/command.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None, metavar="S",
              help="Seconds to wait for the device's answer before sending again [default: AUTOCORE_COMMAND_TIMEOUT_S].")
@click.option("--ttl", type=DURATION, default=None, metavar="S",
              help="How long it may wait for its device to be online (30, 90s, 5m) [default: AUTOCORE_COMMAND_TTL_S].")
@click.option("--max-attempts", type=click.IntRange(min=1), default=None, metavar="N",
              help="Sends at most [default: AUTOCORE_COMMAND_MAX_ATTEMPTS].")
@click.option("--wait", is_flag=True,
              help="Follow the command to its final state; exit 0 only if it succeeded.")
@click.option("--wait-timeout", type=DURATION, default=None, metavar="S",
              help="With --wait: give up (exit 1) after this long [default: the ttl plus timeout x max attempts x 2].")
@json_option
@setting_options(show=("db_url", "db_path"))
def send(loaded: LoadedSettings, uuid: str, command_type: str, params: tuple[str, ...], params_json: str | None,
         topic: str, timeout: float | None, ttl: float | None, max_attempts: int | None, wait: bool,
         wait_timeout: float | None, as_json: bool) -> None:
    """Queue command TYPE for device UUID: insert a pending row into the
    commands table, exactly as the Config App does.

    The gateway picks it up within AUTOCORE_COMMAND_POLL_MS, sends it while
    the device is online, retries it, and writes its outcome into the row.
    With --wait this follows the row until it is final: exit 0 if it
    succeeded, 1 if it failed, timed out, expired or was cancelled.

    \b
    Examples:
      gateway command send esp32-relay-01 relay_control --param relay_id=1 --param state=true --wait
      gateway command send esp32-relay-01 relay_control --params-json '{"relays": [{"relay_id": 1, "action": "toggle"}]}' --topic relay/command
      gateway command send display-01 set_brightness --param level=80 --ttl 10m --json
    """
    from storage import commands as command_repo
    from storage import devices as device_repo

    s = loaded.settings
    if ttl is not None and ttl <= 0:
        raise click.BadParameter("must be greater than 0", param_hint="'--ttl'")
    parameters = build_parameters(params, params_json)
    attempts = max_attempts if max_attempts is not None else s.command_max_attempts
    ttl_s = ttl if ttl is not None else s.command_ttl_s
    with writing(s) as _:
        known = device_repo.get_device(uuid)
        command_id = command_repo.insert_command(uuid, command_type, parameters, topic=topic, now=time.time(),
                                                 ttl_s=ttl_s, timeout=timeout, max_attempts=attempts)
        record = command_repo.get_command(command_id)
    assert record is not None
    _warn_about(s, uuid, known)
    if not wait:
        if as_json:
            echo_json({"command": record_dict(record)})
        else:
            click.echo(f"command {record.id} pending: {record.command_type} {_compact(record.parameters)} for {uuid} "
                       f"(expires {tables.timestamp(record.expires_at)})")
        return
    effective_timeout = timeout if timeout is not None else s.command_timeout_s
    limit = wait_timeout if wait_timeout is not None else ttl_s + effective_timeout * attempts * 2 + WAIT_SLACK_S
    say: Callable[[Any], None] = (lambda r: None) if as_json else _progress
    if not as_json:
        _progress(record)
    final = follow_command(s, record.id, time.time() + limit, say)
    if as_json:
        echo_json({"command": record_dict(final)})
    elif final.status not in FINAL:
        click.echo(f"error: command {final.id} is still {final.status} after {tables.seconds(limit)}; "
                   f"it stays in the database (gateway command cancel {final.id})", err=True)
    if final.status != S.SUCCEEDED:
        raise SystemExit(EXIT_RUNTIME)


def _warn_about(s: Settings, uuid: str, known: Any) -> None:
    if known is None:
        click.echo(f"warning: no device {uuid} in the database yet; the command waits for it until it expires",
                   err=True)
    elif known.status != "online":
        click.echo(f"note: device {uuid} is {known.status}; the command waits for it until it expires", err=True)
    if not os.path.exists(s.socket_path):
        click.echo(f"warning: the gateway does not seem to be running (no socket at {s.socket_path}); "
                   "the command waits in the database", err=True)


def follow_command(s: Settings, command_id: int, deadline: float, on_change: Callable[[Any], None]) -> Any:
    """Watch one row until it is final or `deadline` passes; call
    `on_change(record)` on every change seen. A read-only connection, and a
    query only when the database says the commands changed (storage's
    ChangeWatch: data_version on SQLite, NOTIFY on PostgreSQL)."""
    from storage import commands as command_repo
    from storage.db import ChangeWatch

    last = None
    with reading(s) as db:
        watch = ChangeWatch(db, "commands")
        try:
            while True:
                if watch.changed():
                    record = command_repo.get_command(command_id, db=db)
                    if record is None:
                        raise Failure(f"command {command_id} disappeared from the database (deleted by another program)")
                    state = (record.status, record.attempts)
                    if last is not None and state != last:
                        on_change(record)
                    last = state
                    if record.status in FINAL:
                        return record
                if time.time() >= deadline:
                    return record
                time.sleep(WAIT_POLL_S)
        except KeyboardInterrupt:
            click.echo(f"\nstopped waiting; command {command_id} stays in the database "
                       f"(gateway command cancel {command_id})", err=True)
            raise SystemExit(EXIT_RUNTIME) from None


def _progress(r: Any) -> None:
    line = f"{tables.timestamp_ms(time.time())}  command {r.id} {r.status}"
    if r.status in (S.SENT, S.ACCEPTED) and r.attempts:
        line += f" (attempt {r.attempts} of {r.max_attempts})"
    if r.status in FINAL:
        if r.created_at is not None and r.completed_at is not None:
            line += f" after {tables.seconds(r.completed_at - r.created_at)}"
        if r.result is not None:
            line += f": result {_compact(r.result)}"
        if r.error_message:
            line += f": {r.error_message}"
    click.echo(line)


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


# -- list ------------------------------------------------------------------------


@command.command("list")
@click.option("--device", "device_uuid", default=None, metavar="UUID", shell_complete=complete_device,
              help="Only this device's commands.")
@click.option("--status", type=click.Choice(STATUSES), default=None, help="Only commands in this state.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True, help="At most this many, newest first.")
@json_option
@setting_options(show=("db_url", "db_path"))
def list_(loaded: LoadedSettings, device_uuid: str | None, status: str | None, limit: int, as_json: bool) -> None:
    """Commands in the database, newest first.

    \b
    Examples:
      gateway command list
      gateway command list --device esp32-relay-01 --status failed --json
    """
    from storage import commands as command_repo

    with reading(loaded.settings) as db:
        records = command_repo.list_commands(device_uuid, status, limit, db=db)
    if as_json:
        echo_json({"commands": [record_dict(r) for r in records]})
        return
    if not records:
        click.echo("no commands" + (f" for {device_uuid}" if device_uuid else "") + (f" in state {status}" if status else ""))
        return
    rows = []
    for r in records:
        outcome = r.error_message if r.error_message else (_compact(r.result) if r.result is not None else None)
        rows.append([r.id, r.device_uuid, r.command_type, r.topic, r.status, f"{r.attempts or 0}/{r.max_attempts or '-'}",
                     tables.timestamp(r.created_at), tables.timestamp(r.completed_at) if r.completed_at else None,
                     _clip(outcome, 60)])
    click.echo(tables.table(["ID", "DEVICE", "TYPE", "TOPIC", "STATUS", "ATTEMPTS", "CREATED", "FINISHED", "OUTCOME"],
                            rows, right=(0, 5)))


def _clip(text: str | None, width: int) -> str | None:
    if text is None or len(text) <= width:
        return text
    return text[: width - 3] + "..."


# -- cancel ----------------------------------------------------------------------


@command.command()
@click.argument("command_id", metavar="ID", type=click.IntRange(min=1), shell_complete=complete_open_command)
@json_option
@setting_options(show=("db_url", "db_path"))
def cancel(loaded: LoadedSettings, command_id: int, as_json: bool) -> None:
    """Ask the gateway to cancel command ID, as the Config App does (status
    cancel_requested).

    The gateway cancels it if it has not been sent; one already sent cannot
    be unsent and runs to its own end. Exit 1 if there is no such command or
    it is already final.

    \b
    Example:
      gateway command cancel 42
    """
    from storage import commands as command_repo

    s = loaded.settings
    with writing(s) as _:
        before = command_repo.get_command(command_id)
        if before is None:
            raise Failure(f"no command {command_id} in {s.database_shown}")
        requested = command_repo.request_cancel(command_id, time.time())
        after = command_repo.get_command(command_id)
    assert after is not None
    if as_json:
        echo_json({"cancel_requested": requested, "command": record_dict(after)})
    if requested:
        if not as_json:
            if before.status in (S.SENT, S.ACCEPTED):
                click.echo(f"command {command_id} cancel requested; it was already {before.status}, so the device "
                           "may carry it out and the gateway records how it ends")
            else:
                click.echo(f"command {command_id} cancel requested (it was {before.status}); the gateway cancels it")
        return
    if after.status == S.CANCEL_REQUESTED:
        if not as_json:
            click.echo(f"command {command_id} cancel was already requested")
        return
    if not as_json:
        click.echo(f"error: command {command_id} is already {after.status}; nothing to cancel", err=True)
    raise SystemExit(EXIT_RUNTIME)
