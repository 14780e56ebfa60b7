"""`gateway telemetry`: a device's stored readings."""

from __future__ import annotations

import time
from typing import Any, Callable, Iterator

import click

from gateway import tables
from gateway.commands.common import (
    TIME_BOUND,
    complete_device,
    echo_json,
    json_option,
    reading,
    record_dict,
    setting_options,
)
from gateway.settings import LoadedSettings

FOLLOW_POLL_S = 0.25
COLUMNS = ["TIME", "SOURCE", "METRIC", "VALUE", "UNIT", "TAG", "BOOT", "SEQ"]


@click.command()
@click.argument("uuid", shell_complete=complete_device)
@click.option("--metric", default=None, metavar="M", help="Only this metric (fuel_level, RPM, relay.1.state, ...).")
@click.option("--source", default=None, metavar="S", help="Only this source (can, analog, system, gps, sensor, relay, status, ...).")
@click.option("--since", type=TIME_BOUND, default=None,
              help="Only readings taken since then: a duration ago (30s, 10m, 2h, 7d) or a time (2025-01-08T10:30:00Z).")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True,
              help="The newest N readings, shown oldest first.")
@click.option("--follow", "-f", is_flag=True, help="Then print new readings as they are stored, until Ctrl-C.")
@json_option
@setting_options(show=("db_url", "db_path"))
def telemetry(loaded: LoadedSettings, uuid: str, metric: str | None, source: str | None, since: float | None,
              limit: int, follow: bool, as_json: bool) -> None:
    """A device's telemetry from the database, newest N readings, oldest first.

    Times are the device's (or the gateway's reception time where the
    device's clock could not be trusted), in UTC. With --json: a JSON
    document, or with --follow one JSON object per line.

    \b
    Examples:
      gateway telemetry esp32-relay-01 --since 10m
      gateway telemetry can-gw-01 --source can --metric RPM --limit 10
      gateway telemetry esp32-relay-01 --follow --json
    """
    from storage import telemetry as telemetry_repo

    with reading(loaded.settings) as db:
        after = _last_id(db) if follow else 0  # before the query: nothing stored meanwhile is missed
        records = list(reversed(telemetry_repo.query(uuid, metric, source, since, limit, db=db)))
        if as_json and not follow:
            echo_json({"telemetry": [_row(r) for r in records]})
            return
        if as_json:
            for r in records:
                echo_json(_row(r), lines=True)
        elif records:
            click.echo(tables.table(COLUMNS, [_cells(r) for r in records], right=(3, 6, 7)))
        elif not follow:
            click.echo(f"no telemetry for {uuid}" + _filters(metric, source, since))
            return
        if not follow:
            return
        if not records and not as_json:
            click.echo(f"waiting for telemetry of {uuid}{_filters(metric, source, since)} (Ctrl-C to stop)", err=True)
        shown = {r.id for r in records if r.id > after}
        try:
            for r in follow_rows(db, uuid, after, metric=metric, source=source, since=since):
                if r.id in shown:
                    continue
                if as_json:
                    echo_json(_row(r), lines=True)
                else:
                    click.echo(tables.table(COLUMNS, [_cells(r)], right=(3, 6, 7)).splitlines()[1])
        except KeyboardInterrupt:
            return


def _filters(metric: str | None, source: str | None, since: float | None) -> str:
    parts = []
    if source:
        parts.append(f"source {source}")
    if metric:
        parts.append(f"metric {metric}")
    if since is not None:
        parts.append(f"since {tables.timestamp(since)}")
    return f" ({', '.join(parts)})" if parts else ""


def _row(r: Any) -> dict:
    return record_dict(r)


def _cells(r: Any) -> list[Any]:
    tag = r.tag
    if r.raw is not None and tag is None:
        tag = r.raw.hex() if isinstance(r.raw, (bytes, bytearray, memoryview)) else str(r.raw)
    return [tables.timestamp_ms(r.ts), r.source, r.metric, tables.number(r.value), r.unit, tag, r.boot_id, r.seq]


def _last_id(db: Any) -> int:
    from storage.telemetry import last_id

    return last_id(db=db)


def follow_rows(db: Any, uuid: str, after_id: int, *, metric: str | None = None, source: str | None = None,
                since: float | None = None, poll_s: float = FOLLOW_POLL_S,
                stop: Callable[[], bool] = lambda: False) -> Iterator[Any]:
    """Rows of `uuid` stored after row `after_id`, in the order they were
    stored, as they come; until `stop()` says so. It queries only when the
    database says something changed (where it can tell: SQLite's
    data_version), walking the id range (storage.telemetry.rows_after)."""
    from storage.db import ChangeWatch
    from storage.telemetry import rows_after

    watch = ChangeWatch(db, "telemetry")
    while not stop():
        if watch.changed():
            while True:
                rows = rows_after(after_id, uuid, metric, source, since, 1000, db=db)
                for row in rows:
                    after_id = row.id
                    yield row
                if len(rows) < 1000:
                    break
        time.sleep(poll_s)
