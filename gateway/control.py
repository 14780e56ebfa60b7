"""Client of the running gateway's control socket (`gateway.sock` in the run dir).

The wire format (served by actors/inspector.py): the client connects, sends
one frame and reads one frame back; a frame is a 4-byte big-endian length
followed by that many bytes of a MessagePack map. The request is
`{"what": "actors" | "devices" | "device" | "commands" | "stats", "uuid":
...}`; the reply `{"version": 1, <what>: ...}` or `{"error": text}`. Two
requests change the running gateway's memory (never the database):
`{"what": "set_dialect", "uuid": ..., "dialect": "v1" | "fw22"}` and
`{"what": "forget", "uuid": ...}` (docs/cli.md, "The control socket").

Self-contained on purpose (no actors/ import): the CLI stays quick to start
on a small board, and any tool can talk to the gateway from this page.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from typing import Any

import msgpack

_HEADER = struct.Struct(">I")
DEFAULT_TIMEOUT_S = 10.0
MAX_REPLY = 256 * 1024 * 1024


class ControlError(Exception):
    """The gateway could not be asked, or answered with an error."""


class GatewayNotRunning(ControlError):
    """No gateway listens on the socket."""


def request(socket_path: str, what: str, *, timeout: float = DEFAULT_TIMEOUT_S, **fields: Any) -> dict:
    """Send one request, return the reply's map. Raises GatewayNotRunning
    when there is no socket or nothing listens on it, ControlError for any
    other failure and for an `{"error": ...}` reply."""
    if not os.path.exists(socket_path):
        raise GatewayNotRunning(f"gateway is not running: no socket at {socket_path}")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(socket_path)
        except (ConnectionRefusedError, FileNotFoundError):
            raise GatewayNotRunning(
                f"gateway is not running: nothing listens on {socket_path} (left by a gateway that was killed)"
            ) from None
        except PermissionError:
            raise ControlError(f"cannot open {socket_path}: permission denied (run as the gateway's user or group)") from None
        except OSError as exc:
            if exc.errno == errno.ENAMETOOLONG or "too long" in str(exc):
                raise ControlError(f"socket path {socket_path} is too long for a unix socket; use a shorter run dir") from None
            raise ControlError(f"cannot connect to {socket_path}: {exc.strerror or exc}") from None
        try:
            data = msgpack.packb({"what": what, **fields}, use_bin_type=True)
            sock.sendall(_HEADER.pack(len(data)) + data)
            (size,) = _HEADER.unpack(_recv_exact(sock, _HEADER.size))
            if size > MAX_REPLY:
                raise ControlError(f"the gateway's reply of {size} bytes is over the limit")
            reply = msgpack.unpackb(_recv_exact(sock, size), raw=False, strict_map_key=False)
        except socket.timeout:
            raise ControlError(f"the gateway did not answer within {timeout:g} s") from None
        except OSError as exc:
            raise ControlError(f"the connection to the gateway failed: {exc.strerror or exc}") from None
    finally:
        sock.close()
    if not isinstance(reply, dict):
        raise ControlError("the gateway's reply is not a map")
    if "error" in reply:
        raise ControlError(str(reply["error"]))
    return reply


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks = []
    while n:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            raise ControlError("the gateway closed the connection before answering")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)
