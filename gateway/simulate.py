"""`gateway simulate`: a fleet of simulated ESP32 devices against a broker.

The machinery is in `simulator`; this module is the click command only.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
from typing import Any, TextIO

import click

from simulator import DEFAULT_FLEET, KINDS, Fleet, FleetConfig, Fw22Options, V1Options, parse_fleet

PROGRESS_LINE_EVERY_S = 5.0  # when stderr is not a terminal


def _fleet(ctx: click.Context, param: click.Parameter, value: str) -> dict[str, int]:
    try:
        return parse_fleet(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _latency(ctx: click.Context, param: click.Parameter, value: str) -> tuple[float, float]:
    low, sep, high = value.partition("-")
    try:
        lo = float(low)
        hi = float(high) if sep else lo
    except ValueError:
        raise click.BadParameter(f"expected SECONDS or LOW-HIGH, got {value!r}") from None
    if lo < 0 or hi < lo:
        raise click.BadParameter(f"expected 0 <= LOW <= HIGH, got {value!r}")
    return lo, hi


def format_progress(f: dict[str, Any]) -> str:
    parts = [
        f"sim {f['elapsed']:.0f}/{f['duration']:.0f}s",
        f"{f['online']}/{f['devices']} online",
        f"{f['published']:,} sent ({f['rate']:,.0f}/s)",
        f"{f['telemetry']:,} telemetry",
        f"{f['commands']} commands ({f['duplicates']} repeats)",
    ]
    if f.get("heartbeats") or f.get("relays_set"):
        parts.append(f"2.2: {f.get('relays_set', 0)} relays/set, {f.get('heartbeats', 0)} heartbeats")
    for key, label in (("reboots", "reboots"), ("flaps", "flaps"), ("connections_lost", "lost"),
                       ("connect_errors", "connect errors"), ("not_sent_offline", "not sent (offline)"),
                       ("device_errors", "device errors")):
        if f.get(key):
            parts.append(f"{f[key]:,} {label}")
    refused = sum(v for k, v in f.items() if k.startswith("publish_refused."))
    if refused:
        parts.append(f"{refused:,} publishes refused")
    return "  ".join(parts)


class ProgressPrinter:
    """One line on stderr: rewritten in place on a terminal, else printed
    every few seconds."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.last_at = -PROGRESS_LINE_EVERY_S
        self.width = 0

    def __call__(self, figures: dict[str, Any]) -> None:
        line = format_progress(figures)
        if self.tty:
            self.stream.write("\r" + line.ljust(self.width))
            self.width = len(line)
        elif figures["elapsed"] - self.last_at >= PROGRESS_LINE_EVERY_S:
            self.last_at = figures["elapsed"]
            self.stream.write(line + "\n")
        self.stream.flush()

    def end(self, figures: dict[str, Any]) -> None:
        if self.tty:
            self.stream.write("\r" + " " * self.width + "\r")
        self.stream.write("done: " + format_progress(figures) + "\n")
        self.stream.flush()


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--devices", "fleet", default=DEFAULT_FLEET, show_default=True, callback=_fleet, metavar="KIND=N,...",
              help=f"How many devices of each kind. Kinds: {', '.join(KINDS)}.")
@click.option("--duration", type=click.FloatRange(min=0.1, max=7 * 86400), default=60.0, show_default=True,
              help="Seconds to run; the simulator stops by itself.")
@click.option("--mqtt-host", default="127.0.0.1", show_default=True, envvar="AUTOCORE_MQTT_HOST", help="Broker host.")
@click.option("--mqtt-port", type=click.IntRange(1, 65535), default=1883, show_default=True,
              envvar="AUTOCORE_MQTT_PORT", help="Broker port.")
@click.option("--mqtt-username", default=None, envvar="AUTOCORE_SIM_USERNAME", help="User name for every connection.")
@click.option("--mqtt-password", default=None, envvar="AUTOCORE_SIM_PASSWORD", help="Password for every connection.")
@click.option("--username-per-device", is_flag=True,
              help="v1 devices log in as their own uuid (the ACL's %u); the password is --mqtt-password.")
@click.option("--fw22-username", default=None, help="The 2.2 boards' shared account (default: --mqtt-username).")
@click.option("--fw22-password", default=None, help="Its password (default: --mqtt-password).")
@click.option("--tls-ca", type=click.Path(exists=True, dir_okay=False), default=None, help="CA file; turns TLS on.")
@click.option("--allow-remote", is_flag=True, help="Allow a broker that is not on this machine.")
@click.option("--topic-prefix", default="autocore", show_default=True, envvar="AUTOCORE_TOPIC_PREFIX",
              help="v1 topic prefix (2.2 boards always use autocore).")
