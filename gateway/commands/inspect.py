"""`gateway inspect`: what the running actor system is doing, through the
control socket of the running gateway."""

from __future__ import annotations

import sys
import time
from typing import Any, Callable

import click

from actors.rules.histogram import quantile_bound
from gateway import tables
from gateway.commands.common import (
    Failure,
    complete_device,
    echo_json,
    fail_line,
    json_option,
    reading,
    setting_options,
    to_json,
)
from gateway.control import ControlError, GatewayNotRunning, request
from gateway.settings import LoadedSettings

DEFAULT_WATCH_S = 2.0


@click.group()
def inspect() -> None:
    """Show what the running gateway is doing (through its control socket).

    Each view takes --json (one JSON document; keys in docs/cli.md) and
    --watch [SECONDS] (refresh every 2 s, or as given, until Ctrl-C; with
    --json one JSON document per line). With no gateway running it prints
    one line, `gateway is not running: no socket at PATH`, and exits 1.

    \b
    Examples:
      gateway inspect actors
      gateway inspect devices --watch
      gateway inspect device esp32-relay-01 --json
      gateway inspect stats --watch 5
    """


def _view_options(func: Callable) -> Callable:
    func = click.option("--count", type=click.IntRange(min=1), default=None, metavar="N",
                        help="With --watch: stop after N refreshes.")(func)
    func = click.option("--watch", type=click.FloatRange(min=0.1), is_flag=False, flag_value=DEFAULT_WATCH_S,
                        default=None, metavar="[SECONDS]",
                        help=f"Refresh every SECONDS (default {DEFAULT_WATCH_S:g}) until Ctrl-C.")(func)
    func = json_option(func)
    return setting_options(show=("run_dir",))(func)


def _with_names(loaded: LoadedSettings, what: str, reply: dict) -> dict:
    """Each device's `name`: the one its owner gave it in the Config App,
    else its own (the running gateway holds neither). Read from the
    database without a lock; an unreadable database leaves names out."""
    if what not in ("devices", "device") or not isinstance(reply.get(what), (list, dict)):
        return reply
    shown = reply[what] if what == "devices" else [reply[what]]
    uuids = [d.get("uuid") for d in shown if isinstance(d, dict) and d.get("uuid")]
    from storage import devices as device_repo
    from storage.db import database_exists

    if not uuids or not database_exists(loaded.settings.database):
        return reply

    try:
        with reading(loaded.settings) as db:
            names = device_repo.names(uuids, db=db)
    except click.ClickException:
        return reply
    for d in shown:
        if isinstance(d, dict) and names.get(d.get("uuid")):
            d["name"] = names[d["uuid"]]
    return reply


def run_view(loaded: LoadedSettings, what: str, render: Callable[[Any], str], as_json: bool,
             watch: float | None, count: int | None, **fields: Any) -> None:
    path = loaded.settings.socket_path

    def ask() -> dict:
        return _with_names(loaded, what, request(path, what, **fields))

    if watch is None:
        reply = _first(ask)
        click.echo(to_json(reply) if as_json else render(reply[what]))
        return

    tty = sys.stdout.isatty()
    shown = 0
    reply: dict | None = _first(ask)  # no gateway at the start: the one line, exit 1
    error: str | None = None
    try:
        while True:
            if as_json:
                echo_json(reply if reply is not None else {"error": error}, lines=True)
            else:
                title = f"gateway inspect {what}{' ' + fields['uuid'] if 'uuid' in fields else ''}"
                head = f"{title}  every {watch:g}s  {tables.timestamp(time.time())}  (Ctrl-C to stop)"
                body = render(reply[what]) if reply is not None else str(error)
                if tty:
                    click.clear()
                    click.echo(f"{head}\n\n{body}")
                else:
                    click.echo(f"{head}\n{body}\n")
            shown += 1
            if count is not None and shown >= count:
                return
            time.sleep(watch)
            # The gateway may go away and come back while we watch (a
            # restart): show why there is nothing and keep trying.
            try:
                reply, error = ask(), None
            except ControlError as exc:
                reply, error = None, str(exc)
    except KeyboardInterrupt:
        return


