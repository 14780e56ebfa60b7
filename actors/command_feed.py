"""CommandFeed: picks up what the Config App writes into `commands`.

Every `command_poll_ms` it asks its own read connection whether anything
changed (storage's `ChangeWatch`: `PRAGMA data_version` on SQLite, the
NOTIFY of a trigger on `commands` on PostgreSQL), so while nothing changed
the poll costs no query. New
`pending` rows are claimed through the DbWriter (the only writer), which
hands them to core; `cancel_requested` rows go to core once each.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from actors.base import GatewayActor
from actors.db_writer import command_state
from actors.messages import (
    CancelsRequested,
    ClaimCommands,
    ClaimDeferred,
    CommandsRequested,
    Deadline,
    FeedOwnership,
    ReloadCommands,
    Schedule,
)
from actors.settings import GatewaySettings
from protocol.buckets import bucket_of
from storage import commands as command_repo
from storage.db import ChangeWatch, DatabaseBusy, open_reader
from storage.errors import DatabaseGone

logger = logging.getLogger("autocore.commands")

CLAIM_LIMIT = 500


class CommandFeed(GatewayActor):
    name = "CommandFeed"
    process = "store"

    def __init__(self, settings: GatewaySettings, writer: Any, scheduler: Any, channel: Any) -> None:
        super().__init__()
        self.settings = settings
        self.interval_s = settings.command_poll_ms / 1000.0
        self.writer = writer
        self.scheduler = scheduler
        self.channel = channel
        self.reader = None
        self.watch: ChangeWatch | None = None
        self.reported_cancels: set[int] = set()
        self._counts: dict[str, int] = {}
        self._count_watch: ChangeWatch | None = None
        self.polls = 0
        self.queries = 0
        # Several instances: bucket -> epoch of the leases held (from the
        # LeaseKeeper); None with one instance (every command is ours).
        self.owned: dict[int, int] | None = {} if settings.share_group else None

    def on_start(self) -> None:
        self.reader = open_reader(self.settings.database, busy_timeout_ms=self.settings.db_busy_timeout_ms)
        self.watch = ChangeWatch(self.reader, "commands")
        self._next(time.time())

    def on_stop(self) -> None:
        if self.reader is not None:
            self.reader.close()

    def _next(self, now: float) -> None:
        self.scheduler.tell(Schedule("command-feed", now + self.interval_s, self.actor_ref))

    def handle(self, message: Any) -> Any:
        if isinstance(message, Deadline):
            try:
                self.poll()
            except DatabaseBusy:
                self.counters["busy"] += 1
                if self.watch is not None:
                    self.watch.again()  # the change it saw is not acted on yet
            except DatabaseGone as exc:
                # PostgreSQL restarting, or the network cut the connection:
                # the next poll opens a new one (and looks at every row).
                self.counters["database_gone"] += 1
                if self.counters["database_gone"] == 1 or self.counters["database_gone"] % 600 == 0:
                    logger.warning("the command feed cannot reach the database (%s); polling on", exc)
                if self.watch is not None:
                    self.watch.again()
            self._next(time.time())
        elif isinstance(message, ClaimDeferred):
            if self.watch is not None:
                self.watch.again()
        elif isinstance(message, FeedOwnership):
            self.owned = dict(message.epochs)
            if message.gained and self.watch is not None:
                self.watch.again()  # pending rows of devices just gained are ours to claim
        elif isinstance(message, ReloadCommands):
            self._reload(message.device_uuid)
        else:
            return super().handle(message)
        return None

    def poll(self) -> None:
        self.polls += 1
        assert self.watch is not None, "poll() before on_start()"
        if not self.watch.changed():
            return
        self.queries += 1
        pending = command_repo.pending_commands(CLAIM_LIMIT, db=self.reader)
        if pending and self.owned is not None:
            # Several instances: the owner of the device claims it (the
            # claim is compare-and-set on `pending`, and fenced by the lease).
            n = self.settings.lease_buckets
            fences = tuple((r.id, b, self.owned[b]) for r in pending
                           if (b := bucket_of(r.device_uuid, n)) in self.owned)
            self.counters["pending_not_owned"] += len(pending) - len(fences)
            if fences:
                self.writer.tell(ClaimCommands(tuple(f[0] for f in fences), feed=self.actor_ref, fences=fences))
        elif pending:
            self.writer.tell(ClaimCommands(tuple(r.id for r in pending), feed=self.actor_ref))
        if len(pending) >= CLAIM_LIMIT:
            self.watch.again()  # more to take: look again next time
        cancels = command_repo.cancel_requested(db=self.reader)
        current = {r.id for r in cancels}
        new = [(r.device_uuid, r.id) for r in cancels if r.id not in self.reported_cancels]
        self.reported_cancels = current
        if new:
            self.counters["cancels_reported"] += len(new)
            self.channel.send(CancelsRequested(tuple(new)))

    def _reload(self, device_uuid: str) -> None:
        states = tuple(command_state(r, self.settings)
                       for r in command_repo.in_flight(db=self.reader) if r.device_uuid == device_uuid)
        if states:
            self.channel.send(CommandsRequested(states))

    def summary(self) -> str:
        return f"{self.polls} polls, {self.queries} queries"

    def state(self) -> dict:
        return {"poll_ms": self.settings.command_poll_ms, "polls": self.polls, "queries": self.queries,
                "data_version": self.watch.version if self.watch else None,
                "cancels_waiting": len(self.reported_cancels), "by_status": self._by_status()}

    def _by_status(self) -> dict[str, int]:
        """Commands per state, counted again only when the table changed
        (a watch of its own: the poll's must not be consumed here)."""
        if self.reader is None:
            return {}
        if self._count_watch is None:
            self._count_watch = ChangeWatch(self.reader, "commands")
        try:
            if self._count_watch.changed():
                self._counts = command_repo.count_by_status(db=self.reader)
        except (DatabaseBusy, DatabaseGone):
            self._count_watch.again()  # the last counts stand; count next time
        return dict(self._counts)
