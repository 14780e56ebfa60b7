"""The paho client, tuned for draining a large QoS 1 backlog.

Profiling the backlog drain showed paho's network thread at about half of
the core process: several `recv()` calls per packet, a topic matcher run on
every message for per-topic callbacks this gateway never registers, and one
`send()` per PUBACK. This subclass keeps paho's protocol handling and changes
only those three, through paho's internal hooks (setup.cfg pins the paho
minor version they were tested with, `TESTED_PAHO`; the integration tests
cover them on a real broker):

* reads fill a 64 KiB buffer and serve paho's small reads from it;
* a QoS 0 or 1 PUBLISH without MQTT v5 properties (what devices send) is
  parsed here into a small `InboundPublish` and goes straight to
  `on_message`; anything else takes paho's own path (its MQTT v5 Properties
  object alone cost about a tenth of the core process);
* PUBACKs are written in batches by the network thread (`write_acks`), never
  between the bytes of a packet paho is in the middle of writing.

Only the thread that runs the network loop may call `write_acks` or read.

`make_client` checks at start-up that those internals exist. Where they do
not (another paho), it warns and returns a `PublicClient` instead: paho's
own reading and its public `client.ack`, with the same small interface, so
a QoS 1 message is still acknowledged only once the store has committed it.
"""

from __future__ import annotations

import logging
import struct
from collections import deque
from typing import Any

import paho.mqtt
import paho.mqtt.client as mqtt

logger = logging.getLogger("autocore.mqtt")

TESTED_PAHO = "2.2"  # the minor version whose internals GatewayClient uses (setup.cfg pins it)
# paho's internals GatewayClient overrides or reads: methods of mqtt.Client,
# then attributes of an instance.
HOOK_METHODS = ("_sock_recv", "_handle_publish", "_handle_on_message", "want_write")
HOOK_ATTRIBUTES = ("_sock", "_in_packet", "_protocol", "_userdata", "_msgtime_mutex", "_last_msg_out")

RECV_CHUNK = 65536
_PUBACK = struct.Struct("!BBH")  # PUBACK, remaining length 2, packet id (reason 0 may be left out in v5)
PUBACK = 0x40


class InboundPublish:
    """What `on_message` reads of a PUBLISH (the fields of paho's MQTTMessage it uses)."""

    __slots__ = ("topic", "payload", "qos", "mid", "retain")

    def __init__(self, topic: str, payload: bytes, qos: int, mid: int, retain: bool) -> None:
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.mid = mid
        self.retain = retain


