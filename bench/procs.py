"""The processes a benchmark run drives: its own Mosquitto, the gateway, and
what /proc says about them.

`BenchBroker` is the test suite's broker (a real Mosquitto on a free
loopback port) with persistence off: a broker autosaving a 200k-message
queue every second would measure the broker's disk, for the gateway and the
baseline alike, not the gateway. Sessions and their queues still live as
long as the broker runs, which is all a backlog needs. The queue limit is
lifted as everywhere in the project (FIELD-NOTES: the default 1000 drops
messages silently).

`BenchGateway` is the test suite's `GatewayProcess` with the time each log
line arrived, the pids of its core and store processes, and the control
socket.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path
from typing import Any

import msgpack

from tests.support.broker import Broker, wait_until
from tests.support.gateway import GatewayProcess

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


class BenchBroker(Broker):
    def write_config(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(
            f"""listener {self.port} 127.0.0.1
allow_anonymous true
# Persistence off: the benchmark measures the gateway, not the broker's
# autosave of a large queue (sessions and queues live while the broker runs).
persistence false
# The gateway's session queue is its only buffer while it is down: lift the
# default limit of 1000 queued messages (FIELD-NOTES), bounded by bytes.
max_queued_messages 0
max_queued_bytes 2147483648
log_dest file {self.directory / 'mosquitto.log'}
log_type error
log_type warning
{self.extra_config}
"""
        )


class BenchGateway(GatewayProcess):
    """`bin/gateway run` with timestamped log lines (`times[i]` is when
    `lines[i]` was read, time.time())."""

    def __init__(self, workdir: Path, broker_port: int, **settings: object) -> None:
        super().__init__(workdir, broker_port, **settings)
        self.times: list[float] = []
        self.started_at = 0.0

    def start(self, wait_ready: bool = True, timeout: float = 30.0) -> "BenchGateway":
        self.times = []
        self.started_at = time.time()
        super().start(wait_ready=wait_ready, timeout=timeout)
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            self.times.append(time.time())  # first: lines[i] is never without times[i]
            self.lines.append(line.rstrip("\n"))

    def line_time(self, text: str, timeout: float = 30.0) -> float:
        """When the first line containing `text` arrived (waits for it)."""
        self.wait_for_line(text, timeout)
        for line, at in zip(self.lines, self.times):
            if text in line:
                return at
        raise AssertionError(f"no line {text!r}")

    def inspect(self, what: str = "stats", **fields: Any) -> dict:
        return inspect(self.socket_path, what, **fields)

    def terminate_quietly(self) -> None:
        """Stop (SIGTERM, then SIGKILL) without failing: the end of a scenario."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            self.stop(timeout=15)
        except AssertionError:
            pass


def child_pids(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/statm") as fh:
        return int(fh.read().split()[1]) * PAGE / 1048576.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def written_bytes(pid: int) -> int:
    """Bytes a process has handed to write() so far (`wchar` of
    /proc/PID/io): for the store, the write-ahead log and the checkpoints'
    copies into the database, whatever the file system does with them."""
    with open(f"/proc/{pid}/io") as fh:
        for line in fh:
            if line.startswith("wchar:"):
                return int(line.split()[1])
    return 0


def disk_flushes(directory: Path) -> int | None:
    """Flush requests the block device holding `directory` has completed
    (field 16 of its /sys/block stat, Linux 5.5 and later): every fsync
    that reached the disk, whoever made it (SQLite inside a commit or a
    checkpoint, the group commit). None on a file system with no block
    device (tmpfs) or an older kernel. Machine-wide: the benchmark is the
    only writer that syncs while it measures."""
    try:
        dev = os.stat(directory).st_dev
        base = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}")
        if (base / "partition").exists():
            base = base.resolve().parent
        fields = (base / "stat").read_text().split()
    except OSError:
        return None
    return int(fields[15]) if len(fields) >= 17 else None


def threads(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return 0


_HEADER = struct.Struct(">I")


def inspect(socket_path: Path, what: str = "stats", **fields: Any) -> dict:
    """One request to the gateway's control socket (4-byte length + msgpack map)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(socket_path))
        data = msgpack.packb({"what": what, **fields}, use_bin_type=True)
        sock.sendall(_HEADER.pack(len(data)) + data)
        (size,) = _HEADER.unpack(_recv_exact(sock, _HEADER.size))
        return msgpack.unpackb(_recv_exact(sock, size), raw=False, strict_map_key=False)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks = []
    while n:
        chunk = sock.recv(n)
        if not chunk:
            raise ConnectionError("the gateway closed the control socket")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL a process and its children (a load generator gone wrong)."""
    if proc.poll() is not None:
        return
    for pid in [proc.pid, *child_pids(proc.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(5)


__all__ = ["BenchBroker", "BenchGateway", "wait_until", "inspect", "rss_mib", "cpu_seconds", "threads", "kill_tree"]
