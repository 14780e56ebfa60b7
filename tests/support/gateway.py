"""The gateway as a real subprocess (`bin/gateway run`), and its stderr."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.support.broker import wait_until

ROOT = Path(__file__).resolve().parents[2]


class GatewayProcess:
    def __init__(self, workdir: Path, broker_port: int, **settings: object) -> None:
        self.workdir = workdir
        self.env = dict(os.environ)
        self.env.update({
            "AUTOCORE_MQTT_PORT": str(broker_port),
            "AUTOCORE_DB_PATH": str(workdir / "autocore.db"),
            "AUTOCORE_RUN_DIR": str(workdir / "run"),
            "AUTOCORE_MQTT_CLIENT_ID": f"gw-{workdir.name}",
            "AUTOCORE_LOG_LEVEL": "INFO",
        })
        for key, value in settings.items():
            self.env[f"AUTOCORE_{key.upper()}"] = str(value)
        self.proc: subprocess.Popen | None = None
        self.lines: list[str] = []
        self._reader: threading.Thread | None = None

    def children(self) -> dict[str, int]:
        """{"core": pid, "store": pid} of the running launcher."""
        assert self.proc is not None
        found: dict[str, int] = {}
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout
        for pid in map(int, out.split()):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    args = fh.read().split(b"\0")
            except FileNotFoundError:
                continue
            if b"gateway.child" in args:
                found[args[args.index(b"gateway.child") + 1].decode()] = pid
        return found

    @property
    def db_path(self) -> Path:
        return Path(self.env["AUTOCORE_DB_PATH"])

    @property
    def socket_path(self) -> Path:
        return Path(self.env["AUTOCORE_RUN_DIR"]) / "gateway.sock"

    def start(self, wait_ready: bool = True, timeout: float = 20.0) -> "GatewayProcess":
        self.lines = []
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "bin" / "gateway"), "run"],
            cwd=str(ROOT), env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if wait_ready:
            self.wait_for_line("ready:", timeout)
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            if os.environ.get("AUTOCORE_TEST_ECHO"):
                print("GW:", line.rstrip("\n"), file=sys.stderr)

    def wait_for_line(self, text: str, timeout: float = 10.0, after: int = 0) -> str:
        def found():
            for line in self.lines[after:]:
                if text in line:
                    return line
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"gateway exited ({self.proc.returncode}) before printing {text!r}:\n" + "\n".join(self.lines[-40:]))
            return None

        return wait_until(found, timeout, what=f"gateway line {text!r}")

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("gateway did not stop within %.0f s:\n%s" % (timeout, "\n".join(self.lines[-40:])))

    def kill(self) -> None:
        """SIGKILL the launcher and both of its processes at once."""
        if self.proc is None:
            return
        children = _children(self.proc.pid)
        for pid in [self.proc.pid, *children]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(5)
        for pid in children:
            wait_until(lambda: not _alive(pid), 5, what=f"process {pid} to die")


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def elapsed(since: float) -> float:
    return time.monotonic() - since
