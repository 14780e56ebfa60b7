"""The local socket between the core and the store process.

Frames are a 4-byte big-endian length followed by one `actors.wire` message.
Any thread may `send` (a lock keeps frames whole); one reader thread hands
every received message to a callback, in order. When the other side goes
away the callback gets `ChannelClosed` once.
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
from dataclasses import dataclass
from typing import Any, Callable

from actors import wire

logger = logging.getLogger(__name__)

_HEADER = struct.Struct(">I")
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
        data = wire.encode(message)
        frame = _HEADER.pack(len(data)) + data
        with self._send_lock:
            self._sock.sendall(frame)
            self.frames_sent += 1
            self.bytes_sent += len(frame)

    def start_reader(self, on_message: Callable[[Any], None]) -> None:
        self._reader = threading.Thread(target=self._read_loop, args=(on_message,), name=f"channel-{self._name}", daemon=True)
        self._reader.start()

    def _recv_exact(self, n: int) -> bytes | None:
        chunks = []
        while n:
            chunk = self._sock.recv(min(n, 1 << 20))
            if not chunk:
                return None
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def _read_loop(self, on_message: Callable[[Any], None]) -> None:
        reason = "closed by the other process"
        try:
            while True:
                header = self._recv_exact(_HEADER.size)
                if header is None:
                    break
                (size,) = _HEADER.unpack(header)
                if size > MAX_FRAME:
                    reason = f"frame of {size} bytes is over the limit"
                    break
                data = self._recv_exact(size)
                if data is None:
                    break
                self.frames_received += 1
                self.bytes_received += size + _HEADER.size
                on_message(wire.decode(data))
        except OSError as exc:
            reason = f"socket error: {exc}"
        except wire.WireError as exc:
            reason = f"bad frame: {exc}"
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
