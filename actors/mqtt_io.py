"""MqttIO: the paho client, its connection, and everything that crosses it.

The network runs in one thread of this actor's own (paho's external-loop
API: select, loop_read, loop_write, loop_misc), so that every message read in
one pass over the socket goes to the Router as one batch, and only that
thread ever writes to the socket. The actor thread publishes and
acknowledges; paho queues those and our wake pipe brings the network thread
round to send them.

Inbound QoS 1 messages are acknowledged only when `Complete` names them,
which happens after their effects are committed (or when there is nothing to
store). At most `max_unacked` received messages may be incomplete at once;
past that the network thread stops reading and the broker keeps the rest.
"""

from __future__ import annotations

import logging
import os
import random
import select
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from actors.base import GatewayActor
from actors.messages import Complete, Connected, InboundBatch, Publish, RawInbound, StopReading, Token
from actors.paho_client import AckingClient, InboundPublish, make_client
from actors.settings import GatewaySettings
from protocol.decode import no_local
from protocol.values import Publication

logger = logging.getLogger("autocore.mqtt")

MAX_BATCH = 2000  # messages read before the batch goes on to the Router
BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 30.0


@dataclass(frozen=True)
class _Drain:
    """Network thread -> actor: paho has room again; publish the backlog."""



def session_client_id(settings: GatewaySettings) -> str:
    """The client id of this instance's persistent session: with a share
    group each instance has its own (`AUTOCORE_MQTT_CLIENT_ID-INSTANCE_ID`),
    so a restarted instance gets back the share the broker kept for it."""
    if settings.share_group:
        return f"{settings.mqtt_client_id}-{settings.instance_id}"
    return settings.mqtt_client_id


