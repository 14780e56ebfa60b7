"""`gateway can`: the CAN definitions in force, and decoding a frame by hand.

Both read what the running gateway reads (the Config App's `can_signals`
in the database and the files of AUTOCORE_CAN_DBC) and need no running
gateway; a missing database just means no Config App definitions.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import click

from gateway import tables
from gateway.commands.common import Failure, echo_json, json_option, reading, setting_options
from gateway.settings import LoadedSettings, Settings

SIGNAL_COLUMNS = ["SIGNAL", "CAN ID", "START", "LENGTH", "ORDER", "TYPE", "SCALE", "OFFSET", "UNIT", "MIN", "MAX",
                  "FROM", "DEVICES", "NOTE"]
DECODE_COLUMNS = ["SIGNAL", "VALUE", "UNIT", "RANGE"]


@click.group()
def can() -> None:
    """CAN signal definitions: the Config App's can_signals and DBC files.

    \b
    Examples:
      gateway can signals
      gateway can decode 0x100 C4095A0000000000
    """


@contextmanager
def _definitions(settings: Settings) -> Iterator[Any]:
    from storage.can_signals import CanDefinitions

    defs = CanDefinitions(settings.can_dbc_files)
    from storage.db import database_exists

    if database_exists(settings.database):
        with reading(settings) as db:
            defs.refresh(db)
    else:
        defs.refresh(None)
    yield defs


@can.command()
@json_option
@setting_options(show=("db_path", "can_dbc"))
def signals(loaded: LoadedSettings, as_json: bool) -> None:
    """The CAN signal definitions in force and where each comes from.

    `FROM` is config_app (the Config App's can_signals, active rows) or the
    DBC file; `DEVICES` says which devices a DBC file given as TYPE=FILE is
    for. Definitions left out (bad, or also in a DBC file) are listed after
    the table, one line each, as the gateway logs them.

    \b
    Example:
      gateway can signals --can-dbc ecu.dbc
    """
    with _definitions(loaded.settings) as defs:
        catalog = defs.catalog
        if as_json:
            echo_json({"signals": [_definition_dict(d) for d in catalog.definitions],
                       "problems": list(catalog.problems), "config_app_table": defs.config_app_table})
            return
        if catalog.definitions:
            click.echo(tables.table(SIGNAL_COLUMNS, [_cells(d) for d in catalog.definitions],
                                    right=(2, 3, 6, 7, 9, 10)))
        else:
            where = "no can_signals table" if not defs.config_app_table else "no active can_signals rows"
            click.echo(f"no CAN definitions ({where}, {'no DBC files' if not defs.dbc_files else 'no DBC signals'})")
        for line in catalog.problems:
            click.echo(f"note: {line}")


@can.command()
@click.argument("can_id")
@click.argument("data")
@click.option("--device-type", default=None, metavar="TYPE",
              help="Decode as for a device of this type (DBC files given as TYPE=FILE).")
@json_option
@setting_options(show=("db_path", "can_dbc"))
def decode(loaded: LoadedSettings, can_id: str, data: str, device_type: str | None, as_json: bool) -> None:
    """Decode one CAN frame by hand with the definitions in force.

    CAN_ID in hex (0x100 or 100), DATA the frame's bytes in hex (spaces and
    colons allowed). Signals the frame is too short for are named.

    \b
    Example:
      gateway can decode 0x100 "C4 09 5A 00 00 00 00 00"
    """
    from protocol.can import can_id_text, parse_can_id

    try:
        number = parse_can_id(can_id)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="CAN_ID") from None
    try:
        frame = bytes.fromhex(data.replace(":", "").replace(" ", "").removeprefix("0x"))
    except ValueError:
        raise click.BadParameter(f"{data!r} is not hex text of whole bytes", param_hint="DATA") from None
    with _definitions(loaded.settings) as defs:
        results, short, errors = defs.catalog.decode(number, frame, device_type)
        known = bool(defs.catalog.table(device_type).get(number))
    if as_json:
        echo_json({"can_id": can_id_text(number), "data": frame.hex(), "defined": known,
                   "signals": [{"name": r.name, "value": r.value, "unit": r.unit, "in_range": r.in_range}
                               for r in results], "too_short_for": short, "errors": errors})
        return
    if not known:
        raise Failure(f"no CAN definition for {can_id_text(number)} (gateway can signals lists them)")
    if results:
        click.echo(tables.table(DECODE_COLUMNS, [[r.name, _num(r.value), r.unit or "",
                                                  "ok" if r.in_range else "OUT OF RANGE"] for r in results],
                                right=(1,)))
    for name in short:
        click.echo(f"{name}: the frame ({len(frame)} bytes) is too short for it")
    for line in errors:
        click.echo(f"not decoded: {line}")


def _num(value: float | None) -> Any:
    if value is None:
        return None
    return int(value) if float(value).is_integer() else round(value, 6)


def _definition_dict(d: Any) -> dict:
    return {"name": d.name, "can_id": f"0x{d.can_id:X}", "start_bit": d.start_bit, "length_bits": d.length,
            "byte_order": d.byte_order, "data_type": d.kind, "scale_factor": d.scale, "offset": d.offset,
            "unit": d.unit, "min_value": d.minimum, "max_value": d.maximum, "origin": d.origin,
            "device_type": d.device_type, "note": d.note}


def _cells(d: Any) -> list:
    return [d.name, f"0x{d.can_id:X}", d.start_bit, d.length, d.byte_order, d.kind, _num(d.scale), _num(d.offset),
            d.unit or "", _num(d.minimum), _num(d.maximum), d.origin, d.device_type or "all", d.note]
