"""The device registry (`gateway_devices`).

Rows are written by the gateway (first message, announce, liveness); an
update touches only the columns it means to change, and an update of a row
that disappeared (deleted by hand) recreates it where that makes sense.
Every write also brings the device's row in the Config App's `devices` up
to date where that table exists (storage/config_app.py), in the same
transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from peewee import fn

from protocol.values import DeviceFacts, Dialect, Discovery, Encoding
from storage import config_app
from storage.db import SQLITE, bound, database, greatest, sqlite_errors, write_transaction
from storage.models import Device

STATUSES = ("online", "offline", "discovered")


@dataclass(frozen=True)
class DeviceRecord:
    uuid: str
    device_type: str | None
    name: str | None
    firmware_version: str | None
    hardware_revision: str | None
    serial_number: str | None
    capabilities: Any  # a tuple of words, or a mapping kept as given (2.2)
    ip_address: str | None
    mac_address: str | None
    boot_id: int | None
    status_interval: float | None
    status: str | None
    first_seen: float | None
    last_seen: float | None
    protocol: str
    relay_count: int | None
    encoding: str
    owner_name: str | None = None  # the name the owner gave it in the Config App, if any

    @property
    def display_name(self) -> str | None:
        return self.owner_name or self.name


def _record(row: dict, owner_name: str | None = None) -> DeviceRecord:
    caps = row["capabilities"]
    row["capabilities"] = tuple(caps) if isinstance(caps, list) else (() if caps is None else caps)
    return DeviceRecord(**row, owner_name=owner_name)


def _project(uuids, now: float) -> None:
    config_app.project_devices(database.connection(), uuids, now)


def _seen_at_least(now: float):
    # last_seen never goes backwards (batches may carry older readings).
    return greatest(fn.COALESCE(Device.last_seen, now), now)


def _value(enum_type, v) -> str:
    return enum_type(v).value


def ensure_device(uuid: str, now: float, dialect: Dialect | str) -> bool:
    """Create the device on its first valid message (status online,
    device_type 'unknown' until it announces). True if it was new; an
    existing row is left as it is."""
    with write_transaction():
        inserted = (
            Device.insert(
                uuid=uuid,
                device_type="unknown",
                status="online",
                first_seen=now,
                last_seen=now,
                protocol=_value(Dialect, dialect),
            )
            .on_conflict_ignore()
            .as_rowcount()
            .execute()
        )
        if inserted:
            _project([uuid], now)
    return inserted == 1


_FACT_COLUMNS = (
    "device_type",
    "firmware_version",
    "ip_address",
    "mac_address",
    "relay_count",
    "hardware_revision",
    "serial_number",
    "name",
    "boot_id",
    "status_interval",
)


def _fact_values(facts: DeviceFacts) -> dict[str, Any]:
    values = {c: getattr(facts, c) for c in _FACT_COLUMNS if getattr(facts, c) is not None}
    # DeviceFacts cannot tell "no capabilities" from "not given" (both are
    # the default ()), so an empty set never erases what is stored (e.g.
    # what the Config App registered for a 2.2 board).
    if facts.capabilities:
        caps = facts.capabilities
        values["capabilities"] = list(caps) if isinstance(caps, (tuple, list, set, frozenset)) else caps
    return values


def upsert_facts(
    uuid: str, facts: DeviceFacts, now: float, dialect: Dialect | str, encoding: Encoding | str,
    status: str | None = None,
) -> bool:
    """Record what a device says about itself (v1 announce, 2.2 online
    status): the facts that are not None, the dialect, the encoding it
    used, last_seen, and `status` if given (liveness decides it; the writer
    passes it here to save a second UPDATE of the row); a new row starts
    online unless `status` says otherwise. True if the device was new."""
    values = _fact_values(facts)
    values["protocol"] = _value(Dialect, dialect)
    values["encoding"] = _value(Encoding, encoding)
    if status is not None:
        if status not in STATUSES:
            raise ValueError(f"device status must be one of {', '.join(STATUSES)}, got {status!r}")
        values["status"] = status
    with write_transaction():
        updated = Device.update({**values, "last_seen": _seen_at_least(now)}).where(Device.uuid == uuid).execute()
        if not updated:
            values.setdefault("device_type", "unknown")
            values.setdefault("status", "online")
            Device.insert(uuid=uuid, first_seen=now, last_seen=now, **values).execute()
        _project([uuid], now)
    return not updated


def register_discovered(uuid: str, discovery: Discovery, now: float) -> bool:
    """A device seen only through discovery: status 'discovered' until it
    announces. True if it was new; a known device is not changed."""
    with write_transaction():
        inserted = (
            Device.insert(
                uuid=uuid,
                device_type=discovery.device_type or "unknown",
                ip_address=discovery.ip_address,
                mac_address=discovery.mac_address,
                status="discovered",
                first_seen=now,
                last_seen=now,
            )
            .on_conflict_ignore()
            .as_rowcount()
            .execute()
        )
        if inserted:
            _project([uuid], now)
    return inserted == 1


def set_status(uuid: str, status: str, now: float, boot_id: int | None = None) -> None:
    """Write the liveness verdict. 'online' is a sign of life, so it also
    moves last_seen up to `now`; 'offline' keeps last_seen (the last time a
    message came). A row the Config App deleted meanwhile is recreated."""
    if status not in STATUSES:
        raise ValueError(f"device status must be one of {', '.join(STATUSES)}, got {status!r}")
    values: dict[Any, Any] = {Device.status: status}
    if status == "online":
        values[Device.last_seen] = _seen_at_least(now)
    if boot_id is not None:
        values[Device.boot_id] = boot_id
    with write_transaction():
        if not Device.update(values).where(Device.uuid == uuid).execute():
            Device.insert(
                uuid=uuid, device_type="unknown", status=status, first_seen=now, last_seen=now, boot_id=boot_id
            ).execute()
        _project([uuid], now)


def set_protocol(uuid: str, dialect: Dialect | str) -> bool:
    """Record the device's dialect; False if there is no such device."""
    with write_transaction():
        return Device.update(protocol=_value(Dialect, dialect)).where(Device.uuid == uuid).execute() == 1


