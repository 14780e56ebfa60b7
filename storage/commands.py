"""The `commands` table: rows the Config App (or the CLI) inserts as
'pending', which the gateway claims, sends and finishes.

Every state change is one `UPDATE ... WHERE id = ? AND status IN (the
states allowed to precede the new one)`, per protocol.lifecycle. The check
and the write are thus one atomic statement: a row the Config App changed
meanwhile (cancel_requested) is simply not matched, and a final command
never changes again, since no transition leaves a final state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from peewee import chunked, fn

from protocol.lifecycle import FINAL, IN_FLIGHT, TRANSITIONS, CommandStatus
from protocol.values import CommandSpec
from storage.db import bound, write_transaction
from storage.models import Command

S = CommandStatus

TOPICS = ("command", "relay/command")

# For each state, the states a command may be in just before it.
PREDECESSORS: dict[CommandStatus, frozenset[CommandStatus]] = {
    new: frozenset(old for old, nexts in TRANSITIONS.items() if new in nexts) for new in CommandStatus
}

_CHUNK = 500  # ids per IN (...) list


@dataclass(frozen=True)
class CommandRecord:
    id: int
    device_uuid: str
    command_type: str
    parameters: Any  # decoded JSON
    topic: str | None
    status: str  # a CommandStatus value, unless another writer stored nonsense
    created_at: float | None
    expires_at: float | None
    timeout: float | None  # None: the gateway's default
    max_attempts: int | None
    attempts: int | None
    sent_at: float | None
    completed_at: float | None
    result: Any  # decoded JSON
    error_message: str | None

    @property
    def is_final(self) -> bool:
        return self.status in {s.value for s in FINAL}


def _records(query, db=None) -> list[CommandRecord]:
    return [CommandRecord(**row) for row in bound(query.dicts(), db)]


def insert_command(
    device_uuid: str,
    command_type: str,
    parameters: Any,
    *,
    topic: str = "command",
    now: float,
    ttl_s: float,
    timeout: float | None = None,
    max_attempts: int = 3,
) -> int:
    """What the Config App or `gateway command send` does: a pending row
    that expires `ttl_s` after `now`. Returns its id."""
    if topic not in TOPICS:
        raise ValueError(f"topic must be one of {', '.join(TOPICS)}, got {topic!r}")
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
    with write_transaction():
        return Command.insert(
            device_uuid=device_uuid,
            command_type=command_type,
            parameters=parameters,
            topic=topic,
            status=S.PENDING.value,
            created_at=now,
            expires_at=now + ttl_s,
            timeout=timeout,
            max_attempts=max_attempts,
            attempts=0,
        ).execute()


def pending_commands(limit: int = 500, *, db=None) -> list[CommandRecord]:
    """Pending rows, oldest (lowest id) first."""
    q = Command.select().where(Command.status == S.PENDING.value).order_by(Command.id).limit(limit)
    return _records(q, db)


def claim(ids: Iterable[int], now: float, *, default_ttl_s: float | None = None) -> list[CommandRecord]:
    """Move the given rows from pending to queued in one transaction and
    return those claimed (id order). Rows no longer pending (cancelled or
    cancel_requested by the Config App, claimed already) are skipped.

    Rows the Config App inserted without times get created_at = now and,
    if `default_ttl_s` is given, expires_at = created_at + default_ttl_s.
    """
    wanted = list(dict.fromkeys(int(i) for i in ids))
    if not wanted:
        return []
    pending = Command.status == S.PENDING.value
    values: dict[Any, Any] = {Command.status: S.QUEUED.value, Command.created_at: fn.COALESCE(Command.created_at, now)}
    if default_ttl_s is not None:
        values[Command.expires_at] = fn.COALESCE(Command.expires_at, fn.COALESCE(Command.created_at, now) + default_ttl_s)
    claimed: list[int] = []
    # One UPDATE ... RETURNING per chunk: the rows it reports are exactly
    # the ones it moved, on SQLite (which holds the write lock anyway) and
    # on PostgreSQL, where a row cancelled by another client between a
    # SELECT and the UPDATE would otherwise be reported as claimed.
    with write_transaction():
        for chunk in chunked(wanted, _CHUNK):
            query = Command.update(values).where(Command.id.in_(chunk) & pending).returning(Command.id)
            claimed += [i for (i,) in query.tuples().execute()]
        records = []
        for chunk in chunked(sorted(claimed), _CHUNK):
            records += _records(Command.select().where(Command.id.in_(chunk)).order_by(Command.id))
    return records


def transition(
    command_id: int,
    new_status: CommandStatus | str,
    now: float,
    *,
    attempts: int | None = None,
    result: Any = None,
    error_message: str | None = None,
) -> bool:
    """Move a command to `new_status` if protocol.lifecycle allows it from
    the state it is in now; False (nothing written) otherwise.

    Sets sent_at = now on 'sent' (the latest send, for the retry timer),
    completed_at = now on a final state; attempts, result and
    error_message are written when given. ValueError for an unknown status.
    """
    new = CommandStatus(new_status)
    allowed = PREDECESSORS[new]
    if not allowed:
        return False
    values: dict[Any, Any] = {Command.status: new.value}
    if new is S.SENT:
        values[Command.sent_at] = now
    if new in FINAL:
        values[Command.completed_at] = now
    if attempts is not None:
        values[Command.attempts] = attempts
    if result is not None:
        values[Command.result] = result
    if error_message is not None:
        values[Command.error_message] = error_message
    with write_transaction():
        changed = (
            Command.update(values)
            .where((Command.id == command_id) & Command.status.in_(sorted(s.value for s in allowed)))
            .execute()
        )
    return changed == 1


def request_cancel(command_id: int, now: float) -> bool:
    """What the Config App does to cancel (`gateway command cancel`)."""
    return transition(command_id, S.CANCEL_REQUESTED, now)


def cancel_requested(*, db=None) -> list[CommandRecord]:
    """Rows whose cancellation the Config App asked for, id order. A row
    with sent_at set had been sent: it cannot be unsent, so the gateway
    writes back the state it is really in instead of 'cancelled'."""
    q = Command.select().where(Command.status == S.CANCEL_REQUESTED.value).order_by(Command.id)
    return _records(q, db)


def in_flight(*, db=None) -> list[CommandRecord]:
    """Rows the gateway held when it stopped: queued, sent, accepted
    (protocol.lifecycle.IN_FLIGHT), id order. Read at start-up. Rows in
    cancel_requested are not included: `cancel_requested()` reports them
    (with sent_at telling whether they went out), and pending rows are the
    poller's."""
    q = Command.select().where(Command.status.in_(sorted(s.value for s in IN_FLIGHT))).order_by(Command.id)
    return _records(q, db)


