"""Length-prefixed frames on a stream socket: a 4-byte big-endian length,
then that many bytes. Used by the core/store channel and the control socket."""

from __future__ import annotations

import socket
import struct

HEADER = struct.Struct(">I")


def recv_exact(sock: socket.socket, n: int) -> bytes:
    """Exactly `n` bytes; EOFError if the other side closes first."""
    chunks = []
    while n:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            raise EOFError("the other side closed the connection")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def recv_frame(sock: socket.socket, limit: int) -> bytes:
    (size,) = HEADER.unpack(recv_exact(sock, HEADER.size))
    if size > limit:
        raise ValueError(f"frame of {size} bytes is over the limit of {limit}")
    return recv_exact(sock, size)


def frame(data: bytes) -> bytes:
    return HEADER.pack(len(data)) + data