def forget_device(uuid: str) -> bool:
    """Remove the device from the registry (the operator's `gateway devices
    forget`): its next message registers it afresh, in whatever dialect it
    speaks. Its telemetry, events and commands stay, and so does its row in
    the Config App's `devices` (that program's own). False if there was no
    such device."""
    with write_transaction():
        return Device.delete().where(Device.uuid == uuid).execute() == 1


def set_encoding(uuid: str, encoding: Encoding | str) -> bool:
    """Record the encoding the device last used (replies go out in it);
    False if there is no such device."""
    with write_transaction():
        return Device.update(encoding=_value(Encoding, encoding)).where(Device.uuid == uuid).execute() == 1


def touch_last_seen(items: Iterable[tuple[str, float]]) -> int:
    """Move last_seen forward for many devices at once (one prepared
    statement for all: at thousands of devices the peewee-built UPDATE was
    a fifth of the store process); return how many rows were updated.
    Several items for one device count once, with their latest time."""
    latest: dict[str, float] = {}
    for uuid, ts in items:
        if ts > latest.get(uuid, float("-inf")):
            latest[uuid] = ts
    if not latest:
        return 0
    with write_transaction():
        if database.engine == SQLITE:
            conn = database.connection()
            before = conn.total_changes
            with sqlite_errors():
                conn.executemany(_TOUCH_SQL, [(ts, uuid) for uuid, ts in latest.items()])
            touched = conn.total_changes - before
        else:
            from storage import postgres

            touched = postgres.touch_last_seen(database, Device._meta.table_name, latest)
        _project(latest, max(latest.values()))
        return touched


_TOUCH_SQL = f"UPDATE {Device._meta.table_name} SET last_seen = MAX(IFNULL(last_seen, ?1), ?1) WHERE uuid = ?2"


def names(uuids: Iterable[str] | None = None, *, db=None) -> dict[str, str]:
    """The names the owner gave these devices (all, with None) in the
    Config App, where it has them; {} otherwise."""
    conn = (database if db is None else db).connection()
    with sqlite_errors():
        return config_app.device_names(conn, uuids)


def get_device(uuid: str, *, db=None, owner_name: bool = False) -> DeviceRecord | None:
    """The device's registry row; with `owner_name`, also the name the
    owner gave it in the Config App (an extra lookup: the writer's calls
    leave it out)."""
    rows = list(bound(Device.select().where(Device.uuid == uuid).dicts(), db))
    if not rows:
        return None
    return _record(rows[0], names([uuid], db=db).get(uuid) if owner_name else None)


def list_devices(status: str | None = None, *, db=None, owner_names: bool = True) -> list[DeviceRecord]:
    """Devices in uuid order, optionally only those with `status`; with
    the Config App's names for them unless `owner_names` is False."""
    q = Device.select()
    if status is not None:
        q = q.where(Device.status == status)
    rows = list(bound(q.order_by(Device.uuid).dicts(), db))
    given = names(None, db=db) if owner_names and rows else {}
    return [_record(row, given.get(row["uuid"])) for row in rows]


def seen_after(since: float, *, db=None) -> list[tuple[str, float]]:
    """(uuid, last_seen) of the devices seen after `since` (several
    instances: the owner of a device learns of its messages that another
    instance received)."""
    q = Device.select(Device.uuid, Device.last_seen).where(Device.last_seen > since)
    return [(u, float(at)) for u, at in bound(q.tuples(), db)]
