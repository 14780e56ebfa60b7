"""The lease table of several gateway instances (issue 13), on both engines.

`gateway_leases` holds one row per ownership bucket (protocol/buckets.py):
its owner, an epoch that grows every time the bucket changes hands (the
fencing token), and when the lease runs out. Every write is a
compare-and-set in one UPDATE, so two instances racing for a row cannot
both win, on SQLite (one writer at a time) as on PostgreSQL (the row lock
of the UPDATE; the loser's WHERE no longer matches once the winner
commits). `gateway_instances` holds each instance's heartbeat, for the
fair share and `gateway inspect cluster`.

A write that must only happen while its instance still owns the device
adds `fenced(bucket, owner, epoch)` to its WHERE: the row changes only if
the lease is still that instance's, at that epoch, in the same statement.

The rules of who takes what live in actors/rules/ownership.py; this module
only reads and writes.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator

from peewee import JOIN, FloatField, IntegerField, TextField, Tuple, fn

from storage.db import bound, database, write_transaction
from storage.models import BaseModel, JSONField
from storage.url import POSTGRESQL, SQLITE


# (bucket, epoch) pairs in one statement's IN list.
PAIRS_PER_STATEMENT = 500


class BucketLease(BaseModel):
    bucket = IntegerField(primary_key=True)
    owner = TextField(null=True)
    epoch = IntegerField(default=0)
    expires_at = FloatField(default=0.0)

    class Meta:
        table_name = "gateway_leases"


class GatewayInstance(BaseModel):
    instance_id = TextField(primary_key=True)
    started_at = FloatField()
    heartbeat_at = FloatField()
    detail = JSONField(null=True)  # share group, host, pid, what `inspect cluster` shows

    class Meta:
        table_name = "gateway_instances"


MODELS = (BucketLease, GatewayInstance)


def create_tables() -> None:
    """Both tables, if missing (a migration calls this)."""
    database.create_tables(MODELS, safe=True)


def ensure_buckets(count: int) -> int:
    """Rows for buckets 0 .. count - 1, free; existing rows are kept.
    Returns how many were added."""
    have = {b for (b,) in BucketLease.select(BucketLease.bucket).tuples()}
    missing = [{"bucket": b, "owner": None, "epoch": 0, "expires_at": 0.0} for b in range(count) if b not in have]
    if missing:
        with write_transaction():
            for start in range(0, len(missing), 500):
                BucketLease.insert_many(missing[start:start + 500]).on_conflict_ignore().execute()
    return len(missing)


def read() -> list[tuple[int, str | None, int, float]]:
    """(bucket, owner, epoch, expires_at) of every bucket."""
    return list(BucketLease.select(BucketLease.bucket, BucketLease.owner, BucketLease.epoch, BucketLease.expires_at)
                .order_by(BucketLease.bucket).tuples())


def take(bucket: int, owner: str, read_epoch: int, now: float, ttl_s: float) -> int | None:
    """Take a free or expired bucket whose epoch is still the one read;
    the new epoch, or None when someone else came first."""
    return take_many(owner, {bucket: read_epoch}, now, ttl_s).get(bucket)


def take_many(owner: str, wanted: dict[int, int], now: float, ttl_s: float) -> dict[int, int]:
    """Take free or expired buckets (bucket -> the epoch read) whose epoch
    is still the one read, in one transaction; bucket -> the new epoch of
    those taken (the others went to someone else first).

    One UPDATE ... RETURNING per 500 buckets: a dead instance's share of
    256 buckets taken one transaction each was about a hundred round trips
    in the round that should end its take-over."""
    if not wanted:
        return {}
    taken: dict[int, int] = {}
    with write_transaction():
        for at_epochs in _at_epochs(wanted):
            takeable = at_epochs & (BucketLease.owner.is_null() | (BucketLease.expires_at <= now))
            query = (BucketLease.update(owner=owner, epoch=BucketLease.epoch + 1, expires_at=now + ttl_s)
                     .where(_skipping_locked(takeable))
                     .returning(BucketLease.bucket, BucketLease.epoch))
            taken.update(query.tuples().execute())
    return taken


def _skipping_locked(takeable):
    """On PostgreSQL, only the rows no other transaction has locked: two
    instances taking overlapping sets at once (survivors woken by the same
    expiry) otherwise lock rows in different orders and deadlock, a second
    lost and the round failed; a row skipped is someone else's take, as a
    compare-and-set lost. A take then never waits, so it can close no
    cycle with a renewal or a release (each of one owner's own rows).
    SQLite has one writer at a time: nothing to skip."""
    if getattr(database, "engine", SQLITE) != POSTGRESQL:
        return takeable
    free = (BucketLease.select(BucketLease.bucket).where(takeable).order_by(BucketLease.bucket)
            .for_update("FOR UPDATE SKIP LOCKED"))
    return BucketLease.bucket.in_(free) & takeable


def renew(owner: str, held: dict[int, int], now: float, ttl_s: float) -> tuple[list[int], list[int]]:
    """Move the expiry of the buckets `owner` holds (bucket -> epoch) to
    now + ttl_s, in one transaction; (renewed, lost): a bucket is lost when
    its row no longer has this owner at this epoch.

    One UPDATE ... WHERE (bucket, epoch) IN (...) RETURNING per 500 buckets,
    not one statement per bucket: with 256 buckets that was a round trip
    and a peewee query each, about a quarter of the store process's time
    while it drained a backlog (bench/profile_scaleout.py)."""
    if not held:
        return [], []
    renewed: set[int] = set()
    with write_transaction():
        for at_epochs in _at_epochs(held):
            query = (BucketLease.update(expires_at=now + ttl_s)
                     .where((BucketLease.owner == owner) & at_epochs)
                     .returning(BucketLease.bucket))
            renewed.update(b for (b,) in query.tuples().execute())
    return [b for b in sorted(held) if b in renewed], [b for b in sorted(held) if b not in renewed]


def release(owner: str, held: dict[int, int]) -> list[int]:
    """Give buckets back (their epoch stays: the next owner's take moves
    it). Returns the buckets released."""
    done: set[int] = set()
    with write_transaction():
        for at_epochs in _at_epochs(held):
            query = (BucketLease.update(owner=None, expires_at=0.0)
                     .where((BucketLease.owner == owner) & at_epochs)
                     .returning(BucketLease.bucket))
            done.update(b for (b,) in query.tuples().execute())
    return [b for b in sorted(held) if b in done]


def _at_epochs(pairs: dict[int, int]) -> Iterator[Any]:
    """WHERE terms `(bucket, epoch) IN (...)` over `pairs` (bucket ->
    epoch), one per PAIRS_PER_STATEMENT, in bucket order."""
    items = sorted(pairs.items())
    for start in range(0, len(items), PAIRS_PER_STATEMENT):
        chunk = items[start:start + PAIRS_PER_STATEMENT]
        yield Tuple(BucketLease.bucket, BucketLease.epoch).in_([Tuple(b, e) for b, e in chunk])


def fenced(bucket: int, owner: str, epoch: int):
    """A WHERE term: true while `owner` holds `bucket` at `epoch`."""
    return fn.EXISTS(BucketLease.select(BucketLease.bucket)
                     .where((BucketLease.bucket == bucket) & (BucketLease.owner == owner)
                            & (BucketLease.epoch == epoch)))


def holds(bucket: int, owner: str, epoch: int) -> bool:
    """Whether `owner` holds `bucket` at `epoch` now (read inside the
    writer's transaction, before the writes it guards: the same test as
    `fenced`, once for all of one device's statements)."""
    return (BucketLease.select(BucketLease.bucket)
            .where((BucketLease.bucket == bucket) & (BucketLease.owner == owner) & (BucketLease.epoch == epoch))
            .exists())


def heartbeat(instance_id: str, now: float, detail: dict | None = None, starting: bool = False) -> None:
    """This instance is alive at `now`; `starting` (its first round) also
    moves `started_at`, which a run before may have left."""
    values = {"heartbeat_at": now, "detail": detail, **({"started_at": now} if starting else {})}
    with write_transaction():
        updated = (GatewayInstance.update(**values)
                   .where(GatewayInstance.instance_id == instance_id).execute())
        if not updated:
            (GatewayInstance.insert(instance_id=instance_id, started_at=now, heartbeat_at=now, detail=detail)
             .on_conflict_ignore().execute())


def leave(instance_id: str, now: float, detail: dict | None = None) -> None:
    """A clean stop: the heartbeat goes (the others count one live instance
    fewer at once, and take the buckets just given back up to their new
    fair share at their next round instead of a lease later); the row stays
    for `gateway inspect cluster`, with when it stopped."""
    with write_transaction():
        (GatewayInstance.update(heartbeat_at=0.0, detail={**(detail or {}), "stopped_at": now})
         .where(GatewayInstance.instance_id == instance_id).execute())


def heartbeats() -> list[tuple[str, float]]:
    return list(GatewayInstance.select(GatewayInstance.instance_id, GatewayInstance.heartbeat_at).tuples())


def cluster(now: float, *, db=None) -> list[dict]:
    """Every instance of the table with the buckets it holds (leases not yet
    expired) and its soonest expiry: `gateway inspect cluster`."""
    held = (BucketLease.select(BucketLease.owner, fn.COUNT(BucketLease.bucket).alias("held"),
                               fn.MIN(BucketLease.expires_at).alias("soonest"))
            .where(BucketLease.owner.is_null(False) & (BucketLease.expires_at > now))
            .group_by(BucketLease.owner).alias("held"))
    rows = (GatewayInstance.select(GatewayInstance.instance_id, GatewayInstance.started_at,
                                   GatewayInstance.heartbeat_at, GatewayInstance.detail, held.c.held, held.c.soonest)
            .join(held, JOIN.LEFT_OUTER, on=(held.c.owner == GatewayInstance.instance_id))
            .order_by(GatewayInstance.instance_id).dicts())
    out = []
    for r in bound(rows, db):
        out.append({"instance_id": r["instance_id"], "started_at": r["started_at"],
                    "heartbeat_age_s": round(now - r["heartbeat_at"], 3) if r["heartbeat_at"] > 0 else None,
                    "stopped_at": (r["detail"] or {}).get("stopped_at"), "buckets": r["held"] or 0,
                    "expires_in_s": None if r["soonest"] is None else round(r["soonest"] - now, 3),
                    "detail": r["detail"]})
    return out


def forget_instances(instance_ids: Iterable[str]) -> int:
    """Remove instances from the table (an operator retiring one)."""
    ids = list(instance_ids)
    if not ids:
        return 0
    with write_transaction():
        return GatewayInstance.delete().where(GatewayInstance.instance_id.in_(ids)).execute()