def _first(ask: Callable[[], dict]) -> dict:
    try:
        return ask()
    except GatewayNotRunning as exc:
        raise fail_line(str(exc)) from None
    except ControlError as exc:
        raise Failure(str(exc)) from None


# -- actors --------------------------------------------------------------------


@inspect.command()
@_view_options
def actors(loaded: LoadedSettings, as_json: bool, watch: float | None, count: int | None) -> None:
    """The actor tree of both processes.

    For each actor: its mailbox depth, the messages it handled and their
    rate since the previous inspection, its restarts and a one-line state.
    Device actors hang under the DeviceSupervisor.

    \b
    Example:
      gateway inspect actors --watch 1
    """
    run_view(loaded, "actors", render_actors, as_json, watch, count)


def render_actors(actors: list[dict]) -> str:
    by_process: dict[str, list[dict]] = {}
    children: list[dict] = []
    for a in actors:
        if a.get("parent"):
            children.append(a)
        else:
            by_process.setdefault(a.get("process") or "?", []).append(a)
    rows: list[list[Any]] = []

    def row(a: dict, depth: int) -> list[Any]:
        name = "  " * depth + str(a.get("name"))
        if a.get("error"):
            return [name, None, None, None, None, a["error"]]
        return [name, a.get("mailbox"), a.get("handled"), a.get("rate_per_s"), a.get("restarts"), a.get("summary") or ""]

    for process in sorted(by_process, key=lambda p: (p != "core", p != "store", p)):
        rows.append([f"{process} process", "", "", "", "", ""])
        for a in by_process[process]:
            rows.append(row(a, 1))
            for child in (c for c in children if c.get("parent") == a.get("name") and process == "core"):
                rows.append(row(child, 2))
    orphans = [c for c in children if c.get("parent") not in {a.get("name") for a in by_process.get("core", [])}]
    for child in orphans:
        rows.append(row(child, 1))
    return tables.table(["ACTOR", "MAILBOX", "HANDLED", "RATE/S", "RESTARTS", "STATE"], rows, right=(1, 2, 3, 4))


# -- devices -------------------------------------------------------------------


@inspect.command()
@_view_options
def devices(loaded: LoadedSettings, as_json: bool, watch: float | None, count: int | None) -> None:
    """The devices the running gateway holds in memory.

    Status, last message, boot, message rate, rejections, seq gaps and
    repeats, and the command window (out / queued) of each device. The
    database's view (every device ever seen) is `gateway devices`.

    \b
    Example:
      gateway inspect devices --watch
    """
    run_view(loaded, "devices", render_devices, as_json, watch, count)


def render_devices(devices: list[dict]) -> str:
    if not devices:
        return "no devices in the running gateway"
    now = time.time()
    rows = [
        [d.get("uuid"), d.get("name"), d.get("status"), d.get("dialect"), d.get("device_type"), d.get("boot_id"),
         tables.ago(d.get("last_seen"), now), d.get("messages"), d.get("rate_per_s"), d.get("rejected"),
         d.get("seq_gaps"), d.get("seq_repeats"), len((d.get("commands") or {}).get("out") or []),
         len((d.get("commands") or {}).get("queued") or [])]
        for d in devices
    ]
    return tables.table(["UUID", "NAME", "STATUS", "DIALECT", "TYPE", "BOOT", "LAST SEEN", "MSGS", "RATE/S",
                         "REJECTED", "GAPS", "REPEATS", "OUT", "QUEUED"], rows, right=(5, 7, 8, 9, 10, 11, 12, 13))


