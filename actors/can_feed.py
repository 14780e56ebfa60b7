"""CanFeed: keeps the CAN definitions in force current while the gateway runs.

Every `can_poll_ms` it asks storage's `ChangeWatch` whether the database
changed, on its own read connection (as CommandFeed does; `PRAGMA
data_version` on SQLite): unchanged, the poll costs one pragma and a stat
of each DBC file. (On PostgreSQL there is no Config App table to read, and
a poll always looks.) Changed (another connection committed: the
Config App, or our own writer), it reads `can_signals` again in one SELECT
and builds a new catalog only if the rows or the files really changed
(storage.can_signals.CanDefinitions). The new catalog goes to the
TelemetryBatcher whole, between two of its messages: no frame is decoded
with half a change.

Each problem line (a bad definition, a clash with a DBC file, an
unreadable file) is logged once per process, not at every reload.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from actors.base import GatewayActor
from actors.messages import Deadline, Schedule
from actors.settings import GatewaySettings
from protocol.can import CanCatalog
from storage.can_signals import CanDefinitions
from storage.db import ChangeWatch, DatabaseBusy, open_reader

logger = logging.getLogger("autocore.can")

MAX_LOGGED = 2000


@dataclass(frozen=True)
class CanCatalogChanged:
    """CanFeed -> TelemetryBatcher: the definitions now in force."""

    catalog: CanCatalog


@dataclass(frozen=True)
class LoadNow:
    """Store start-up -> CanFeed: load before the first frame arrives."""


class CanFeed(GatewayActor):
    name = "CanFeed"
    process = "store"

    def __init__(self, settings: GatewaySettings, batcher: Any, scheduler: Any) -> None:
        super().__init__()
        self.settings = settings
        self.interval_s = settings.can_poll_ms / 1000.0
        self.batcher = batcher
        self.scheduler = scheduler
        self.definitions = CanDefinitions(settings.can_dbc_files)
        self.reader = None
        self.watch: ChangeWatch | None = None
        self.logged: set[str] = set()
        self.polls = 0
        self.reads = 0
        self.loaded_at: float | None = None

    def on_start(self) -> None:
        self.reader = open_reader(self.settings.database, busy_timeout_ms=self.settings.db_busy_timeout_ms)
        self.watch = ChangeWatch(self.reader, "can_signals")

    def on_stop(self) -> None:
        if self.reader is not None:
            self.reader.close()

    def handle(self, message: Any) -> Any:
        if isinstance(message, LoadNow):
            self._poll(force=True)
            self._next(time.time())
            return len(self.definitions.catalog)
        if isinstance(message, Deadline):
            self._poll()
            self._next(time.time())
            return None
        return super().handle(message)

    def _next(self, now: float) -> None:
        self.scheduler.tell(Schedule("can-feed", now + self.interval_s, self.actor_ref))

    def _poll(self, force: bool = False) -> None:
        self.polls += 1
        defs = self.definitions
        assert self.watch is not None, "_poll() before on_start()"
        try:
            changed = False
            # The table is read only when the database changed; the DBC
            # files are stat'ed every poll (a stat is cheap).
            db_changed = self.watch.changed()
            if force or db_changed or defs.files_changed():
                self.reads += 1
                changed = defs.refresh(self.reader)
        except DatabaseBusy:
            self.counters["busy"] += 1
            self.watch.again()
            return
        except Exception as exc:  # nothing about CAN definitions may stop the store
            self.watch.again()  # read again next time
            self.counters["errors"] += 1
            self._log_once(f"CAN definitions could not be read: {type(exc).__name__}: {exc}")
            return
        if changed or force:
            catalog = defs.catalog
            self.loaded_at = time.time()
            for line in catalog.problems:
                self._log_once(line)
            self.batcher.tell(CanCatalogChanged(catalog))
            if changed and not force:
                self.counters["reloads"] += 1
                logger.info("CAN definitions changed: %d in force", len(catalog))

    def _log_once(self, line: str) -> None:
        if line in self.logged or len(self.logged) >= MAX_LOGGED:
            return
        self.logged.add(line)
        logger.warning("%s", line)

    def summary(self) -> str:
        return f"{len(self.definitions.catalog)} CAN definitions, {self.polls} polls, {self.reads} reads"

    def state(self) -> dict:
        catalog = self.definitions.catalog
        origins: dict[str, int] = {}
        for d in catalog.definitions:
            origins[d.origin] = origins.get(d.origin, 0) + 1
        return {
            "definitions": len(catalog),
            "by_origin": origins,
            "problems": len(catalog.problems),
            "config_app_table": self.definitions.config_app_table,
            "dbc_files": [path for _, path in self.definitions.dbc_files],
            "poll_ms": self.settings.can_poll_ms,
            "polls": self.polls,
            "reads": self.reads,
            "changes": self.definitions.changes,
            "loaded_at": self.loaded_at,
        }
