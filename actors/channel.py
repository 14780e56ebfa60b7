"""The local socket between the core and the store process.

Frames are a 4-byte big-endian length followed by one `actors.wire` message.
Any thread may `send`: it encodes the message (so a message that cannot be
encoded fails in the sender's hands) and queues the frame. One writer thread
writes everything queued in one `sendall`: a hundred device actors
each writing their own small frame under a lock made a convoy that held the
Router's telemetry back by seconds (the mixed-fleet benchmark). Each
sender's messages keep their order. One reader thread hands every received
message to a callback, in order; when the other side goes away the callback
gets `ChannelClosed` once.

The queue is bounded by what feeds it: messages carrying tokens by the
inbound pipeline (`AUTOCORE_MAX_UNACKED`), the rest by the number of devices;
its depth is in the snapshot.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

from actors import wire
from actors.framing import HEADER, frame, recv_frame

logger = logging.getLogger(__name__)

MAX_FRAME = 256 * 1024 * 1024


@dataclass(frozen=True)
class ChannelClosed:
    reason: str


class Channel:
    def __init__(self, sock: socket.socket, name: str) -> None:
        self._sock = sock
        self._name = name
        self._queue: deque[bytes] = deque()  # encoded frames
        self._ready = threading.Condition()
        self._closed = False
        self._peer_gone = False
        self._writer = threading.Thread(target=self._write_loop, name=f"channel-{name}-writer", daemon=True)
        self._writer.start()
        self.max_queued = 0
        self._reader: threading.Thread | None = None
        self.frames_sent = 0
        self.frames_received = 0
        self.bytes_sent = 0
        self.bytes_received = 0

    @classmethod
    def from_fd(cls, fd: int, name: str) -> "Channel":
        return cls(socket.socket(fileno=fd), name)

    @property
    def closed(self) -> bool:
        """Closed, or the other process has closed its end (read EOF):
        nothing sent now would be answered."""
        return self._closed or self._peer_gone

    def send(self, message: Any) -> None:
        """Encode `message` and queue it for the writer thread. Raises what
        encoding raises, and OSError once the channel is closed."""
        data = frame(wire.encode(message))
        if self._closed:
            raise OSError(f"channel {self._name} is closed")
        with self._ready:
            self._queue.append(data)
            if len(self._queue) == 1:
                self._ready.notify()

    def _write_loop(self) -> None:
        while True:
            with self._ready:
                while not self._queue and not self._closed:
                    self._ready.wait()
                if not self._queue:
                    return
                batch = list(self._queue)
                self._queue.clear()
                self._ready.notify_all()  # for flush()
            self.max_queued = max(self.max_queued, len(batch))
            data = b"".join(batch)
            try:
                self._sock.sendall(data)
            except OSError as exc:
                logger.debug("channel %s: write failed: %s", self._name, exc)
                self._closed = True
                return
            self.frames_sent += len(batch)
            self.bytes_sent += len(data)

    def flush(self, timeout: float) -> bool:
        """Wait until everything queued so far has been handed to the socket."""
        deadline = time.monotonic() + timeout
        with self._ready:
            while self._queue and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._ready.wait(left)
        return not self._queue

    def start_reader(self, on_message: Callable[[Any], None]) -> None:
        self._reader = threading.Thread(target=self._read_loop, args=(on_message,), name=f"channel-{self._name}", daemon=True)
        self._reader.start()

    def _read_loop(self, on_message: Callable[[Any], None]) -> None:
        reason = "closed by the other process"
        try:
            while True:
                data = recv_frame(self._sock, MAX_FRAME)
                self.frames_received += 1
                self.bytes_received += len(data) + HEADER.size
                on_message(wire.decode(data))
        except EOFError:
            pass
        except ValueError as exc:  # over the limit, or wire.WireError
            reason = f"bad frame: {exc}"
        except OSError as exc:
            reason = f"socket error: {exc}"
        logger.debug("channel %s: %s", self._name, reason)
        self._peer_gone = True
        on_message(ChannelClosed(reason))

    def close(self) -> None:
        self.flush(1.0)
        with self._ready:
            self._closed = True
            self._ready.notify_all()
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()

    def snapshot(self) -> dict:
        return {
            "frames_sent": self.frames_sent,
            "send_queue": len(self._queue),
            "send_queue_max": self.max_queued,
            "frames_received": self.frames_received,
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
        }


class StoreLink:
    """What core's actors send to the store through. Once the store process
    is gone (the channel closed), a message to it is dropped and counted
    instead of raising in whichever actor sent it: the launcher is already
    stopping the gateway, and what was not committed was not acknowledged,
    so the broker delivers it again. Encoding errors still raise."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.dropped = 0

    @property
    def closed(self) -> bool:
        return self.channel.closed

    def send(self, message: Any) -> None:
        try:
            self.channel.send(message)
        except OSError:
            self.dropped += 1