@click.option("--connections", type=click.Choice(["auto", "per-device", "shared"]), default="auto", show_default=True,
              help="One connection per device (own Last Will; liveness tests) or a few shared ones (load). "
                   "auto: per device up to 200 devices.")
@click.option("--shared-connections", type=click.IntRange(min=1), default=4, show_default=True,
              help="Connections per dialect in shared mode.")
@click.option("--keepalive", type=click.IntRange(min=1, max=3600), default=30, show_default=True,
              help="MQTT keep-alive (s); the broker fires a silent connection's Will after 1.5 x this.")
@click.option("--status-interval", type=click.FloatRange(min=0.01), default=5.0, show_default=True,
              help="v1: seconds between Status reports (announced as status_interval).")
@click.option("--telemetry-interval", type=click.FloatRange(min=0.001), default=1.0, show_default=True,
              help="v1: seconds between telemetry messages (relay_board and display_small: 5 x this).")
@click.option("--can-hz", type=click.FloatRange(min=0.01, max=1000), default=10.0, show_default=True,
              help="v1 can_gateway: CAN telemetry messages per second.")
@click.option("--relay-status-interval", type=click.FloatRange(min=0.01), default=5.0, show_default=True,
              help="v1 relay_board: seconds between RelayStatus messages.")
@click.option("--telemetry-qos", type=click.IntRange(0, 1), default=1, show_default=True, help="v1 telemetry QoS.")
@click.option("--status-qos", type=click.IntRange(0, 1), default=0, show_default=True, help="v1 Status report QoS.")
@click.option("--msgpack", "msgpack_fraction", type=click.FloatRange(0.0, 1.0), default=0.25, show_default=True,
              help="Fraction of v1 devices that speak MessagePack (the rest JSON).")
@click.option("--command-latency", default="0.05", show_default=True, callback=_latency, metavar="S|LOW-HIGH",
              help="v1: seconds from a command to its Response (uniform in LOW-HIGH).")
@click.option("--failure-rate", type=click.FloatRange(0.0, 1.0), default=0.0, show_default=True,
              help="v1: fraction of commands that answer success: false.")
@click.option("--slow-commands", default="calibrate,firmware_update,self_test", show_default=True,
              help="v1: command types answered `accepted` first, the final Response --slow-time later.")
@click.option("--slow-time", type=click.FloatRange(min=0.0), default=2.0, show_default=True,
              help="v1: seconds a slow command takes after `accepted`.")
@click.option("--fw22-state-interval", type=click.FloatRange(min=0.01), default=30.0, show_default=True,
              help="2.2 relay: seconds between relays/state messages.")
@click.option("--fw22-display-interval", type=click.FloatRange(min=0.01), default=5.0, show_default=True,
              help="2.2 display: seconds between status messages.")
@click.option("--fw22-switching", is_flag=True,
              help="Every 2.2 relay switches on relays/set and reports relays/state at once "
                   "(today's firmware switches nothing; or use the kind fw22_relay_switching).")
@click.option("--reboot-every", type=click.FloatRange(min=0.01), default=None,
              help="Reboot each device about every this many seconds (0.5 to 1.5 x, at random).")
@click.option("--boot-time", type=click.FloatRange(min=0.0), default=1.0, show_default=True,
              help="Seconds a reboot keeps a device off the broker.")
@click.option("--late-will", is_flag=True,
              help="On a reboot leave the old connection to time out, so its Will (old boot_id) arrives after "
                   "the new boot's announce: a stale Will. Per-device connections only.")
@click.option("--flap-every", type=click.FloatRange(min=0.01), default=None,
              help="Drop each device's connection about every this many seconds (its Will fires).")
@click.option("--flap-down", type=click.FloatRange(min=0.0), default=3.0, show_default=True,
              help="Seconds a flapped connection stays down.")
@click.option("--flap-silent", is_flag=True,
              help="A flap keeps the connection but sends nothing (offline only by the gateway's timeout).")
@click.option("--clean-exit", is_flag=True,
              help="At the end disconnect cleanly (no Wills); by default per-device connections just close, "
                   "so each Will tells the gateway the device is gone.")
