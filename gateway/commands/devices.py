"""`gateway devices`: the device registry in the database, and the
operator's two changes to it (`forget`, `dialect`), which also reach the
running gateway through its control socket when one is running."""

from __future__ import annotations

import time
from typing import Any

import click

from gateway import tables
from gateway.commands.command import _check_uuid
from gateway.commands.common import (
    Failure,
    complete_device,
    echo_json,
    json_option,
    reading,
    record_dict,
    setting_options,
    writing,
)
from gateway.settings import LoadedSettings, Settings
from protocol.values import DEVICE_STATUSES, Dialect

STATUSES = DEVICE_STATUSES
DIALECTS = tuple(dialect.value for dialect in Dialect)
CONTROL_TIMEOUT_S = 30.0  # forget waits for the store to commit what the device's actor sent before


@click.group(invoke_without_command=True)
@click.option("--status", type=click.Choice(STATUSES), default=None, help="Only devices with this status.")
@json_option
@setting_options(show=("db_url", "db_path"))
def devices(loaded: LoadedSettings, status: str | None, as_json: bool) -> None:
    """Every device in the database, as the gateway last wrote it; and the
    operator's changes to one device (`forget`, `dialect`).

    NAME is the one the owner gave the device in the Config App, where it
    has one, else the device's own. Needs no running gateway. What the running gateway holds in memory
    (rates, command windows) is `gateway inspect devices`.

    \b
    Examples:
      gateway devices
      gateway devices --status offline --json
      gateway devices dialect esp32-9c1a77b0e2f41d03 fw22
      gateway devices forget esp32-relay-01
    """
    if click.get_current_context().invoked_subcommand is not None:
        return
    from storage import devices as device_repo

    with reading(loaded.settings) as db:
        records = device_repo.list_devices(status, db=db)
    if as_json:
        echo_json({"devices": [record_dict(r) | {"display_name": r.display_name} for r in records]})
        return
    if not records:
        click.echo(f"no {status + ' ' if status else ''}devices in {loaded.settings.database_shown}")
        return
    now = time.time()
    rows = [
        [r.uuid, r.status, r.device_type, r.display_name, r.protocol, r.firmware_version, r.ip_address, r.boot_id,
         tables.ago(r.last_seen, now), tables.timestamp(r.first_seen)]
        for r in records
    ]
    click.echo(tables.table(["UUID", "STATUS", "TYPE", "NAME", "PROTOCOL", "FIRMWARE", "IP", "BOOT", "LAST SEEN",
                             "FIRST SEEN"], rows, right=(7,)))


# -- the operator's changes ------------------------------------------------------


def _tell_gateway(s: Settings, what: str, **fields: Any) -> dict | None:
    """The running gateway's answer, or None when none is running. A gateway
    that runs but cannot be asked stops the command before the database is
    touched (exit 1)."""
    from gateway.control import ControlError, GatewayNotRunning, request

    try:
        reply = request(s.socket_path, what, timeout=CONTROL_TIMEOUT_S, **fields)
    except GatewayNotRunning:
        return None
    except ControlError as exc:
        raise Failure(f"the running gateway could not be told: {exc}; the database was not changed") from None
    answer = reply.get(what)
    return answer if isinstance(answer, dict) else {}


def _no_device(s: Settings, uuid: str, gateway: dict | None) -> Failure:
    return Failure(f"no device {uuid} in {s.database_shown}" + ("" if gateway is None else " or in the running gateway"))


def _gateway_word(gateway: dict | None) -> str:
    return "not running" if gateway is None else "running"


