"""What the fleet uplink sends next (issue 14). Pure: the time, the newest
committed ids and the broker's acknowledgements are arguments.

Three lanes, in priority order (protocol/uplink.py):
  events   device_events rows and command state changes (the wire lanes
           `events` and `commands`) not yet acknowledged;
  fresh    telemetry committed after the (re)connection, so the fleet sees
           the present at once after an outage;
  backlog  the telemetry from before it, paced (messages/s and bytes/s).
At most `window` batches are in flight (no more than the broker's Receive
Maximum). A range is "handed out" when a batch of it is published; it is
done only when acknowledged (AckedRanges, persisted by the caller). A lost
connection forgets what was in flight: it is sent again on the next one.
The backlog is paced in rows and bytes a second (AUTOCORE_UPLINK_RATE,
_BYTES_RATE; PROTOCOL.md). The caller reads rows first..last of the table the plan names (at most its
batch size, ascending) and reports what the batch covered with `sent`;
rows that no longer exist (pruned) are covered all the same, and a covered
range with no rows at all is simply acknowledged at once (`sent` with
`rows=0`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from actors.rules.acked import AckedRanges
from actors.rules.pacing import Pacer
from protocol.uplink import BACKLOG, COMMANDS_LANE, EVENTS, EVENTS_LANE, FRESH, TELEMETRY_LANE

# The plan's "tables" are the wire lanes (protocol/uplink.py): one id space each.
EVENT_TABLES = (EVENTS_LANE, COMMANDS_LANE)
TELEMETRY = TELEMETRY_LANE


@dataclass(frozen=True)
class Read:
    """Read rows first..last (inclusive) of `table`, ascending, for `lane`."""

    lane: str
    table: str
    first: int
    last: int


@dataclass
class _Flight:
    table: str
    first: int
    last: int
    lane: str = ""


@dataclass
class UplinkPlan:
    window: int
    pacer: Pacer
    acked: dict[str, AckedRanges] = field(default_factory=dict)
    fresh_from: int = 0  # telemetry ids above this are fresh; at or below, backlog
    connected: bool = False
    # table -> the last id handed out in this connection, per lane
    _handed: dict[tuple[str, str], int] = field(default_factory=dict)
    _flights: dict[int, _Flight] = field(default_factory=dict)  # batch key -> what it covers

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError("window must be at least 1")
        for table in (*EVENT_TABLES, TELEMETRY):
            self.acked.setdefault(table, AckedRanges())

    # -- the connection -------------------------------------------------------

    def on_connect(self, newest_telemetry: int) -> None:
        """A (re)connection: what was in flight is sent again; telemetry
        committed from now on is fresh, what came before is backlog."""
        self.connected = True
        self.fresh_from = newest_telemetry
        self._handed.clear()
        self._flights.clear()

    def on_disconnect(self) -> None:
        self.connected = False
        self._flights.clear()
        self._handed.clear()

    # -- deciding ---------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return len(self._flights)

    def next(self, now: float, newest: dict[str, int]) -> Read | float | None:
        """The next read, or seconds to wait (the backlog's pace), or None
        (nothing to send, or the window is full: wait for an ack or a commit)."""
        if not self.connected or len(self._flights) >= self.window:
            return None
        for table in EVENT_TABLES:
            read = self._gap(EVENTS, table, 0, newest.get(table, 0))
            if read is not None:
                return read
        top = newest.get(TELEMETRY, 0)
        read = self._gap(FRESH, TELEMETRY, self.fresh_from, top)
        if read is not None:
            return read
        read = self._gap(BACKLOG, TELEMETRY, 0, min(self.fresh_from, top))
        if read is None:
            return None
        wait = self.pacer.wait(now, 0)
        return read if wait <= 0 else wait

    def _gap(self, lane: str, table: str, floor: int, upto: int) -> Read | None:
        acked = self.acked[table]
        after = max(self._handed.get((lane, table), floor), acked.low_watermark(floor))
        for first, last in acked.gaps(after, upto):
            return Read(lane, table, first, last)
        return None

    # -- what happened ------------------------------------------------------------

    def sent(self, key: int, read: Read, last_covered: int, rows: int, size: int, now: float) -> None:
        """A batch for `read` covering read.first..last_covered went out as
        `key` (rows=0: nothing was there; it counts as done at once)."""
        if not read.first <= last_covered <= read.last:
            raise ValueError(f"covered {read.first}..{last_covered} is outside {read.first}..{read.last}")
        self._handed[(read.lane, read.table)] = last_covered
        if rows == 0:
            self.acked[read.table].add(read.first, last_covered)
            return
        self._flights[key] = _Flight(read.table, read.first, last_covered, read.lane)
        if read.lane == BACKLOG:
            self.pacer.take(now, size, rows)

    def on_ack(self, key: int) -> tuple[str, int, int] | None:
        """The broker acknowledged batch `key`: (table, first, last) now
        done (for the caller to persist), or None for an unknown key (one
        from before a reconnection)."""
        flight = self._flights.pop(key, None)
        if flight is None:
            return None
        self.acked[flight.table].add(flight.first, flight.last)
        return flight.table, flight.first, flight.last

    def on_refused(self, key: int) -> bool:
        """The broker refused batch `key` (a PUBACK with a failure reason):
        nothing is done, and its lane goes back to send it again (what was
        handed out after it in that lane may go twice; the receiver keeps
        one). False for an unknown key."""
        flight = self._flights.pop(key, None)
        if flight is None:
            return False
        handed = (flight.lane, flight.table)
        if handed in self._handed:
            self._handed[handed] = min(self._handed[handed], flight.first - 1)
        return True

    def set_window(self, window: int) -> None:
        if window < 1:
            raise ValueError("window must be at least 1")
        self.window = window

    def pending(self, newest: dict[str, int]) -> dict[str, int]:
        """Rows (ids) not yet acknowledged, per table, up to the newest."""
        out = {}
        for table, acked in self.acked.items():
            top = newest.get(table, 0)
            out[table] = sum(b - a + 1 for a, b in acked.gaps(0, top))
        return out
