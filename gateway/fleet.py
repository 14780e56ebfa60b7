"""The fleet side of the uplink (issue 14): `gateway fleet-ingest` and
`gateway fleet-command send` (also installed as `autocore-fleet-ingest`).

fleet-ingest subscribes to `$share/{group}/{prefix}/+/data` on the fleet
broker (QoS 1, persistent session, manual acknowledgement) and writes the
vehicles' rows into PostgreSQL (storage/fleet.py): each pass takes what
paho has received (up to `--batch` messages or `--max-wait-ms`), stores
it in one transaction, and only then acknowledges those messages. A kill
at any moment loses nothing (the broker redelivers what was not
acknowledged) and stores nothing twice (primary key (vehicle, db, id)).
Several ingesters can run side by side: the shared subscription splits
the messages and the primary key settles any overlap. A payload that is
not an uplink batch is counted, logged and acknowledged (never retried).
"""

from __future__ import annotations

import logging
import queue
import signal
import sys
import threading
import time
import uuid as uuidlib
from typing import Any
from urllib.parse import urlsplit

import click

from gateway.commands.common import DURATION

logger = logging.getLogger("autocore.fleet")


def _client(url: str, client_id: str, username: str | None, password: str | None, ca: str | None,
            cert: str | None, key: str | None, manual_ack: bool) -> tuple[Any, str, int]:
    import ssl

    import paho.mqtt.client as mqtt

    u = urlsplit(url)
    if u.scheme not in ("mqtt", "mqtts") or not u.hostname:
        raise click.BadParameter(f"must be mqtt://HOST[:PORT] or mqtts://HOST[:PORT], got {url!r}",
                                 param_hint="'--fleet-url'")
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
                         manual_ack=manual_ack)
    if username:
        client.username_pw_set(username, password)
    if u.scheme == "mqtts":
        client.tls_set(ca_certs=ca, certfile=cert, keyfile=key, tls_version=ssl.PROTOCOL_TLS_CLIENT)
    return client, u.hostname, u.port or (8883 if u.scheme == "mqtts" else 1883)


def broker_options(func: Any) -> Any:
    options = [
        click.option("--fleet-url", envvar="AUTOCORE_FLEET_URL", required=True,
                     help="the fleet broker, mqtt://HOST[:PORT] or mqtts://… (AUTOCORE_FLEET_URL)"),
        click.option("--fleet-username", envvar="AUTOCORE_FLEET_USERNAME", default=None),
        click.option("--fleet-password", envvar="AUTOCORE_FLEET_PASSWORD", default=None),
        click.option("--fleet-tls-ca", envvar="AUTOCORE_FLEET_TLS_CA", default=None),
        click.option("--fleet-tls-cert", envvar="AUTOCORE_FLEET_TLS_CERT", default=None),
        click.option("--fleet-tls-key", envvar="AUTOCORE_FLEET_TLS_KEY", default=None),
        click.option("--uplink-prefix", envvar="AUTOCORE_UPLINK_PREFIX", default="fleet", show_default=True),
    ]
    for option in reversed(options):
        func = option(func)
    return func