class GatewayClient(mqtt.Client):
    tuned = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rbuf = bytearray()
        self._rbuf_sock: Any = None
        # (connection generation, packet id) waiting to be acknowledged;
        # appended by any thread, written by the network thread.
        self.pending_acks: deque[tuple[int, int]] = deque()
        self._ack_out = b""  # the part of a batch of PUBACKs the socket has not taken yet

    # -- reading -------------------------------------------------------------

    def _sock_recv(self, bufsize: int) -> bytes:
        sock = self._sock
        if sock is not self._rbuf_sock:  # a new connection: nothing buffered belongs to it
            self._rbuf_sock = sock
            self._rbuf.clear()
            self._ack_out = b""
        if not self._rbuf:
            data = super()._sock_recv(RECV_CHUNK)  # raises BlockingIOError when there is nothing
            if not data:
                return data  # the broker closed the connection
            if len(data) <= bufsize:
                return data
            self._rbuf += data
        chunk = bytes(self._rbuf[:bufsize])
        del self._rbuf[:bufsize]
        return chunk

    def buffered(self) -> bool:
        """Bytes already read from the socket wait here: select() would not say so."""
        return bool(self._rbuf) and self._rbuf_sock is self._sock

    def _handle_publish(self) -> mqtt.MQTTErrorCode:
        header = self._in_packet["command"]
        packet = self._in_packet["packet"]
        qos = (header & 0x06) >> 1
        if qos > 1 or self._protocol != mqtt.MQTTv5 or len(packet) < 3:
            return super()._handle_publish()
        pos = 2 + ((packet[0] << 8) | packet[1])
        mid = 0
        if qos:
            if pos + 2 > len(packet):
                return super()._handle_publish()
            mid = (packet[pos] << 8) | packet[pos + 1]
            pos += 2
        if pos >= len(packet) or packet[pos] != 0:
            return super()._handle_publish()  # it has properties (or is malformed): paho's way
        try:
            topic = packet[2:pos - (2 if qos else 0)].decode("utf-8")
        except UnicodeDecodeError:
            return super()._handle_publish()
        # manual_ack: a QoS 1 message is acknowledged by write_acks, after commit.
        on_message = self.on_message
        if on_message is not None:
            # InboundPublish has the fields of MQTTMessage that on_message reads.
            message: Any = InboundPublish(topic, bytes(packet[pos + 1:]), qos, mid, bool(header & 1))
            on_message(self, self._userdata, message)
        return mqtt.MQTT_ERR_SUCCESS

    def _handle_on_message(self, message: mqtt.MQTTMessage) -> None:
        # No per-topic callbacks are ever registered: skip paho's matcher.
        on_message = self.on_message
        if on_message is not None:
            on_message(self, self._userdata, message)

    # -- acknowledging -------------------------------------------------------------

    def write_acks(self, generation: int, limit: int = 4096) -> int:
        """Write waiting PUBACKs of this connection in one send; returns how
        many went. Acks of an earlier connection are dropped (the broker
        delivers those messages again). Nothing is written while paho has a
        packet of its own half written."""
        sock = self._sock
        if sock is None:
            return 0
        if self._ack_out:
            if not self._send_ack_bytes(sock):
                return 0
        if self.want_write() or not self.pending_acks:
            return 0
        parts: list[bytes] = []
        acks = self.pending_acks
        while acks and len(parts) < limit:
            gen, mid = acks.popleft()
            if gen == generation:
                parts.append(_PUBACK.pack(PUBACK, 2, mid))
        if not parts:
            return 0
        self._ack_out = b"".join(parts)
        self._send_ack_bytes(sock)
        return len(parts)

    def _send_ack_bytes(self, sock: Any) -> bool:
        """Send what is left of the current batch; True when all of it went."""
        try:
            sent = sock.send(self._ack_out)
        except BlockingIOError:
            return False
        except OSError:
            self._ack_out = b""  # the connection is gone; the broker redelivers
            return False
        self._ack_out = self._ack_out[sent:]
        if not self._ack_out:
            with self._msgtime_mutex:
                self._last_msg_out = mqtt.time_func()  # keep-alive: we did write
            return True
        return False

    def acks_waiting(self) -> bool:
        return bool(self._ack_out) or bool(self.pending_acks)


class PublicClient(mqtt.Client):
    """paho's public path, for a paho whose internals GatewayClient cannot
    use: paho reads every packet itself, and each PUBACK goes through
    `client.ack` (queued by paho, written by `loop_write`). The same
    interface as GatewayClient's, so MqttIO does not know which it has."""

    tuned = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pending_acks: deque[tuple[int, int]] = deque()

    def buffered(self) -> bool:
        return False  # paho reads only what it needs: select() sees the rest

    def write_acks(self, generation: int, limit: int = 4096) -> int:
        """Hand waiting acks of this connection to paho (network thread only);
        acks of an earlier connection are dropped (the broker redelivers)."""
        count = 0
        acks = self.pending_acks
        while acks and count < limit:
            gen, mid = acks.popleft()
            if gen == generation:
                self.ack(mid, 1)
                count += 1
        return count

    def acks_waiting(self) -> bool:
        return bool(self.pending_acks)


def missing_hooks(client: mqtt.Client) -> list[str]:
    """The internals GatewayClient relies on that this paho lacks."""
    missing = [name for name in HOOK_METHODS if not callable(getattr(mqtt.Client, name, None))]
    missing += [name for name in HOOK_ATTRIBUTES if not hasattr(client, name)]
    packet = getattr(client, "_in_packet", None)
    if "_in_packet" not in missing and not (isinstance(packet, dict) and {"command", "packet"} <= packet.keys()):
        missing.append("_in_packet[command, packet]")
    if not callable(getattr(mqtt, "time_func", None)):
        missing.append("time_func")
    return missing


def make_client(**kwargs: Any) -> GatewayClient | PublicClient:
    """The tuned client where this paho has what it needs, else paho's public path (with a warning)."""
    client = GatewayClient(**kwargs)
    missing = missing_hooks(client)
    if not missing:
        return client
    logger.warning("paho-mqtt %s lacks internals the tuned client uses (%s; tested with %s.x): using paho's "
                   "public path (client.ack), slower on a large backlog", paho.mqtt.__version__,
                   ", ".join(missing), TESTED_PAHO)
    return PublicClient(**kwargs)


AckingClient = GatewayClient | PublicClient
