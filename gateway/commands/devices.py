"""`gateway devices`: the device registry in the database."""

from __future__ import annotations

import time

import click

from gateway import tables
from gateway.cli import setting_options
from gateway.commands.common import echo_json, json_option, reading, record_dict
from gateway.settings import LoadedSettings

STATUSES = ("online", "offline", "discovered")


@click.command()
@click.option("--status", type=click.Choice(STATUSES), default=None, help="Only devices with this status.")
@json_option
@setting_options(show=("db_path",))
def devices(loaded: LoadedSettings, status: str | None, as_json: bool) -> None:
    """Every device in the database, as the gateway last wrote it.

    NAME is the one the owner gave the device in the Config App, where it
    has one, else the device's own. Needs no running gateway. What the running gateway holds in memory
    (rates, command windows) is `gateway inspect devices`.

    \b
    Examples:
      gateway devices
      gateway devices --status offline --json
    """
    from storage import devices as device_repo

    with reading(loaded.settings) as db:
        records = device_repo.list_devices(status, db=db)
    if as_json:
        echo_json({"devices": [record_dict(r) | {"display_name": r.display_name} for r in records]})
        return
    if not records:
        click.echo(f"no {status + ' ' if status else ''}devices in {loaded.settings.db_path}")
        return
    now = time.time()
    rows = [
        [r.uuid, r.status, r.device_type, r.display_name, r.protocol, r.firmware_version, r.ip_address, r.boot_id,
         tables.ago(r.last_seen, now), tables.timestamp(r.first_seen)]
        for r in records
    ]
    click.echo(tables.table(["UUID", "STATUS", "TYPE", "NAME", "PROTOCOL", "FIRMWARE", "IP", "BOOT", "LAST SEEN",
                             "FIRST SEEN"], rows, right=(7,)))
