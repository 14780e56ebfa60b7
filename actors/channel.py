"""The local socket between the core and the store process.

Frames are a 4-byte big-endian length followed by one `actors.wire` message.
Any thread may `send` (a lock keeps frames whole); one reader thread hands
every received message to a callback, in order. When the other side goes
away the callback gets `ChannelClosed` once.
"""

from __future__ import annotations

import logging
import socket
import threading
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
        self._send_lock = threading.Lock()
        self._reader: threading.Thread | None = None
        self.frames_sent = 0
        self.frames_received = 0
        self.bytes_sent = 0
        self.bytes_received = 0

    @classmethod
    def from_fd(cls, fd: int, name: str) -> "Channel":
        return cls(socket.socket(fileno=fd), name)

    def send(self, message: Any) -> None:
        data = frame(wire.encode(message))
        with self._send_lock:
            self._sock.sendall(data)
            self.frames_sent += 1
            self.bytes_sent += len(data)

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
        on_message(ChannelClosed(reason))

    def close(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()

    def snapshot(self) -> dict:
        return {
            "frames_sent": self.frames_sent,
            "frames_received": self.frames_received,
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
        }
