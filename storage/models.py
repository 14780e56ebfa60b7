"""The gateway's own tables (PROTOCOL.md, "Tables the Config App shares"),
plus `schema_version`. The Config App's own tables (`devices`,
`telemetry_data`, `event_logs`, its configuration) are not models: the
gateway never creates or reshapes them; storage/config_app.py writes into
them with plain SQL where they exist.

Table and column names are the contract. The Config App inserts rows too
(commands above all), so defaults that matter to it are SQL defaults
(`constraints=[SQL("DEFAULT ...")]`), not only peewee's Python defaults.
Times are REAL seconds since the epoch. JSON columns are TEXT holding JSON.

No foreign keys from telemetry or device_events to gateway_devices:
telemetry may be written before its device row in the same batch order,
and a device's history outlives its registry row.
"""

from __future__ import annotations

import json
from typing import Any

from peewee import SQL, AutoField, BlobField, FloatField, IntegerField, Model, NodeList, TextField

from storage.db import EngineSQL, database

# The current time as epoch seconds, for SQL defaults: julianday arithmetic
# on SQLite, extract(epoch from now()) on PostgreSQL (each database class
# renders its own `now_sql`).
NOW_DEFAULT = [NodeList((SQL("DEFAULT"), EngineSQL("now_sql")))]


def _default(sql: str) -> list[SQL]:
    return [SQL(f"DEFAULT {sql}")]


class JSONField(TextField):
    """TEXT holding JSON. Text another writer stored that is not valid JSON
    is returned as the text itself rather than failing the whole query."""

    def db_value(self, value: Any) -> str | None:
        if value is None:
            return None
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)

    def python_value(self, value: Any) -> Any:
        if value is None or not isinstance(value, (str, bytes)):
            return value
        try:
            return json.loads(value)
        except ValueError:
            return value


class BaseModel(Model):
    class Meta:
        database = database
        legacy_table_names = False


class Device(BaseModel):
    uuid = TextField(primary_key=True)
    device_type = TextField(null=True)
    name = TextField(null=True)
    firmware_version = TextField(null=True)
    hardware_revision = TextField(null=True)
    serial_number = TextField(null=True)
    capabilities = JSONField(null=True)
    ip_address = TextField(null=True)
    mac_address = TextField(null=True)
    boot_id = IntegerField(null=True)
    status_interval = FloatField(null=True)
    status = TextField(null=True, constraints=_default("'offline'"))  # online | offline | discovered
    first_seen = FloatField(null=True)
    last_seen = FloatField(null=True)
    # Columns past the contract's (added by migration 2 to a registry an
    # older version created with the contract's columns only).
    protocol = TextField(default="v1", constraints=_default("'v1'"))  # v1 | fw22
    relay_count = IntegerField(null=True)
    encoding = TextField(default="json", constraints=_default("'json'"))  # json | msgpack, as last used

    class Meta:
        table_name = "gateway_devices"


# Columns the gateway adds to a contract-only registry.
GATEWAY_DEVICE_COLUMNS = ("protocol", "relay_count", "encoding")


class DeviceEvent(BaseModel):
    id = AutoField()
    device_uuid = TextField()
    ts = FloatField()
    event = TextField()
    detail = JSONField(null=True)

    class Meta:
        table_name = "device_events"
        indexes = ((("device_uuid", "ts"), False),)


class Telemetry(BaseModel):
    id = AutoField()
    device_uuid = TextField()
    boot_id = IntegerField(null=True)
    seq = IntegerField(null=True)
    idx = IntegerField(null=True)
    ts = FloatField()
    received_at = FloatField()
    source = TextField()
    metric = TextField()
    value = FloatField(null=True)
    unit = TextField(null=True)
    tag = TextField(null=True)
    raw = BlobField(null=True)

    class Meta:
        table_name = "telemetry"
        # The message identity, unique on (device_uuid, boot_id, seq, idx),
        # is a partial index made by migration 3 (peewee's Meta cannot say
        # WHERE): only rows with a seq can be redeliveries worth refusing.
        indexes = (
            # Per-device time-range queries.
            (("device_uuid", "ts"), False),
        )


class Command(BaseModel):
    id = AutoField()  # INTEGER PRIMARY KEY
    device_uuid = TextField()
    command_type = TextField()
    parameters = JSONField(null=True)
    topic = TextField(default="command", constraints=_default("'command'"))
    status = TextField(default="pending", constraints=_default("'pending'"))
    created_at = FloatField(constraints=NOW_DEFAULT)
    expires_at = FloatField(null=True)
    timeout = FloatField(null=True)  # NULL: the gateway's default
    max_attempts = IntegerField(default=3, constraints=_default("3"))
    attempts = IntegerField(default=0, constraints=_default("0"))
    sent_at = FloatField(null=True)
    completed_at = FloatField(null=True)
    result = JSONField(null=True)
    error_message = TextField(null=True)

    class Meta:
        table_name = "commands"
        # The poller's "pending rows in id order" and the restart scan.
        indexes = ((("status", "id"), False),)


class SchemaVersion(BaseModel):
    version = IntegerField(primary_key=True)
    name = TextField()
    applied_at = FloatField()

    class Meta:
        table_name = "schema_version"


CONTRACT_MODELS = (Device, DeviceEvent, Telemetry, Command)


# -- the fleet uplink (issue 14; migration 6) ---------------------------------


class GatewayMeta(BaseModel):
    """Facts about this database itself: `database_id`, a uuid made once
    by migration 6 and kept for life (the fleet side tells a restored or
    replaced file apart by it)."""

    key = TextField(primary_key=True)
    value = TextField()

    class Meta:
        table_name = "gateway_meta"


class UplinkCursor(BaseModel):
    """Per wire lane, the row ids the fleet broker has acknowledged: JSON
    pairs [[first, last], ...] (actors/rules/acked.py)."""

    lane = TextField(primary_key=True)
    acked = TextField()
    updated_at = FloatField()

    class Meta:
        table_name = "uplink_cursor"


class CommandChange(BaseModel):
    """The uplink's outbox of command state changes: one row per insert of
    a command and per change of its status, written by triggers on
    `commands` (so a change by any writer, the Config App's cancel
    included, is caught), ids never reused."""

    id = AutoField()
    command_id = IntegerField()
    status = TextField()
    at = FloatField(constraints=NOW_DEFAULT)

    class Meta:
        table_name = "uplink_command_changes"
