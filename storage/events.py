"""The device history (`device_events`): announce, online, offline,
reboot, discovered, the 2.2 boards' error, safety_shutoff and
relay_change, and relay commands others sent them (relay_command,
relay_command_result); dialect_change, dialect_conflict (a 2.2 message a v1
device with a boot_id refused) and the operator's forgotten. Append-only. Each event is also copied into the Config App's `event_logs`
where that table exists."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from peewee import chunked

from storage import config_app
from storage.db import bound, database, write_transaction
from storage.models import DeviceEvent

# Rows per INSERT statement: 4 parameters each, far below SQLite's limit;
# events are few, so peewee's insert_many is fast enough here.
_CHUNK = 250


@dataclass(frozen=True)
class EventRecord:
    id: int
    device_uuid: str
    ts: float
    event: str
    detail: Any  # decoded JSON, or None


def append_events(rows: Iterable[tuple[str, float, str, Any]]) -> int:
    """Append (device_uuid, ts, event, detail) rows; `detail` is any
    JSON-encodable value (stored as JSON text) or None. Returns the count."""
    rows = list(rows)
    if not rows:
        return 0
    fields = [DeviceEvent.device_uuid, DeviceEvent.ts, DeviceEvent.event, DeviceEvent.detail]
    with write_transaction():
        for chunk in chunked(rows, _CHUNK):
            # An empty returning(): no RETURNING id on PostgreSQL (peewee adds
            # one to every insert there), a bulk insert wants no ids back.
            DeviceEvent.insert_many(chunk, fields=fields).returning().as_rowcount().execute()
        config_app.log_events(database.connection(), rows)
    return len(rows)


def list_events(
    device_uuid: str | None = None, limit: int = 100, *, event: str | None = None, since: float | None = None, db=None
) -> list[EventRecord]:
    """Events newest first (by ts, then by insertion)."""
    q = DeviceEvent.select()
    if device_uuid is not None:
        q = q.where(DeviceEvent.device_uuid == device_uuid)
    if event is not None:
        q = q.where(DeviceEvent.event == event)
    if since is not None:
        q = q.where(DeviceEvent.ts >= since)
    q = q.order_by(DeviceEvent.ts.desc(), DeviceEvent.id.desc()).limit(limit)
    return [EventRecord(**row) for row in bound(q.dicts(), db)]
