"""What core may act for when several instances share the devices (issue 13).

The store's LeaseKeeper holds the leases (actors/rules/ownership.py) and
tells core, every round, the buckets it may act for, each with its epoch,
and until when (`Owned`). This is core's reading of that: which device it
owns now and the epoch to stamp on the device's writes. Pure; time is an
argument. Without a share group core has none of this and acts for all.

The view is replaced whole on each update (one attribute), so the device
actors may read it from their own threads while the supervisor updates it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from protocol.buckets import DEFAULT_BUCKETS, bucket_of


@dataclass(frozen=True)
class View:
    epochs: dict[int, int] = field(default_factory=dict)  # bucket -> epoch (never mutated once made)
    act_until: float = 0.0


@dataclass(frozen=True)
class Change:
    gained: frozenset[int]  # buckets held now and not before (or at another epoch)
    lost: frozenset[int]  # buckets held before and not now (or at another epoch)


class OwnedBuckets:
    def __init__(self, buckets: int = DEFAULT_BUCKETS) -> None:
        self.buckets = buckets
        self.view = View()
        self.updates = 0
        self.lost = 0  # buckets that went away (as core saw it)
        self.expires_at: float | None = None

    def update(self, epochs: dict[int, int], act_until: float, expires_at: float | None = None) -> Change:
        old = self.view.epochs
        gained = frozenset(b for b, e in epochs.items() if old.get(b) != e)
        lost = frozenset(b for b, e in old.items() if epochs.get(b) != e)
        self.view = View(dict(epochs), act_until)
        self.updates += 1
        self.lost += len(lost)
        self.expires_at = expires_at
        return Change(gained, lost)

    def bucket(self, uuid: str) -> int:
        return bucket_of(uuid, self.buckets)

    def epoch_of(self, uuid: str, now: float) -> int | None:
        view = self.view
        if now >= view.act_until:
            return None
        return view.epochs.get(bucket_of(uuid, self.buckets))

    def acts_for_bucket(self, bucket: int, now: float) -> bool:
        view = self.view
        return now < view.act_until and bucket in view.epochs

    def owns(self, uuid: str, now: float) -> bool:
        return self.epoch_of(uuid, now) is not None

    def holds(self, uuid: str) -> bool:
        """Whether the device's bucket is held, acted for now or not (a
        renewal late past the margin stops acting, not holding)."""
        return bucket_of(uuid, self.buckets) in self.view.epochs

    def state(self, now: float) -> dict:
        view = self.view
        acting = now < view.act_until
        return {"buckets": self.buckets, "held": len(view.epochs), "acting": len(view.epochs) if acting else 0,
                "act_for_s": round(max(0.0, view.act_until - now), 3),
                "expires_in_s": None if self.expires_at is None else round(self.expires_at - now, 3),
                "lost": self.lost, "updates": self.updates}