@click.option("--seed", type=int, default=1, show_default=True, help="Seed of every random choice.")
@click.option("--uuid-prefix", default="sim", show_default=True,
              help="v1 uuids are PREFIX-KIND-NN; 2.2 uuids esp32-<hash of PREFIX, kind, n>.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="The progress line on stderr.")
@click.option("--summary-json", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write the final figures to this file as JSON.")
@click.option("-v", "--verbose", is_flag=True, help="Log connection events.")
def simulate(**opts: Any) -> None:
    """Run simulated ESP32 devices (v1 and firmware 2.2) against a broker.

    Devices follow PROTOCOL.md: v1 devices announce, report status, send
    telemetry with seq, and answer commands; 2.2 relay boards and displays
    behave as the firmware in the field does. The run stops by itself after
    --duration (or on Ctrl-C); only a broker on this machine unless
    --allow-remote.

    \b
    Examples:
      gateway simulate                                   # 7 devices, one of each kind, 60 s
      gateway simulate --devices can_gateway=2,fw22_relay=1 --duration 300
      gateway simulate --devices sensor_board=5000 --connections shared --telemetry-interval 1
      gateway simulate --devices relay_board=3 --reboot-every 20 --late-will --keepalive 2
      gateway simulate --devices fw22_relay=1 --fw22-state-interval 2 --fw22-switching
    """
    logging.basicConfig(level=logging.INFO if opts["verbose"] else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    fleet = dict(opts["fleet"])
    if opts["fw22_switching"] and fleet.get("fw22_relay"):
        fleet["fw22_relay_switching"] = fleet.get("fw22_relay_switching", 0) + fleet.pop("fw22_relay")
    try:
        config = FleetConfig(
            devices=fleet,
            duration=opts["duration"],
            host=opts["mqtt_host"],
            port=opts["mqtt_port"],
            username=opts["mqtt_username"],
            password=opts["mqtt_password"],
            username_per_device=opts["username_per_device"],
            fw22_username=opts["fw22_username"],
            fw22_password=opts["fw22_password"],
            tls_ca=opts["tls_ca"],
            allow_remote=opts["allow_remote"],
            connections=opts["connections"],
            shared_connections=opts["shared_connections"],
            keepalive=opts["keepalive"],
            v1=V1Options(
                prefix=opts["topic_prefix"],
                status_interval=opts["status_interval"],
                telemetry_interval=opts["telemetry_interval"],
                can_hz=opts["can_hz"],
                relay_status_interval=opts["relay_status_interval"],
                telemetry_qos=opts["telemetry_qos"],
                status_qos=opts["status_qos"],
                latency=opts["command_latency"],
                failure_rate=opts["failure_rate"],
                slow_commands=frozenset(filter(None, (w.strip() for w in opts["slow_commands"].split(",")))),
                slow_time=opts["slow_time"],
            ),
            fw22=Fw22Options(state_interval=opts["fw22_state_interval"],
                             display_interval=opts["fw22_display_interval"]),
            msgpack_fraction=opts["msgpack_fraction"],
            reboot_every=opts["reboot_every"],
            boot_time=opts["boot_time"],
            late_will=opts["late_will"],
            flap_every=opts["flap_every"],
            flap_down=opts["flap_down"],
            flap_silent=opts["flap_silent"],
            clean_exit=opts["clean_exit"],
            seed=opts["seed"],
            uuid_prefix=opts["uuid_prefix"],
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if config.late_will and not config.per_device:
        raise click.UsageError("--late-will needs one connection per device (--connections per-device)")

    runner = Fleet(config)
    mode = "one connection per device" if config.per_device else f"{len(runner.links)} shared connections"
    click.echo(f"simulating {config.total} devices ({', '.join(f'{k}={n}' for k, n in fleet.items() if n)}) "
               f"on {config.host}:{config.port}, {mode}, for {config.duration:g} s", err=True)
    printer = ProgressPrinter(sys.stderr) if opts["progress"] else None

    def stop(signum: int, frame: Any) -> None:  # noqa: ARG001
        runner.stop()

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        figures = runner.run(printer, progress_every=0.5 if printer and printer.tty else 1.0)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if printer is not None:
        printer.end(figures)
    else:
        click.echo("done: " + format_progress(figures), err=True)
    if opts["summary_json"]:
        with open(opts["summary_json"], "w") as fh:
            json.dump(figures, fh, indent=2, sort_keys=True)
    if not figures.get("connects"):
        click.echo(f"error: no device could connect to {config.host}:{config.port}", err=True)
        sys.exit(1)