@inspect.command()
@click.argument("uuid", shell_complete=complete_device)
@_view_options
def device(loaded: LoadedSettings, uuid: str, as_json: bool, watch: float | None, count: int | None) -> None:
    """One device in the running gateway, in detail.

    Liveness, boot, rates, rejections by reason, seq gaps and repeats, the
    last state of each relay, and its pending-command window and queue.
    Put --watch after the UUID.

    \b
    Example:
      gateway inspect device esp32-relay-01 --watch 1
    """
    run_view(loaded, "device", render_device, as_json, watch, count, uuid=uuid)


def render_device(d: dict) -> str:
    now = time.time()
    status = d.get("status") or "-"
    if d.get("offline_in_s") is not None and status == "online":
        status += f" (offline in {tables.seconds(d['offline_in_s'])} without a message)"
    relays = d.get("relays") or {}
    cmds = d.get("commands") or {}
    out = cmds.get("out") or []
    queued = cmds.get("queued") or []
    actor = d.get("actor") or {}
    items: list[tuple[str, Any]] = [
        ("device", d.get("uuid")),
        ("name", d.get("name")),
        ("status", status),
        ("type", d.get("device_type")),
        ("dialect", f"{d.get('dialect') or '-'}, {d.get('encoding') or '-'}" + _lock(d)),
        ("boot", d.get("boot_id")),
        ("last seen", f"{tables.timestamp(d.get('last_seen'))} ({tables.ago(d.get('last_seen'), now)})"),
        ("timeout", tables.seconds(d.get("timeout_s"))),
        ("messages", f"{d.get('messages', 0)} ({tables.number(d.get('rate_per_s'))}/s)"),
        ("rejected", f"{d.get('rejected', 0)}" + (f" ({tables.counts(d.get('rejections'))})" if d.get("rejections") else "")),
        ("seq gaps", d.get("seq_gaps")),
        ("seq repeats", d.get("seq_repeats")),
        ("clock skew", d.get("clock_skew")),
        ("stale wills", d.get("stale_wills")),
        ("relays", ", ".join(f"{k} {'on' if v else 'off'}" for k, v in sorted(relays.items(), key=_relay_order))
         or "none reported"),
        ("held", ", ".join(f"channel {h['channel']} for {tables.seconds(h['remaining_s'])} more (command {c.get('id')}, "
                           f"{h['heartbeats']} heartbeats)" for c in out if (h := c.get("hold"))) or "nothing"),
        ("commands", f"window {cmds.get('window', '-')}, {len(out)} out, {len(queued)} queued"
         + (f" (queued: {', '.join(str(i) for i in queued)})" if queued else "")),
        ("actor", f"mailbox {actor.get('mailbox', '-')}, handled {actor.get('handled', '-')}, "
                  f"restarts {actor.get('restarts', '-')}"),
    ]
    text = tables.pairs(items)
    if out:
        text += "\n\n" + render_commands(out)
    text += render_relay_commands(d.get("relay_commands"))
    return text


def _lock(d: dict) -> str:
    """A v1 device with a boot_id refuses 2.2 messages: say so, and how many."""
    conflicts = d.get("dialect_conflict") or 0
    if d.get("dialect_locked"):
        return f" (v1 with a boot: 2.2 messages refused, {conflicts} so far)"
    return f" ({conflicts} 2.2 messages refused before)" if conflicts else ""


def render_relay_commands(observed: Any) -> str:
    """Recent relay commands others (the Config App's UI, a display) sent a
    2.2 board, newest first, with the board's answer; empty when none."""
    recent = observed.get("recent") if isinstance(observed, dict) else None
    if not recent:
        return ""
    rows = []
    for c in recent:
        # the command word as sent, else the state asked for (the Config App's UI sends no word)
        asked = c.get("command") or {True: "state on", False: "state off"}.get(c.get("state"))
        answer = c.get("outcome")
        if c.get("error_code") or c.get("error_message"):
            answer = f"{answer}: {c.get('error_code') or ''} {c.get('error_message') or ''}".strip()
        rows.append([tables.timestamp(c.get("at")), c.get("channel"), asked, c.get("user") or c.get("source"),
                     answer, tables.seconds(c.get("after_s")) if c.get("after_s") is not None else None])
    return "\n\nrecent relay commands (sent by others)\n" + tables.table(
        ["AT", "CHANNEL", "COMMAND", "FROM", "ANSWER", "AFTER"], rows)


