"""A real Mosquitto on a free loopback port, with its own configuration."""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float, interval: float = 0.02, what: str = "condition", progress=None):
    """Poll `predicate` until it returns something truthy; fail after
    `timeout`, saying how far it got when `progress()` can tell."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            got = f" (got {progress()})" if progress is not None else ""
            raise AssertionError(f"timed out after {timeout:.1f} s waiting for {what}{got}")
        time.sleep(interval)


class PortTaken(RuntimeError):
    """Mosquitto could not listen: its port was taken meanwhile."""


@dataclass
class Broker:
    directory: Path
    port: int = field(default_factory=free_port)
    extra_config: str = ""
    proc: subprocess.Popen | None = None

    @property
    def config_path(self) -> Path:
        return self.directory / "mosquitto.conf"

    def write_config(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "data").mkdir(exist_ok=True)
        self.config_path.write_text(
            f"""listener {self.port} 127.0.0.1
# As root Mosquitto would switch to its own user, which cannot write into
# pytest's temporary directories (log, persistence).
user {getpass.getuser()}
allow_anonymous true
persistence true
persistence_location {self.directory / 'data'}/
autosave_interval 1
# The gateway's session queue is its only buffer while it is down: lift the
# default limit of 1000 queued messages (FIELD-NOTES), bounded by bytes.
max_queued_messages 0
max_queued_bytes 1073741824
log_dest file {self.directory / 'mosquitto.log'}
log_type error
log_type warning
log_type notice
{self.extra_config}
"""
        )

    def start(self) -> "Broker":
        first = self.proc is None
        for attempt in range(3):
            self.write_config()
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.config_path)], stdout=subprocess.DEVNULL,
                                         stderr=subprocess.PIPE)
            try:
                wait_until(self._accepting, 10, what=f"mosquitto on port {self.port}")
                return self
            except PortTaken:
                # free_port() gave a port that something else (another test
                # worker's connection) took before Mosquitto could listen on
                # it. A first start may move; a restart must keep its port.
                if not first or attempt == 2:
                    raise
                self.port = free_port()
        return self

    def _accepting(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            err = self.proc.stderr.read().decode() if self.proc.stderr else ""
            if "Address already in use" in err:
                raise PortTaken(err)
            raise RuntimeError(f"mosquitto exited: {err}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False


    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