@devices.command()
@click.argument("uuid", callback=_check_uuid, shell_complete=complete_device)
@json_option
@setting_options(show=("db_url", "db_path", "run_dir"))
def forget(loaded: LoadedSettings, uuid: str, as_json: bool) -> None:
    """Remove device UUID from the registry (gateway_devices), so that its
    next message registers it afresh, in whatever dialect it speaks.

    A running gateway drops what it holds of the device at once (its
    commands in flight wait in the database and are taken up again); with
    none running, only the database changes. Its telemetry, events and
    commands are kept, and a `forgotten` event is added. Use it when a uuid
    now belongs to other firmware: a v1 device that announced a boot_id
    refuses 2.2 messages until it is forgotten or its dialect is set.

    \b
    Examples:
      gateway devices forget esp32-relay-01
      gateway devices forget esp32-9c1a77b0e2f41d03 --json
    """
    from storage import devices as device_repo
    from storage import events as event_repo

    s = loaded.settings
    with reading(s) as db:
        before = device_repo.get_device(uuid, db=db)
    gateway = _tell_gateway(s, "forget", uuid=uuid)
    gateway_knew = bool(gateway and gateway.get("known"))
    if before is None and not gateway_knew:
        raise _no_device(s, uuid, gateway)
    with writing(s):
        removed = device_repo.forget_device(uuid)
        event_repo.append_events([(uuid, time.time(), "forgotten", {
            "by": "operator", "protocol": before.protocol if before else None,
            "boot_id": before.boot_id if before else None})])
    if as_json:
        echo_json({"uuid": uuid, "forgotten": True, "registry": removed, "gateway": _gateway_word(gateway),
                   "gateway_knew": gateway_knew if gateway is not None else None,
                   "was": record_dict(before) if before else None})
        return
    was = f" (it was {before.protocol}, {before.status}" + (f", boot {before.boot_id}" if before.boot_id is not None
                                                             else "") + ")" if before else ""
    where = "removed from the registry" if removed else "not in the registry"
    running = ("no gateway is running" if gateway is None else "the running gateway dropped its state"
               if gateway_knew else "the running gateway held nothing of it")
    click.echo(f"forgot {uuid}: {where}{was}; {running}. Its next message registers it afresh; "
               "its telemetry and events are kept.")


@devices.command()
@click.argument("uuid", callback=_check_uuid, shell_complete=complete_device)
@click.argument("dialect", type=click.Choice(DIALECTS))
@json_option
@setting_options(show=("db_url", "db_path", "run_dir"))
def dialect(loaded: LoadedSettings, uuid: str, dialect: str, as_json: bool) -> None:
    """Set the dialect of device UUID: v1 or fw22 (firmware 2.2).

    A v1 device that announced a boot_id refuses 2.2 messages (counted as
    dialect_conflict, with an event): the 2.2 boards share one broker
    account, so any of them could have sent it. If the uuid really is a 2.2
    board now, `fw22` lets its messages through; `v1` locks a device with a
    boot_id again. Writes the registry's `protocol` and a `dialect_change`
    event, and tells a running gateway at once.

    \b
    Examples:
      gateway devices dialect esp32-9c1a77b0e2f41d03 fw22
      gateway devices dialect esp32-relay-01 v1 --json
    """
    from storage import devices as device_repo
    from storage import events as event_repo

    s = loaded.settings
    with reading(s) as db:
        before = device_repo.get_device(uuid, db=db)
    gateway = _tell_gateway(s, "set_dialect", uuid=uuid, dialect=dialect)
    gateway_knew = bool(gateway and gateway.get("known"))
    if before is None and not gateway_knew:
        raise _no_device(s, uuid, gateway)
    with writing(s):
        recorded = device_repo.set_protocol(uuid, dialect)
        if before is not None and before.protocol != dialect:
            event_repo.append_events([(uuid, time.time(), "dialect_change",
                                       {"from": before.protocol, "to": dialect, "by": "operator"})])
    if gateway_knew:
        locked = bool(gateway.get("dialect_locked"))
        boot_id = gateway.get("boot_id")
    else:
        boot_id = before.boot_id if before else None
        locked = dialect == "v1" and boot_id is not None
    if as_json:
        echo_json({"uuid": uuid, "dialect": dialect, "was": before.protocol if before else None,
                   "dialect_locked": locked, "boot_id": boot_id, "registry": recorded,
                   "gateway": _gateway_word(gateway), "gateway_knew": gateway_knew if gateway is not None else None})
        return
    was = f" (was {before.protocol})" if before is not None and before.protocol != dialect else ""
    if dialect == "fw22":
        effect = "its 2.2 messages are accepted"
    elif locked:
        effect = f"2.2 messages for it are refused (it has boot_id {boot_id})"
    else:
        effect = "it has no boot_id yet, so a 2.2 message switches it again until it announces one"
    running = "the running gateway too" if gateway is not None else "no gateway is running; it reads this at its start"
    click.echo(f"{uuid}: dialect {dialect}{was}; {effect} ({running}).")