def _relay_order(item: tuple[str, Any]) -> tuple[int, str]:
    key = item[0]
    return (int(key), "") if str(key).isdigit() else (1 << 30, str(key))


# -- commands ------------------------------------------------------------------


@inspect.command()
@_view_options
def commands(loaded: LoadedSettings, as_json: bool, watch: float | None, count: int | None) -> None:
    """The commands in flight: sent (or accepted) and waiting for an answer,
    and queued behind them, per device.

    The database's view, finished ones included, is `gateway command list`.

    \b
    Example:
      gateway inspect commands --watch 1
    """
    run_view(loaded, "commands", render_commands, as_json, watch, count)


def render_commands(cmds: list[dict]) -> str:
    if not cmds:
        return "no commands in flight"
    rows = []
    for c in cmds:
        deadline = c.get("deadline_in_s")
        note = "waiting for the device" if c.get("waiting_for_device") else ""
        rows.append([c.get("id"), c.get("device"), c.get("state"), c.get("type"), c.get("attempts"),
                     None if deadline is None else tables.seconds(deadline), note])
    return tables.table(["ID", "DEVICE", "STATE", "TYPE", "ATTEMPTS", "DEADLINE IN", "NOTE"], rows, right=(0, 4, 5))


# -- stats ---------------------------------------------------------------------


@inspect.command()
@_view_options
def stats(loaded: LoadedSettings, as_json: bool, watch: float | None, count: int | None) -> None:
    """The gateway's vital signs.

    The MQTT connection and its counters, messages received but not yet
    acknowledged, batch sizes and commit latency, rejections by reason,
    retention, and the memory of both processes.

    \b
    Example:
      gateway inspect stats --watch 5
    """
    run_view(loaded, "stats", render_stats, as_json, watch, count)


STALLED = {"disk_full": "DISK FULL", "database_unreachable": "DATABASE UNREACHABLE"}


def _store_state(store: dict, reserve: dict) -> str:
    """ok / DISK FULL / DATABASE UNREACHABLE, and the free space against the
    reserve."""
    free = store.get("disk_free_mb")
    space = f"disk free {tables.number(free)} MB" if free is not None else "disk free unknown"
    if reserve.get("reserve_mb"):
        space += f" (reserve {tables.number(reserve['reserve_mb'])} MB"
        if reserve.get("short_for_s") is not None:
            space += f", short for {tables.seconds(reserve['short_for_s'])}, pruning"
        space += ")"
    if store.get("state") in STALLED:
        return (f"{STALLED[store['state']]} for {tables.seconds(store.get('stalled_for_s'))}: "
                f"{store.get('waiting_batches', 0)} "
                f"batches ({store.get('waiting_rows', 0)} rows) waiting, unacknowledged; retry in "
                f"{tables.seconds(store.get('retry_in_s'))}; {space}")
    return f"{store.get('state', '-')}, {space}"


def _p99(histogram: dict | None) -> str:
    """The bucket bound of the 99th percentile of every commit since start."""
    bound = quantile_bound(histogram, 0.99) if histogram else None
    return "-" if bound is None else ("> " + tables.number(histogram["le"][-1])) if bound == float("inf") else (
        "<= " + tables.number(bound))


def _durability_line(d: dict) -> str:
    """How commits become durable before anything is acknowledged (group
    commit: one fsync of the log for many commits)."""
    if not d:
        return "-"
    mode = d.get("mode", "-")
    if mode != "group commit":
        return mode.upper() if mode.startswith("unsafe") else mode
    sync = d.get("sync_ms") or {}
    return (f"group commit: {d.get('syncs', '-')} fsyncs (at most one per {d.get('interval_ms', '-')} ms), "
            f"fsync p99 {_p99(sync.get('histogram'))} ms, acknowledgements wait p99 "
            f"{_p99((d.get('wait_ms') or {}).get('histogram'))} ms, {d.get('waiting', 0)} waiting")


