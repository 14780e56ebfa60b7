"""Uplink: forwards what the database has committed to the fleet broker,
and takes the fleet's commands in (issue 14; PROTOCOL.md, "Fleet uplink").

An actor of the store process, started only when `AUTOCORE_UPLINK_URL` is
set. The database is the queue: every `uplink_poll_ms` the actor reads the
newest committed id of each lane, and `UplinkPlan` (actors/rules/uplink.py)
says what to send next: device events and command state changes first,
then fresh telemetry (committed since the connection came up), then the
backlog, paced (`AUTOCORE_UPLINK_RATE` rows/s, `_BYTES_RATE`). Rows are
read from disk one page (`uplink_batch_rows`) at a time, so memory stays
flat however long the link was down. At most `uplink_window` batches
await their PUBACK, never more than the broker's Receive Maximum.

The cursor (the acknowledged ids per lane, `uplink_cursor`) advances only
on the fleet broker's PUBACK, and is written at most every poll: a
`kill -9` costs at most the batches acknowledged since the last write,
sent again (the fleet side keeps one of each row by (vehicle, db, lane,
id)). A lost connection forgets what was in flight; it goes again.

Commands down: the client keeps a persistent session (clean start off,
session expiry `uplink_session_expiry_s`) subscribed at QoS 1 to
`{prefix}/{vehicle}/commands`; each message becomes one `commands` row
(`origin_id` unique: a redelivery inserts nothing) and is acknowledged
(manual ack) only after that row is committed. A payload that is not a
fleet command is counted, logged and acknowledged (never retried forever).

paho runs its own network thread (`loop_start`); its callbacks only hand
a message to this actor. paho's reconnect waits are set from
`actors.rules.pacing.Backoff` at each disconnect, so they double with
jitter (a fleet that lost its broker at once does not come back at once).

Writes (the cursor, fleet commands) are short transactions on this
actor's own connection, beside the DbWriter, as Retention's deletes are.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
import pykka
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from actors.base import GatewayActor
from actors.messages import (
    Deadline,
    DurableHeads,
    FleetCommandIn,
    FleetCommandStored,
    Schedule,
    UplinkLinkDown,
    UplinkLinkUp,
    UplinkPuback,
    WhenDurable,
)
from actors.rules.acked import AckedRanges
from actors.rules.pacing import Backoff, Pacer
from actors.rules.uplink import Read, UplinkPlan
from actors.settings import GatewaySettings
from protocol.uplink import (
    BACKLOG,
    WIRE_LANES,
    UplinkError,
    commands_topic,
    data_topic,
    decode_command,
    encode_rows,
)
from storage import uplink as uplink_repo
from storage.db import DatabaseBusy, database, database_errors
from storage.durability import sync_database_now

logger = logging.getLogger("autocore.uplink")

DB_ERRORS = database_errors()
TICK = "uplink-tick"
PACE = "uplink-pace"
MQTT_RECEIVE_MAXIMUM = 65535  # what a broker that names none allows
MAX_SENDS_PER_PUMP = 256
PACE_BURST_S = 0.1  # then the mailbox gets a turn (acks, snapshots)


def parse_url(url: str) -> tuple[str, int, bool]:
    """(host, port, tls) of mqtt://HOST[:PORT] or mqtts://HOST[:PORT]."""
    u = urlsplit(url)
    if u.scheme not in ("mqtt", "mqtts") or not u.hostname:
        raise ValueError(f"the uplink URL must be mqtt://HOST[:PORT] or mqtts://HOST[:PORT], got {url!r}")
    tls = u.scheme == "mqtts"
    return u.hostname, u.port or (8883 if tls else 1883), tls


def redact_url(url: str) -> str:
    u = urlsplit(url)
    return f"{u.scheme}://{u.hostname}:{u.port or (8883 if u.scheme == 'mqtts' else 1883)}"


