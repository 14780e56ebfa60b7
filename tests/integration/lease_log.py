"""An epoch log of the lease table, for the tests of several instances.

Test-only: `install` puts a trigger into the test's throw-away database
(after the schema is made, before any instance starts) that appends every
change of a `gateway_leases` row (bucket, owner, epoch, expires_at) with the
server's clock at that moment to `lease_log`. The gateway knows nothing of
it. `overlaps` reads it back and names every place where two instances'
ownership of a bucket would overlap.

Why this proves the promise that no device ever has two owners at once: an
instance acts for a bucket only from its take (the compare-and-set that
moved the epoch) until its give-back or, at the latest, a margin before the
expiry it last wrote (actors/rules/ownership.py: the expiry it keeps is the
one it wrote, from the same clock). So its acting window lies inside
[take, give-back or last expiry) of its epoch, and the log holds those
times. If, bucket by bucket, epochs only grow, by one at each take, an owner
never changes without a take, and every take comes after the previous
epoch was given back or its last expiry had passed, then no two windows
overlap. The changes of one row are logged under that row's lock, so the
log's ids are in the order of the changes. A give-back's UPDATE runs a
round after the instance stopped acting for the bucket and told its core
so; a late message of a core whose renewal failed is covered by the
fenced writes (the epoch checked in the write's own transaction).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

INSTALL_SQL = """
CREATE TABLE lease_log (
    id BIGSERIAL PRIMARY KEY,
    bucket INTEGER NOT NULL,
    owner TEXT,
    epoch BIGINT NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    at DOUBLE PRECISION NOT NULL
);
CREATE FUNCTION lease_log_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO lease_log (bucket, owner, epoch, expires_at, at)
    VALUES (NEW.bucket, NEW.owner, NEW.epoch, NEW.expires_at, extract(epoch FROM clock_timestamp()));
    RETURN NULL;
END $$;
CREATE TRIGGER lease_log AFTER INSERT OR UPDATE ON gateway_leases FOR EACH ROW EXECUTE FUNCTION lease_log_row();
"""


@dataclass(frozen=True)
class Change:
    id: int
    bucket: int
    owner: str | None
    epoch: int
    expires_at: float
    at: float  # the server's clock (epoch seconds) when the row changed


def install(url: str) -> None:
    """The gateway's schema (as `gateway db migrate` makes it), then the log."""
    import psycopg

    from storage import migrations
    from storage.db import close_database, open_database

    open_database(url)
    try:
        migrations.migrate()
    finally:
        close_database()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(INSTALL_SQL)


def read(conn) -> list[Change]:
    """Every change so far, in order (`conn`: a psycopg connection)."""
    return [Change(*row) for row in conn.execute(
        "SELECT id, bucket, owner, epoch, expires_at, at FROM lease_log ORDER BY id").fetchall()]


@dataclass(frozen=True)
class Take:
    """A bucket changing hands: `previous` held it until `previous_until`
    (its last expiry; None when it had given the bucket back)."""

    bucket: int
    owner: str
    epoch: int
    at: float
    previous: str | None
    previous_until: float | None


def takes(changes: Iterable[Change]) -> list[Take]:
    out = []
    last: dict[int, Change] = {}
    held_by: dict[int, tuple[str | None, float | None]] = {}
    for c in sorted(changes, key=lambda c: c.id):
        p = last.get(c.bucket)
        if p is not None and c.epoch > p.epoch and c.owner is not None:
            prev_owner, prev_until = held_by.get(c.bucket, (None, None))
            out.append(Take(c.bucket, c.owner, c.epoch, c.at, prev_owner, prev_until))
        last[c.bucket] = c
        held_by[c.bucket] = (c.owner, c.expires_at if c.owner is not None else None)
    return out


def held_at(changes: Iterable[Change], owner: str, at: float) -> set[int]:
    """The buckets whose lease `owner` held at time `at`."""
    last: dict[int, Change] = {}
    for c in sorted(changes, key=lambda c: c.id):
        if c.at <= at:
            last[c.bucket] = c
    return {b for b, c in last.items() if c.owner == owner and c.expires_at > at}


def overlaps(changes: Iterable[Change]) -> list[str]:
    """Every change that breaks the rules above (an empty list: none)."""
    problems = []
    last: dict[int, Change] = {}
    for c in sorted(changes, key=lambda c: c.id):
        p = last.get(c.bucket)
        last[c.bucket] = c
        if p is None:
            continue
        where = f"bucket {c.bucket}, log {p.id} -> {c.id}"
        if c.epoch < p.epoch:
            problems.append(f"{where}: epoch went back from {p.epoch} to {c.epoch}")
        elif c.epoch > p.epoch:
            if c.epoch != p.epoch + 1:
                problems.append(f"{where}: epoch jumped from {p.epoch} to {c.epoch}")
            if c.owner is None:
                problems.append(f"{where}: epoch {c.epoch} taken by no one")
            if p.owner is not None and c.at < p.expires_at:
                problems.append(f"{where}: {c.owner} took epoch {c.epoch} at {c.at:.3f} while {p.owner}'s "
                                f"epoch {p.epoch} ran until {p.expires_at:.3f} ({p.expires_at - c.at:.3f} s early)")
        elif c.owner is not None and c.owner != p.owner:
            problems.append(f"{where}: epoch {c.epoch} passed from {p.owner} to {c.owner} without a take")
    return problems