def render_stats(s: dict) -> str:
    mqtt = s.get("mqtt") or {}
    router = s.get("router") or {}
    devices = s.get("devices") or {}
    batcher = s.get("batcher") or {}
    writer = s.get("writer") or {}
    commit = writer.get("commit_ms") or {}
    retention = s.get("retention") or {}
    memory = s.get("memory") or {}
    channel = s.get("channel") or {}
    feed = s.get("commands") or {}
    backlog = mqtt.get("outgoing_backlog") or {}
    rcounters = router.get("counters") or {}

    connection = "connected" if mqtt.get("connected") else "DISCONNECTED"
    since = mqtt.get("connected_since") if mqtt.get("connected") else mqtt.get("last_disconnect")
    items: list[tuple[str, Any]] = [
        ("gateway", f"{s.get('gateway_id')}, up {tables.seconds(s.get('uptime_s'))}"),
        ("mqtt", [
            ("broker", f"{mqtt.get('broker', '-')} {connection} "
                       f"{'since' if mqtt.get('connected') else 'last lost'} {tables.timestamp(since)} "
                       f"(connection {mqtt.get('connection', '-')})"),
            ("received", mqtt.get("received")),
            ("completed", mqtt.get("completed")),
            ("unacknowledged", f"{mqtt.get('unacknowledged', '-')} of at most {mqtt.get('max_unacknowledged', '-')}"
                               + ("" if mqtt.get("accepting", True) else " (reading paused)")),
            ("outgoing backlog", f"{backlog.get('commands', 0)} commands, {backlog.get('other', 0)} other"),
            ("counters", tables.counts(mqtt.get("counters"))),
        ]),
        ("router", [
            ("messages", f"{rcounters.get('messages', 0)} in {rcounters.get('batches', 0)} batches, "
                         f"{rcounters.get('rows', 0)} telemetry rows"),
            ("batch sizes", tables.counts(router.get("batch_sizes"))),
            ("rejections", tables.counts(s.get("rejections"))),
        ]),
        ("devices", f"{devices.get('actors', '-')} actors (at most {devices.get('max_actors', '-')}), "
                    f"{devices.get('known', '-')} known, {devices.get('online', '-')} online"),
        ("store", [
            ("state", _store_state(writer.get("store") or {}, retention.get("reserve") or {})),
            ("batches", f"{writer.get('batches', '-')}, largest {batcher.get('largest_batch', '-')} rows "
                        f"(flush at {batcher.get('batch_rows', '-')} rows or {batcher.get('max_age_ms', '-')} ms)"),
            ("rows", f"{writer.get('rows_inserted', '-')} inserted, {writer.get('rows_repeated', '-')} repeats ignored"),
            ("commit", f"last {tables.number(commit.get('last'))} ms, mean {tables.number(commit.get('mean'))} ms, "
                       f"p99 {_p99(commit.get('histogram'))} ms, max {tables.number(commit.get('max'))} ms; "
                       f"waiting in BEGIN/COMMIT p99 {_p99((writer.get('stall_ms') or {}).get('histogram'))} ms"),
            ("durability", _durability_line(s.get("durability") or {})),
            ("buffered", f"{batcher.get('buffered_rows', '-')} rows, {batcher.get('at_writer', '-')} batches at the writer"),
            ("command feed", f"{feed.get('polls', '-')} polls, {feed.get('queries', '-')} queries"),
            ("counters", tables.counts(writer.get("counters"))),
        ]),
        ("can", render_can(s.get("can") or {})),
        ("retention", render_retention(retention)),
        *_instance_items(s.get("instance") or {}),
        ("uplink", _uplink_line(s.get("uplink") or {})),
        ("memory", f"core {tables.number(memory.get('core_rss_mb'))} MB, store {tables.number(memory.get('store_rss_mb'))} MB"),
        ("channel", f"{channel.get('frames_sent', '-')} frames sent, {channel.get('frames_received', '-')} received"),
    ]
    if s.get("errors"):
        items.append(("errors", "; ".join(s["errors"])))
    return tables.pairs(items)