class Ingester:
    def __init__(self, conn: Any, client: Any, batch: int, max_wait_s: float) -> None:
        self.conn, self.client = conn, client
        self.batch, self.max_wait_s = batch, max_wait_s
        self.inbox: queue.Queue = queue.Queue()
        self.stop = threading.Event()
        self.messages = self.rows_new = self.rejected = 0

    def on_message(self, c: Any, u: Any, msg: Any) -> None:
        self.inbox.put((msg.mid, msg.qos, bytes(msg.payload)))

    def run(self) -> None:
        from protocol.uplink import UplinkError, decode_batch
        from storage.fleet import store_batches

        while not self.stop.is_set():
            try:
                first = self.inbox.get(timeout=0.2)
            except queue.Empty:
                continue
            taken = [first]
            deadline = time.monotonic() + self.max_wait_s
            while len(taken) < self.batch:
                try:
                    taken.append(self.inbox.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            batches = []
            for _mid, _qos, payload in taken:
                try:
                    batches.append(decode_batch(payload))
                except UplinkError as exc:
                    self.rejected += 1
                    logger.warning("rejected a message that is not an uplink batch: %s", exc)
            self.rows_new += store_batches(self.conn, batches)  # an error stops us: nothing is acked
            for mid, qos, _payload in taken:
                if qos:
                    self.client.ack(mid, qos)
            self.messages += len(taken)


@click.command("fleet-ingest")
@broker_options
@click.option("--db-url", envvar="AUTOCORE_FLEET_DB_URL", required=True,
              help="the fleet's PostgreSQL, postgresql://… (AUTOCORE_FLEET_DB_URL)")
@click.option("--share-group", envvar="AUTOCORE_FLEET_SHARE_GROUP", default="fleet", show_default=True)
@click.option("--client-id", envvar="AUTOCORE_FLEET_CLIENT_ID", default=None,
              help="this ingester's MQTT client id (its persistent session); default fleet-ingest-<host>-<pid>")
@click.option("--batch", default=500, show_default=True, help="messages stored per transaction at most")
@click.option("--max-wait-ms", default=50, show_default=True, help="longest wait to fill a transaction")
@click.option("--session-expiry-s", default=86400, show_default=True)
def fleet_ingest(fleet_url: str, fleet_username: str | None, fleet_password: str | None, fleet_tls_ca: str | None,
                 fleet_tls_cert: str | None, fleet_tls_key: str | None, uplink_prefix: str, db_url: str,
                 share_group: str, client_id: str | None, batch: int, max_wait_ms: int,
                 session_expiry_s: int) -> None:
    """Store every vehicle's uplink in PostgreSQL, exactly once.

    \b
    Example:
      gateway fleet-ingest --fleet-url mqtts://fleet.example:8883 --db-url postgresql://fleet@db/fleet
    """
    import os
    import socket

    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    from protocol.uplink import ingest_subscriptions
    from storage.fleet import connect, migrate_fleet

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        conn = connect(db_url)
        migrate_fleet(conn)
    except Exception as exc:
        click.echo(f"error: cannot use the fleet database: {' '.join(str(exc).split())}", err=True)
        sys.exit(1)
    cid = client_id or f"fleet-ingest-{socket.gethostname()}-{os.getpid()}"
    client, host, port = _client(fleet_url, cid, fleet_username, fleet_password, fleet_tls_ca, fleet_tls_cert,
                                 fleet_tls_key, manual_ack=True)
    ingester = Ingester(conn, client, batch, max_wait_ms / 1000.0)
    topics = ingest_subscriptions(uplink_prefix, share_group)

    def on_connect(c: Any, u: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            logger.warning("the fleet broker refused the connection: %s", reason)
            return
        for t in topics:
            c.subscribe(t, qos=1)
        logger.info("fleet-ingest %s connected to %s:%s, subscribed to %s", cid, host, port, ", ".join(topics))

    client.on_connect = on_connect
    client.on_message = ingester.on_message
    client.reconnect_delay_set(1, 30)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = int(session_expiry_s)
    props.ReceiveMaximum = 65535
    client.connect_async(host, port, keepalive=30, clean_start=False, properties=props)
    client.loop_start()
    signal.signal(signal.SIGTERM, lambda *a: ingester.stop.set())
    signal.signal(signal.SIGINT, lambda *a: ingester.stop.set())
    try:
        ingester.run()
    finally:
        client.disconnect()
        client.loop_stop()
        logger.info("fleet-ingest stopped: %d messages, %d new rows, %d rejected", ingester.messages,
                    ingester.rows_new, ingester.rejected)


def ingest_main() -> None:
    """The `autocore-fleet-ingest` console entry point."""
    fleet_ingest()


@click.group("fleet-command")
def fleet_command() -> None:
    """Commands from the fleet to a vehicle.

    \b
    Example:
      gateway fleet-command send car-17 esp32-relay-01 relay_control --param relay_id=1 --param state=true \\
          --fleet-url mqtts://fleet.example:8883 --db-url postgresql://fleet@db/fleet
    """


@fleet_command.command("send")
@click.argument("vehicle")
@click.argument("uuid")
@click.argument("command_type")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE", help="a parameter (repeatable)")
@click.option("--params-json", default=None, help="parameters as one JSON object")
@click.option("--topic", type=click.Choice(["command", "relay/command"]), default="command", show_default=True)
@click.option("--timeout", type=DURATION, default=None, metavar="S",
              help="how long the device has to answer each send (30, 30s, 2m)")
@click.option("--max-attempts", type=int, default=None)
@click.option("--ttl", "ttl_s", type=DURATION, default=None, metavar="S",
              help="how long the command may wait, the vehicle offline (300, 10m, 1h), as `command send --ttl`")
@click.option("--origin-id", default=None, help="unique id of this command (default: a new uuid)")
@click.option("--db-url", envvar="AUTOCORE_FLEET_DB_URL", default=None,
              help="the fleet's PostgreSQL: record the command there too (AUTOCORE_FLEET_DB_URL)")
@broker_options
def fleet_command_send(vehicle: str, uuid: str, command_type: str, params: tuple[str, ...], params_json: str | None,
                       topic: str, timeout: float | None, max_attempts: int | None, ttl_s: float | None,
                       origin_id: str | None, db_url: str | None, fleet_url: str, fleet_username: str | None,
                       fleet_password: str | None, fleet_tls_ca: str | None, fleet_tls_cert: str | None,
                       fleet_tls_key: str | None, uplink_prefix: str) -> None:
    """Send a command to device UUID of VEHICLE through the fleet broker.

    The vehicle inserts it once (by its origin id) when it next connects;
    its state changes come back through fleet-ingest into fleet_commands.

    \b
    Example:
      gateway fleet-command send car-17 esp32-relay-01 relay_control --param relay_id=1 --param state=true
    """
    from gateway.commands.command import build_parameters
    from protocol.uplink import FleetCommand, UplinkError, commands_topic, encode_command

    parameters = build_parameters(params, params_json)
    try:
        cmd = FleetCommand(origin_id or str(uuidlib.uuid4()), uuid, command_type, parameters or None, topic,
                           timeout, max_attempts, ttl_s)
        target = commands_topic(uplink_prefix, vehicle)
    except UplinkError as exc:
        raise click.UsageError(str(exc)) from None
    if db_url:
        from storage.fleet import connect, migrate_fleet, record_command

        conn = connect(db_url)
        migrate_fleet(conn)
        if not record_command(conn, vehicle, cmd.origin_id, uuid, command_type, cmd.parameters, topic, timeout,
                              max_attempts, ttl_s):
            click.echo(f"error: a command with origin id {cmd.origin_id} exists already", err=True)
            sys.exit(1)
        conn.close()
    client, host, port = _client(fleet_url, f"fleet-command-{cmd.origin_id}"[:64], fleet_username, fleet_password,
                                 fleet_tls_ca, fleet_tls_cert, fleet_tls_key, manual_ack=False)
    try:
        client.connect(host, port)
    except OSError as exc:
        click.echo(f"error: cannot reach the fleet broker at {host}:{port}: {exc}", err=True)
        sys.exit(1)
    client.loop_start()
    try:
        info = client.publish(target, encode_command(cmd), qos=1)
        info.wait_for_publish(10)
        if not info.is_published():
            click.echo("error: the fleet broker did not acknowledge the command within 10 s", err=True)
            sys.exit(1)
    finally:
        client.disconnect()
        client.loop_stop()
    click.echo(cmd.origin_id)
