"""`gateway db migrate|prune`: maintenance of the database file."""

from __future__ import annotations

import time

import click

from gateway import tables
from gateway.commands.common import TIME_BOUND, echo_json, json_option, setting_options, writing
from gateway.settings import LoadedSettings

PRUNE_BATCH = 2000


@click.group()
def db() -> None:
    """Maintain the database (needs no running gateway, and is safe while
    one runs).

    \b
    Examples:
      gateway db migrate
      gateway db prune --older-than 7d
    """


@db.command()
@json_option
@setting_options(show=("db_url", "db_path"))
def migrate(loaded: LoadedSettings, as_json: bool) -> None:
    """Create the database if needed and bring its schema up to date.

    The gateway does this itself at every start; this is for preparing a
    database before the first start (or for the Config App's installer).
    Safe to repeat.

    \b
    Example:
      gateway db migrate --db-path /data/autocore.db
    """
    from storage.migrations import STEPS, current_version
    from storage.migrations import migrate as run_migrations

    s = loaded.settings
    with writing(s, create=True) as _:
        before = current_version()
        applied = run_migrations()
        after = current_version()
    names = {version: name for version, name, _ in STEPS}
    if as_json:
        echo_json({"db_path": s.database_shown, "version_before": before, "version": after,
                   "applied": [{"version": v, "name": names.get(v)} for v in applied]})
        return
    if not applied:
        click.echo(f"{s.database_shown}: schema up to date (version {after})")
        return
    for v in applied:
        click.echo(f"applied {v}: {names.get(v)}")
    click.echo(f"{s.database_shown}: schema at version {after} (was {before})")


@db.command()
@click.option("--older-than", "cutoff", type=TIME_BOUND, required=True,
              help="Delete telemetry taken before then: a duration ago (7d, 12h) or a time (2025-01-01).")
@json_option
@setting_options(show=("db_url", "db_path"))
def prune(loaded: LoadedSettings, cutoff: float, as_json: bool) -> None:
    """Delete old telemetry now, a few thousand rows per transaction, so a
    running gateway keeps storing meanwhile.

    The file does not shrink: SQLite reuses the freed pages for new rows.
    The store process prunes by itself too, after AUTOCORE_RETENTION_DAYS
    and beyond AUTOCORE_DB_MAX_MB.

    \b
    Example:
      gateway db prune --older-than 7d
    """
    from storage import prune as prune_repo

    s = loaded.settings
    started = time.monotonic()
    with writing(s) as _:
        deleted = prune_repo.prune_older_than(cutoff, batch=PRUNE_BATCH)
    elapsed = time.monotonic() - started
    if as_json:
        echo_json({"db_path": s.database_shown, "cutoff": cutoff, "deleted": deleted, "seconds": round(elapsed, 3)})
        return
    click.echo(f"deleted {deleted} telemetry rows taken before {tables.timestamp(cutoff)} "
               f"in {tables.seconds(elapsed)}")