def _instance_items(i: dict) -> list[tuple[str, Any]]:
    """Several instances: this one's leases (nothing with one instance)."""
    if not i.get("share_group"):
        return []
    leases = i.get("leases") or {}
    acting = i.get("acting") or {}
    other = i.get("not_owned") or {}
    return [("instance", [
        ("id", f"{i.get('instance_id')} in share group {i.get('share_group')}"),
        ("buckets", f"{leases.get('held', '-')} of {leases.get('buckets', '-')} held, {acting.get('acting', '-')} "
                    f"acted for by core, {leases.get('lost', '-')} lost"),
        ("lease", f"{tables.seconds(leases.get('lease_s'))}, soonest expiry in {tables.seconds(leases.get('expires_in_s'))}, "
                  f"{leases.get('rounds', '-')} rounds ({leases.get('failed_rounds', 0)} failed)"),
        ("others' devices", f"{other.get('seen_not_owned', 0)} telemetry messages, {other.get('messages_not_owned', 0)} "
                            "control messages stored or acknowledged for their owners"),
    ])]


@inspect.command()
@json_option
@setting_options
def cluster(loaded: LoadedSettings, as_json: bool) -> None:
    """Every gateway instance of the lease table (several instances).

    Each instance's heartbeat age, how many buckets it holds and when its
    soonest lease runs out, read from the database (the gateways need not
    be running).

    \b
    Example:
      AUTOCORE_DB_URL=postgresql://gateway@db.depot/autocore gateway inspect cluster
    """
    from storage import leases

    with reading(loaded.settings) as db:
        if not db.table_exists(leases.BucketLease._meta.table_name):
            instances: list[dict] = []
        else:
            instances = leases.cluster(time.time(), db=db)
    if as_json:
        echo_json({"instances": instances})
        return
    if not instances:
        click.echo(f"no gateway instances in {loaded.settings.database_shown}")
        return
    rows = [[i["instance_id"], (i.get("detail") or {}).get("host", "-"), i["buckets"], tables.seconds(i["expires_in_s"]),
             "stopped" if i.get("stopped_at") else tables.seconds(i["heartbeat_age_s"]),
             tables.timestamp(i["started_at"])] for i in instances]
    click.echo(tables.table(["instance", "host", "buckets", "expires in", "heartbeat age", "started"], rows,
                            right=[2]))
# -- uplink ----------------------------------------------------------------------


@inspect.command()
@_view_options
def uplink(loaded: LoadedSettings, as_json: bool, watch: float | None, count: int | None) -> None:
    """The fleet uplink: connected or not, the cursor of each lane, rows
    pending, the age of the oldest one, the rate, rows dropped unsent.

    \b
    Example:
      gateway inspect uplink --watch 2
    """
    run_view(loaded, "uplink", render_uplink, as_json, watch, count)


def _uplink_line(u: dict) -> str:
    if not u.get("enabled"):
        return "off"
    if u.get("error"):
        return f"no answer: {u['error']}"
    return (f"{'connected' if u.get('connected') else 'DOWN'}, {u.get('rows_pending', '-')} rows pending "
            f"(oldest {tables.seconds(u.get('oldest_pending_age_s'))}), {u.get('acked_rows_per_s', '-')} rows/s, "
            f"{u.get('dropped_unsent', 0)} dropped unsent (gateway inspect uplink)")