class Uplink(GatewayActor):
    name = "Uplink"
    process = "store"

    def __init__(self, settings: GatewaySettings, scheduler: Any, syncer: Any = None, *,
                 clock: Any = time.time) -> None:
        super().__init__()
        s = settings
        self.settings = s
        self.scheduler = scheduler
        # Rows go to the fleet, and fleet commands are acknowledged, only
        # once durable (actors/syncer.py): a power cut must not take back a
        # row the fleet has, nor a command the fleet was told is stored.
        self.syncer = syncer
        self.clock = clock
        if not s.uplink_url:
            raise ValueError("the uplink needs AUTOCORE_UPLINK_URL")
        self.url: str = s.uplink_url
        self.host, self.port, self.tls = parse_url(self.url)
        self.vehicle = s.uplink_vehicle
        self.prefix = s.uplink_prefix
        self.topic = data_topic(self.prefix, self.vehicle)
        self.commands_topic = commands_topic(self.prefix, self.vehicle)
        self.poll_s = s.uplink_poll_ms / 1000.0
        self.batch_rows = int(s.uplink_batch_rows)
        # Paced, the backlog goes in pages of at most 0.1 s of the rate, so
        # the pace is smooth at any rate (a 500-row page at 600 rows/s would
        # go as one lump and a wait).
        self.backlog_rows = (min(self.batch_rows, max(1, int(float(s.uplink_rate) * PACE_BURST_S)))
                             if s.uplink_rate else self.batch_rows)
        # Used only on paho's thread (its callbacks), never by the actor.
        self._link_backoff = Backoff(first_s=1.0, max_s=float(s.uplink_reconnect_max_s))
        now = clock()
        # A short burst (0.1 s of the rate): the replay keeps to the rate from
        # its first second on, not only on average over a long one.
        self.plan = UplinkPlan(window=int(s.uplink_window),
                               pacer=Pacer(s.uplink_rate or None, s.uplink_bytes_rate or None, now, burst_s=PACE_BURST_S))
        self.database_id = ""
        self.client: mqtt.Client | None = None
        self._stopping = threading.Event()
        self.connected = False
        self.receive_maximum: int | None = None
        self.newest: dict[str, int] = {lane: 0 for lane in WIRE_LANES}
        self.cursor_dirty = False
        self.pace_at: float | None = None
        self.connected_since: float | None = None
        self.last_error: str | None = None
        self.retry_in_s: float | None = None
        self.rows_sent: dict[str, int] = {lane: 0 for lane in WIRE_LANES}
        self.rows_acked: dict[str, int] = {lane: 0 for lane in WIRE_LANES}
        self.bytes_sent = 0
        self._rate_mark = (now, 0)
        self._acked_rate = 0.0
        # mid -> rows in the batch (for the acked counts)
        self._batch_rows: dict[int, int] = {}
        self._asked_heads: dict[str, int] = {}  # the newest ids last handed to the Syncer
        # mid -> a fleet command stored, acknowledged once durable
        self._stored_unacked: dict[int, FleetCommandIn] = {}

    # -- life ------------------------------------------------------------------

    def on_start(self) -> None:
        self.database_id = uplink_repo.database_id()
        for lane, pairs in uplink_repo.load_cursor().items():
            if lane in self.plan.acked:
                self.plan.acked[lane] = AckedRanges.from_pairs(pairs)
        self.newest = uplink_repo.newest_ids()
        try:
            client = self._make_client()
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = int(self.settings.uplink_session_expiry_s)
            props.ReceiveMaximum = MQTT_RECEIVE_MAXIMUM
            client.connect_async(self.host, self.port, keepalive=int(self.settings.uplink_keepalive_s),
                                 clean_start=False, properties=props)
            client.loop_start()
        except (OSError, ValueError, ssl.SSLError) as exc:
            # A CA or key file that cannot be read: the uplink stays off and
            # says why; the vehicle's own work goes on (no restart loop).
            self.last_error = f"cannot start: {exc}"
            logger.error("the uplink cannot start (%s); it stays off until the gateway is restarted", exc)
            return
        self.client = client
        logger.info("uplink to %s as vehicle %s (database %s), topic %s", redact_url(self.url),
                    self.vehicle, self.database_id, self.topic)
        self.scheduler.tell(Schedule(TICK, self.clock() + self.poll_s, self.actor_ref))

    def on_stop(self) -> None:
        self._stopping.set()
        if self._stored_unacked and self.client is not None:
            # Stored, waiting for the Syncer, which stops after this actor:
            # synced here, so they are acknowledged before the disconnect.
            try:
                sync_database_now(self.settings.database, self.settings.db_synchronous)
            except OSError as exc:
                logger.error("uplink: could not sync the fleet commands it stored (%s); they come again", exc)
            else:
                for command in self._stored_unacked.values():
                    self._ack(self.client, command)
            self._stored_unacked.clear()
        if self.client is not None:
            try:
                self.client.disconnect()
            except Exception:
                pass
            self.client.loop_stop()
        try:
            self._save_cursor(self.clock())
        except Exception:
            pass
        if database.obj is not None and not database.is_closed():
            database.close()  # this thread's connection

    def _make_client(self) -> mqtt.Client:
        s = self.settings
        client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
                             client_id=f"autocore-uplink-{self.vehicle}", protocol=mqtt.MQTTv5, manual_ack=True)
        if s.uplink_username:
            client.username_pw_set(s.uplink_username, s.uplink_password)
        if self.tls:
            client.tls_set(ca_certs=s.uplink_tls_ca, certfile=s.uplink_tls_cert, keyfile=s.uplink_tls_key,
                           tls_version=ssl.PROTOCOL_TLS_CLIENT)
        # Our window bounds what is in flight; paho must not hold any back.
        client.max_inflight_messages_set(MQTT_RECEIVE_MAXIMUM)
        client.max_queued_messages_set(0)
        actor = self.actor_ref
        stopping = self._stopping

        class _Me:
            """The actor as paho's callbacks see it: a message to an actor
            that has stopped (paho's last disconnect) is dropped."""

            @staticmethod
            def tell(message: Any) -> None:
                if stopping.is_set():
                    return
                try:
                    actor.tell(message)
                except pykka.ActorDeadError:
                    pass

        me = _Me()

        def on_connect(c: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
            if reason.is_failure:
                return  # on_disconnect follows
            self._link_backoff.reset()
            c.subscribe(self.commands_topic, qos=1)
            rm = getattr(props, "ReceiveMaximum", None) if props is not None else None
            me.tell(UplinkLinkUp(int(rm) if rm else MQTT_RECEIVE_MAXIMUM, bool(flags.session_present)))

        def down(reason: str) -> None:
            delay = self._link_backoff.next_delay()
            c = self.client
            if c is not None:
                # paho waits min_delay before its next attempt (its doubling
                # restarts at each set): our jittered, doubling delay.
                c.reconnect_delay_set(delay, delay)  # type: ignore[arg-type]
            me.tell(UplinkLinkDown(reason, delay))

        def on_disconnect(c: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
            down(f"disconnected: {reason}")

        def on_connect_fail(c: Any, userdata: Any) -> None:
            down("cannot connect")

        def on_publish(c: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
            me.tell(UplinkPuback(mid, bool(reason.is_failure), str(reason)))

        def on_message(c: Any, userdata: Any, msg: Any) -> None:
            me.tell(FleetCommandIn(msg.mid, msg.qos, bytes(msg.payload)))

        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        client.on_connect_fail = on_connect_fail
        client.on_publish = on_publish
        client.on_message = on_message
        return client

    # -- messages --------------------------------------------------------------

    def handle(self, message: Any) -> Any:
        try:
            return self._handle(message)
        except DB_ERRORS as exc:
            # Busy, or the database went away for a moment: counted, logged;
            # the next tick tries again (an unacknowledged fleet command is
            # redelivered by the broker on the next connection).
            self.counters["db_errors"] += 1
            logger.error("uplink: %s: %s", type(exc).__name__, exc)
            return None

    def _handle(self, message: Any) -> Any:
        now = self.clock()
        if isinstance(message, UplinkPuback):
            self._on_puback(message, now)
        elif isinstance(message, Deadline) and message.key == TICK:
            self._tick(now)
        elif isinstance(message, Deadline) and message.key == PACE:
            self.pace_at = None
            self._pump(now)
        elif isinstance(message, DurableHeads):
            for lane, newest in message.newest:
                self.newest[lane] = max(self.newest.get(lane, 0), newest)
            self._pump(now)
        elif isinstance(message, FleetCommandIn):
            self._on_command(message, now)
        elif isinstance(message, FleetCommandStored):
            if self._stored_unacked.pop(message.command.mid, None) is not None \
                    and message.connection == self.counters["connects"]:
                self._ack(self.client, message.command)
        elif isinstance(message, UplinkLinkUp):
            self._on_up(message, now)
        elif isinstance(message, UplinkLinkDown):
            self._on_down(message)
        else:
            return super().handle(message)
        return None

    def _refresh_newest(self) -> None:
        """Read the newest ids; they become the limit of what is sent once
        a sync has made them durable (at once without a Syncer)."""
        heads = uplink_repo.newest_ids()
        if self.syncer is None:
            self.newest = heads
        elif heads != self._asked_heads and any(n > self.newest.get(lane, 0) for lane, n in heads.items()):
            # Only for new rows: an idle uplink costs the disk no sync.
            self._asked_heads = heads
            self.syncer.tell(WhenDurable((DurableHeads(tuple(heads.items())),), reply_to=self.actor_ref))

    def _tick(self, now: float) -> None:
        try:
            self._refresh_newest()
            self._pump(now)
            if self.cursor_dirty:
                self._save_cursor(now)
        except DatabaseBusy:
            self.counters["busy"] += 1
        except DB_ERRORS as exc:
            self.counters["db_errors"] += 1
            logger.error("uplink could not read or write the database: %s: %s", type(exc).__name__, exc)
        self.scheduler.tell(Schedule(TICK, self.clock() + self.poll_s, self.actor_ref))

    def _on_up(self, m: UplinkLinkUp, now: float) -> None:
        self.connected = True
        self.connected_since = now
        self.receive_maximum = m.receive_maximum
        self.retry_in_s = None
        self.plan.set_window(max(1, min(int(self.settings.uplink_window), m.receive_maximum)))
        self.plan.on_connect(self.newest["telemetry"])  # durable so far; what is newer comes with the next sync
        self._refresh_newest()
        self._batch_rows.clear()
        self.counters["connects"] += 1
        logger.info("uplink connected to %s (window %d, broker's receive maximum %d, session %s)",
                    redact_url(self.url), self.plan.window, m.receive_maximum,
                    "kept" if m.session_present else "new")
        self._pump(now)

    def _on_down(self, m: UplinkLinkDown) -> None:
        was = self.connected
        self.connected = False
        self.connected_since = None
        self.plan.on_disconnect()
        self._batch_rows.clear()
        self._stored_unacked.clear()  # their mids were the old connection's: the broker sends them again
        self.last_error = m.reason
        self.retry_in_s = m.retry_in_s
        self.counters["disconnects" if was else "connect_failures"] += 1
        if was or self.counters["connect_failures"] in (1, 10) or self.counters["connect_failures"] % 100 == 0:
            logger.warning("uplink to %s is down (%s); trying again in %.1f s", redact_url(self.url),
                           m.reason, m.retry_in_s)

    def _on_puback(self, m: UplinkPuback, now: float) -> None:
        rows = self._batch_rows.pop(m.mid, 0)
        if m.failed:
            if self.plan.on_refused(m.mid):
                self.counters["refused"] += 1
                self.last_error = f"the fleet broker refused a batch: {m.reason}"
            return
        done = self.plan.on_ack(m.mid)
        if done is None:
            self.counters["stale_acks"] += 1  # from before a reconnection
            return
        self.rows_acked[done[0]] += rows
        self.cursor_dirty = True
        self._pump(now)

    # -- sending ---------------------------------------------------------------

    def _pump(self, now: float) -> None:
        client = self.client
        if not self.connected or client is None:
            return
        for _ in range(MAX_SENDS_PER_PUMP):
            step = self.plan.next(now, self.newest)
            if step is None:
                return
            if isinstance(step, float):
                at = now + step
                if self.pace_at is None or at < self.pace_at:
                    self.pace_at = at
                    self.scheduler.tell(Schedule(PACE, at, self.actor_ref))
                return
            self._send(client, step, now)

    def _send(self, client: mqtt.Client, read: Read, now: float) -> None:
        page = self.backlog_rows if read.lane == BACKLOG else self.batch_rows
        rows = uplink_repo.read_lane(read.table, read.first, read.last, page)
        if not rows:
            self.plan.sent(0, read, read.last, rows=0, size=0, now=now)
            return
        # A full page covers up to its last row; a short one covers the whole
        # range (the ids it lacks were pruned: there is nothing more to send).
        covered = rows[-1]["id"] if len(rows) == page else read.last
        payload = encode_rows(self.vehicle, self.database_id, read.table, rows, now)
        info = client.publish(self.topic, payload, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            self.counters["publish_errors"] += 1
        self.plan.sent(info.mid, read, covered, rows=len(rows), size=len(payload), now=now)
        self._batch_rows[info.mid] = len(rows)
        self.rows_sent[read.table] += len(rows)
        self.bytes_sent += len(payload)
        self.counters[f"batches_{read.lane}"] += 1

    def _save_cursor(self, now: float) -> None:
        uplink_repo.save_cursor({lane: r.to_pairs() for lane, r in self.plan.acked.items()}, now)
        self.cursor_dirty = False
        self.counters["cursor_writes"] += 1

    # -- commands from the fleet -------------------------------------------------

    def _on_command(self, m: FleetCommandIn, now: float) -> None:
        client = self.client
        try:
            cmd = decode_command(m.payload)
        except UplinkError as exc:
            self.counters["commands_rejected"] += 1
            logger.warning("a fleet command was rejected: %s", exc)
            self._ack(client, m)
            return
        ttl = cmd.ttl_s if cmd.ttl_s is not None else float(self.settings.uplink_command_ttl_s)
        try:
            cid = uplink_repo.insert_fleet_command(
                cmd.origin_id, cmd.device_uuid, cmd.command_type, cmd.parameters, topic=cmd.topic, now=now,
                ttl_s=ttl, timeout=cmd.timeout, max_attempts=cmd.max_attempts or int(self.settings.command_max_attempts))
        except DB_ERRORS as exc:
            # Not acknowledged: the broker sends it again on the next connection.
            self.counters["commands_not_stored"] += 1
            logger.error("a fleet command (origin %s) could not be stored: %s: %s", cmd.origin_id,
                         type(exc).__name__, exc)
            return
        if cid is None:
            self.counters["commands_repeated"] += 1
        else:
            self.counters["commands_inserted"] += 1
            logger.info("fleet command %s (%s for %s) is command %d", cmd.origin_id, cmd.command_type,
                        cmd.device_uuid, cid)
        if self.syncer is None:
            self._ack(client, m)
        else:
            self._stored_unacked[m.mid] = m
            self.syncer.tell(WhenDurable((FleetCommandStored(m, self.counters["connects"]),), reply_to=self.actor_ref))

    def _ack(self, client: mqtt.Client | None, m: FleetCommandIn) -> None:
        if client is not None and m.qos > 0:
            client.ack(m.mid, m.qos)

    # -- inspection --------------------------------------------------------------

    def summary(self) -> str:
        state = "connected" if self.connected else "DOWN"
        pending = sum(self.plan.pending(self.newest).values())
        return f"{state}, {pending} rows pending, {sum(self.rows_acked.values())} rows acknowledged"

    def state(self) -> dict:
        now = self.clock()
        mark_at, mark_count = self._rate_mark
        acked = sum(self.rows_acked.values())
        if now - mark_at >= 0.5:
            self._acked_rate = (acked - mark_count) / (now - mark_at)
            self._rate_mark = (now, acked)
        pending = self.plan.pending(self.newest)
        oldest_age = None
        if pending.get("telemetry"):
            try:
                first = self.plan.acked["telemetry"].low_watermark(0) + 1
                at = uplink_repo.received_at(first)
                oldest_age = None if at is None else round(max(0.0, now - at), 1)
            except DB_ERRORS:
                pass
        lanes = {}
        for lane in WIRE_LANES:
            acked_ranges = self.plan.acked[lane]
            lanes[lane] = {"newest": self.newest.get(lane, 0), "acked_upto": acked_ranges.low_watermark(0),
                           "acked_ranges": len(acked_ranges), "pending": pending.get(lane, 0),
                           "rows_sent": self.rows_sent[lane], "rows_acked": self.rows_acked[lane]}
        return {
            "enabled": True,
            "url": redact_url(self.url),
            "vehicle": self.vehicle,
            "database_id": self.database_id,
            "topic": self.topic,
            "connected": self.connected,
            "connected_for_s": None if self.connected_since is None else round(now - self.connected_since, 1),
            "last_error": self.last_error,
            "retry_in_s": None if self.connected or self.retry_in_s is None else round(self.retry_in_s, 1),
            "window": self.plan.window,
            "receive_maximum": self.receive_maximum,
            "in_flight": self.plan.in_flight,
            "rate_rows_per_s": self.settings.uplink_rate or None,
            "rate_bytes_per_s": self.settings.uplink_bytes_rate or None,
            "acked_rows_per_s": round(self._acked_rate, 1),
            "rows_pending": sum(pending.values()),
            "oldest_pending_age_s": oldest_age,
            "bytes_sent": self.bytes_sent,
            "lanes": lanes,
        }