def count_by_status(*, db=None) -> dict[str, int]:
    """How many commands are in each state (states with none are left out)."""
    query = Command.select(Command.status, fn.COUNT(Command.id).alias("n")).group_by(Command.status).tuples()
    return {status: n for status, n in bound(query, db)}


def get_command(command_id: int, *, db=None) -> CommandRecord | None:
    rows = _records(Command.select().where(Command.id == command_id), db)
    return rows[0] if rows else None


def list_commands(
    device_uuid: str | None = None, status: CommandStatus | str | None = None, limit: int = 100, *, db=None
) -> list[CommandRecord]:
    """Commands newest (highest id) first, optionally filtered."""
    q = Command.select()
    if device_uuid is not None:
        q = q.where(Command.device_uuid == device_uuid)
    if status is not None:
        q = q.where(Command.status == CommandStatus(status).value)
    return _records(q.order_by(Command.id.desc()).limit(limit), db)


def to_spec(
    record: CommandRecord, default_timeout: float, *, default_ttl: float = 300.0, default_max_attempts: int = 3
) -> CommandSpec:
    """The device logic's view of a row, with the gateway's defaults filled
    in where the row leaves a value NULL (timeout always may; a row the
    Config App wrote by hand may lack more)."""
    created_at = record.created_at if record.created_at is not None else 0.0
    expires_at = record.expires_at if record.expires_at is not None else created_at + default_ttl
    return CommandSpec(
        id=record.id,
        device_uuid=record.device_uuid,
        command_type=record.command_type,
        parameters=record.parameters if record.parameters is not None else {},
        topic=record.topic or "command",
        timeout=record.timeout if record.timeout is not None else default_timeout,
        max_attempts=record.max_attempts if record.max_attempts is not None else default_max_attempts,
        created_at=created_at,
        expires_at=expires_at,
    )