def render_uplink(u: dict) -> str:
    if not u.get("enabled"):
        return tables.pairs([("uplink", "off (AUTOCORE_UPLINK_URL is not set)"),
                             ("dropped unsent", u.get("dropped_unsent", 0))])
    if u.get("error"):
        return tables.pairs([("uplink", f"no answer: {u['error']}")])
    if u.get("connected"):
        link = f"connected to {u.get('url')} for {tables.seconds(u.get('connected_for_s'))}"
    else:
        link = f"DOWN ({u.get('last_error') or 'not connected yet'}), next try in {tables.seconds(u.get('retry_in_s'))}"
    lanes = [(lane, f"acknowledged up to {v.get('acked_upto')} of {v.get('newest')} ({v.get('acked_ranges')} "
                    f"ranges), {v.get('pending')} pending, {v.get('rows_acked')} rows acknowledged here")
             for lane, v in sorted((u.get("lanes") or {}).items())]
    rate = u.get("rate_rows_per_s")
    items: list[tuple[str, Any]] = [
        ("uplink", link),
        ("vehicle", f"{u.get('vehicle')} (database {u.get('database_id')}), topic {u.get('topic')}"),
        ("window", f"{u.get('in_flight')} in flight of {u.get('window')} (broker's receive maximum "
                   f"{u.get('receive_maximum', '-')})"),
        ("pending", f"{u.get('rows_pending')} rows, oldest {tables.seconds(u.get('oldest_pending_age_s'))} old"),
        ("rate", f"{u.get('acked_rows_per_s')} rows/s acknowledged; backlog paced at "
                 f"{'no limit' if not rate else str(rate) + ' rows/s'}"
                 + (f", {u['rate_bytes_per_s']} bytes/s" if u.get("rate_bytes_per_s") else "")),
        ("lanes", lanes),
        ("dropped unsent", u.get("dropped_unsent", 0)),
        ("counters", tables.counts(u.get("counters"))),
    ]
    return tables.pairs(items)


def render_can(c: dict) -> Any:
    """Frames decoded, signals out of range, frames with no definition."""
    if not c:
        return "-"
    feed = c.get("feed") or {}
    origins = ", ".join(f"{n} from {o}" for o, n in sorted((feed.get("by_origin") or {}).items())) or "none"
    definitions = f"{c.get('definitions', feed.get('definitions', 0))} in force ({origins})"
    if feed.get("problems"):
        definitions += f"; {feed['problems']} skipped or overridden (see the log, or gateway can signals)"
    return [
        ("definitions", definitions),
        ("frames", f"{c.get('frames_seen', 0)} seen, {c.get('frames_decoded', 0)} decoded into "
                   f"{c.get('signals_decoded', 0)} signals, {c.get('frames_no_definition', 0)} with no definition, "
                   f"{c.get('frames_failed', 0)} undecodable"),
        ("out of range", f"{c.get('signals_out_of_range', 0)} signals" + _by_name(c.get("out_of_range"))),
        ("too short", f"{c.get('signals_too_short', 0)} signals" + _by_name(c.get("too_short"))),
        ("raw rows", "kept" if c.get("keep_raw", True) else f"left out once decoded ({c.get('raw_rows_left_out', 0)})"),
    ]


def _by_name(counts: dict | None) -> str:
    return f" ({tables.counts(counts)})" if counts else ""


def render_retention(r: dict) -> str:
    if not r:
        return "-"
    if not r.get("enabled"):
        return "off (AUTOCORE_RETENTION_DAYS and AUTOCORE_DB_MAX_MB are 0)"
    limits = []
    if r.get("retention_days"):
        limits.append(f"{tables.number(r['retention_days'])} days")
    if r.get("db_max_mb"):
        limits.append(f"at most {tables.number(r['db_max_mb'])} MB")
    pruned = (r.get("pruned_age") or 0) + (r.get("pruned_size") or 0)
    text = f"{', '.join(limits)}; {pruned} rows pruned in {r.get('runs', 0)} runs"
    if r.get("db_used_mb") is not None:
        text += f"; database uses {tables.number(r['db_used_mb'])} MB"
    if r.get("running"):
        text += "; pruning now"
    elif r.get("next_run_in_s") is not None:
        text += f"; next run in {tables.seconds(r['next_run_in_s'])}"
    return text