class MqttIO(GatewayActor):
    name = "MqttIO"

    def __init__(
        self,
        settings: GatewaySettings,
        subscriptions: list[tuple[str, int]],
        will: Publication,
        router: Any = None,  # told every InboundBatch (from the network thread)
        listener: Any = None,  # told `Connected` on every (re)connection
    ) -> None:
        super().__init__()
        self.settings = settings
        self.subscriptions = subscriptions
        self.will = will
        self.listener = listener
        self.router = router
        self.client: AckingClient | None = None
        self.paho_path: str | None = None  # "tuned" or "public" (actors/paho_client.py), once the client is made
        self.generation = 0
        self.connected = False
        self.ever_subscribed = threading.Event()
        self._halt = threading.Event()
        self._accepting = True
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._net: threading.Thread | None = None
        self._buffer: list[RawInbound] = []
        # Inbound pipeline: received - completed = messages not yet done.
        self.received = 0
        self.completed = 0
        self.max_unacked = settings.max_unacked
        self._closing = False
        # Outbound backlog (what paho refused for now); commands first.
        self._commands: deque[Publication] = deque()
        self._others: deque[Publication] = deque()
        self._backlogged = False
        self.connected_since: float | None = None
        self.last_disconnect: str | None = None

    # -- lifecycle -------------------------------------------------------

    def start_network(self) -> None:
        """Connect (retrying with back-off) and start reading; called once at
        start-up, when every actor it hands messages to runs."""
        self.client = self._make_client()
        self._net = threading.Thread(target=self._network_loop, name="mqtt-network", daemon=True)
        self._net.start()

    def _make_client(self) -> AckingClient:
        s = self.settings
        client = make_client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=session_client_id(s),
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        self.paho_path = "tuned" if client.tuned else "public"
        if s.mqtt_username:
            client.username_pw_set(s.mqtt_username, s.mqtt_password)
        if s.mqtt_tls_ca:
            client.tls_set(ca_certs=s.mqtt_tls_ca, certfile=s.mqtt_tls_cert, keyfile=s.mqtt_tls_key,
                           tls_version=ssl.PROTOCOL_TLS_CLIENT)
        client.max_inflight_messages_set(1000)
        client.max_queued_messages_set(s.mqtt_max_outgoing)
        client.will_set(self.will.topic, self.will.payload, qos=self.will.qos, retain=self.will.retain)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.on_publish = self._on_publish
        # External loop: paho must never write from the publishing thread.
        client.on_socket_register_write = lambda c, u, sock: self._wake()
        return client

    def _connect_properties(self) -> Properties:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = int(self.settings.mqtt_session_expiry_s)
        props.ReceiveMaximum = int(self.settings.mqtt_receive_maximum)
        return props

    def on_stop(self) -> None:
        self._halt.set()
        self._wake()
        if self._net is not None:
            self._net.join(timeout=3)
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass

    # -- network thread ----------------------------------------------------

    def _network_loop(self) -> None:
        backoff = BACKOFF_MIN_S
        client = self.client
        assert client is not None
        first = True
        while not self._halt.is_set():
            try:
                if first:
                    client.connect(self.settings.mqtt_host, self.settings.mqtt_port,
                                   keepalive=int(self.settings.mqtt_keepalive_s), clean_start=False,
                                   properties=self._connect_properties())
                    first = False
                else:
                    client.reconnect()
            except (OSError, ssl.SSLError, ValueError) as exc:
                self.counters["connect_failures"] += 1
                self.last_disconnect = f"connect failed: {exc}"
                delay = backoff * (0.5 + random.random())
                logger.warning("cannot reach the broker at %s:%s (%s); retrying in %.1f s",
                               self.settings.mqtt_host, self.settings.mqtt_port, exc, delay)
                if self._halt.wait(delay):
                    return
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            self._serve(client)
            self.connected = False
            if self._halt.is_set() or self._closing:
                return
            self.counters["connection_lost"] += 1
            delay = BACKOFF_MIN_S * (0.5 + random.random())
            logger.warning("lost the broker connection (%s); reconnecting in %.1f s", self.last_disconnect, delay)
            if self._halt.wait(delay):
                return
            backoff = BACKOFF_MIN_S

    def _serve(self, client: AckingClient) -> None:
        """Run one connection until it drops or we stop."""
        while not self._halt.is_set():
            sock = client.socket()
            if sock is None:
                return
            full = self.received - self.completed >= self.max_unacked
            rlist: list[Any] = [self._wake_r]
            if not full:
                rlist.append(sock)
            wlist = [sock] if client.want_write() or client.acks_waiting() else []
            pending = not full and (client.buffered() or (hasattr(sock, "pending") and sock.pending() > 0))
            try:
                readable, writable, _ = select.select(rlist, wlist, [], 0 if pending else 1.0)
            except (OSError, ValueError):
                return
            if self._wake_r in readable:
                try:
                    os.read(self._wake_r, 65536)
                except BlockingIOError:
                    pass
            if sock in readable or pending:
                start = self.received
                while True:
                    before = self.received
                    if client.loop_read() != mqtt.MQTT_ERR_SUCCESS:
                        self._flush_inbound()
                        return
                    if (self.received == before or self.received - start >= MAX_BATCH
                            or self.received - self.completed >= self.max_unacked):
                        break
                self._flush_inbound()
            if client.want_write() or sock in writable:
                if client.loop_write() != mqtt.MQTT_ERR_SUCCESS:
                    return
            if client.acks_waiting():
                self.counters["acks_written"] += client.write_acks(self.generation)
            if client.loop_misc() != mqtt.MQTT_ERR_SUCCESS:
                return

    def _flush_inbound(self) -> None:
        if self._buffer:
            batch, self._buffer = self._buffer, []
            self.router.tell(InboundBatch(tuple(batch)))

    # paho callbacks (network thread): hand on and return

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.last_disconnect = f"broker refused the connection: {reason_code}"
            logger.error("the broker refused the connection: %s", reason_code)
            return
        self.generation += 1
        self.connected = True
        self.connected_since = time.time()
        # Retained messages only for a new subscription: on a resumed session
        # a retained Will would otherwise arrive again after what the device
        # sent since, and take a live device offline. No Local where the
        # gateway only observes others (2.2 relays/set, where it also sends
        # its own commands: those must not come back as observed ones).
        client.subscribe([(topic, mqtt.SubscribeOptions(qos=qos, noLocal=no_local(topic),
                                                        retainHandling=mqtt.SubscribeOptions.RETAIN_SEND_IF_NEW_SUB))
                          for topic, qos in self.subscriptions])
        self.actor_ref.tell(Connected(self.generation))

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        refused = [(t, str(rc)) for (t, _), rc in zip(self.subscriptions, reason_codes, strict=False) if rc.is_failure]
        if refused:
            logger.error("the broker refused subscriptions: %s", refused)
            self.counters["subscriptions_refused"] += len(refused)
        if not self.ever_subscribed.is_set():
            self.ever_subscribed.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected = False
        self.last_disconnect = str(reason_code)

    def _on_message(self, client, userdata, message: InboundPublish | mqtt.MQTTMessage) -> None:
        if not self._accepting:
            # Stopping: not acknowledged, so the broker delivers it again next time.
            self.counters["left_to_broker"] += 1
            return
        self.received += 1
        payload = message.payload
        if isinstance(payload, bytearray):  # a frozen message holds nothing mutable
            payload = bytes(payload)
        self._buffer.append(RawInbound(
            message.topic, payload, message.qos, time.time(),
            Token(self.generation, message.mid, message.qos),
        ))

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        if self._backlogged:
            self.actor_ref.tell(_Drain())

    # -- actor -------------------------------------------------------------

    def handle(self, message: Any) -> Any:
        if isinstance(message, Complete):
            self._complete(message.tokens)
        elif isinstance(message, Publish):
            (self._commands if message.command else self._others).append(message.publication)
            self._drain()
        elif isinstance(message, _Drain):
            self._drain()
        elif isinstance(message, Connected):
            logger.info("connected to the broker at %s:%s (connection %d)",
                        self.settings.mqtt_host, self.settings.mqtt_port, message.generation)
            if self.listener is not None:
                self.listener.tell(message)
        elif isinstance(message, StopReading):
            self._accepting = False
        else:
            return super().handle(message)
        return None

    def _complete(self, tokens: tuple[Token, ...]) -> None:
        """The network thread writes the PUBACKs, in batches (GatewayClient)."""
        client = self.client
        acked = 0
        generation = self.generation
        for token in tokens:
            self.completed += 1
            if token.qos == 0:
                continue
            if token.generation != generation:
                self.counters["acks_dropped_old_connection"] += 1  # the broker redelivers it
                continue
            if client is not None:
                client.pending_acks.append((token.generation, token.mid))
                acked += 1
        self.counters["acked"] += acked
        self._wake()

    def _drain(self) -> None:
        client = self.client
        if client is None:
            return
        for queue, kind in ((self._commands, "commands"), (self._others, "other")):
            while queue:
                pub = queue[0]
                info = client.publish(pub.topic, pub.payload, qos=pub.qos, retain=pub.retain)
                if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
                    self._backlogged = True
                    self.counters["publish_backlogged"] += 1
                    self._wake()
                    return
                queue.popleft()
                if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                    self.counters["publish_errors"] += 1
                    logger.warning("publish to %s failed: %s", pub.topic, mqtt.error_string(info.rc))
                elif info.rc == mqtt.MQTT_ERR_NO_CONN and pub.qos == 0:
                    self.counters["published_lost_offline_qos0"] += 1
                else:
                    self.counters[f"published_{kind}"] += 1
        self._backlogged = False
        self._wake()

    # -- inspection ----------------------------------------------------------

    @property
    def unacked(self) -> int:
        return self.received - self.completed

    def summary(self) -> str:
        state = "connected" if self.connected else "disconnected"
        return f"{state}, {self.unacked} unacknowledged, backlog {len(self._commands) + len(self._others)}"

    def state(self) -> dict:
        return {
            "connected": self.connected,
            "connection": self.generation,
            "connected_since": self.connected_since,
            "last_disconnect": self.last_disconnect,
            "broker": f"{self.settings.mqtt_host}:{self.settings.mqtt_port}",
            "received": self.received,
            "completed": self.completed,
            "unacknowledged": self.unacked,
            "max_unacknowledged": self.max_unacked,
            "accepting": self._accepting,
            "outgoing_backlog": {"commands": len(self._commands), "other": len(self._others)},
            "max_outgoing": self.settings.mqtt_max_outgoing,
            "paho_path": self.paho_path,
        }

    def drained(self) -> bool:
        return self.unacked == 0

    def publish_and_disconnect(self, last: Publication, timeout: float) -> bool:
        """Publish the gateway's last status and disconnect cleanly (stop)."""
        client = self.client
        if client is None or not self.connected:
            return False
        self._drain()
        info = client.publish(last.topic, last.payload, qos=last.qos, retain=last.retain)
        self._wake()
        deadline = time.time() + timeout
        while not info.is_published() and time.time() < deadline and self.connected:
            time.sleep(0.01)
        published = info.is_published()
        self._closing = True
        client.disconnect()
        self._wake()
        return published
