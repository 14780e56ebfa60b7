"""The gateway under a real `runsv`, run from a temporary copy of
deploy/runit/autocore-gateway: kill -9 of the launcher → runit starts it
again → ready, nothing lost, nothing stored twice, no process left behind."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.helpers import FAST_SETTINGS, Db, Stream
from tests.support.broker import wait_until
from tests.support.gateway import ROOT, _alive, _children

SERVICE = ROOT / "deploy" / "runit" / "autocore-gateway"
N = 3000

# `make test` installs runit; without runsv and sv these tests fail (they do not skip).


class RunitService:
    """A copy of the service directory pointed at the test broker and files,
    supervised by its own runsv."""

    def __init__(self, tmp: Path, broker_port: int) -> None:
        self.dir = tmp / "service" / "autocore-gateway"
        shutil.copytree(SERVICE, self.dir, symlinks=True)
        self.log_dir = tmp / "log"
        self.db_path = tmp / "data" / "autocore.db"
        # Where the gateway is and which Python runs it: ./conf, as a site would set it.
        (self.dir / "conf").write_text(
            f"GATEWAY_HOME={ROOT}\nGATEWAY_PYTHON={sys.executable}\nGATEWAY_LOG_DIR={self.log_dir}\n")
        # Gateway settings: one file per variable in ./env (what the service ships, overridden).
        env = {
            "AUTOCORE_MQTT_HOST": "127.0.0.1",
            "AUTOCORE_MQTT_PORT": str(broker_port),
            "AUTOCORE_DB_PATH": str(self.db_path),
            "AUTOCORE_RUN_DIR": str(tmp / "run"),
            "AUTOCORE_MQTT_CLIENT_ID": f"gw-runit-{tmp.name}",
            **{f"AUTOCORE_{k.upper()}": str(v) for k, v in FAST_SETTINGS.items()},
        }
        for name, value in env.items():
            (self.dir / "env" / name).write_text(value + "\n")
        self.runsv: subprocess.Popen | None = None

    def start(self) -> RunitService:
        # Nothing of the test's own environment: the settings come from ./env alone.
        environ = {k: v for k, v in os.environ.items() if not k.startswith("AUTOCORE_")}
        self.runsv = subprocess.Popen(["runsv", str(self.dir)], env=environ, start_new_session=True,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return self

    @property
    def log(self) -> str:
        current = self.log_dir / "current"
        return current.read_text(errors="replace") if current.exists() else ""

    def count_in_log(self, text: str) -> int:
        return self.log.count(text)

    def pid(self) -> int | None:
        """The pid of ./run (exec'd into the launcher), as runsv records it."""
        try:
            text = (self.dir / "supervise" / "pid").read_text().strip()
        except FileNotFoundError:
            return None
        return int(text) if text else None

    def sv(self, *args: str) -> str:
        return subprocess.run(["sv", *args, str(self.dir)], capture_output=True, text=True, timeout=30, check=False).stdout

    def close(self) -> None:
        if self.runsv is None:
            return
        if self.runsv.poll() is None:
            self.sv("-w", "10", "down")
            self.sv("exit")
            try:
                self.runsv.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.runsv.pid, signal.SIGKILL)
                self.runsv.wait()


@pytest.fixture
def service(tmp_path, broker):
    s = RunitService(tmp_path, broker.port)
    yield s
    s.close()


def test_runsv_restarts_a_killed_gateway_and_nothing_is_lost(service, broker):
    service.start()
    wait_until(lambda: service.count_in_log("ready:") == 1, 20, what="the gateway ready under runsv")
    # ./check: what `sv check` and `sv -w N start` wait for.
    assert service.sv("check").startswith("ok: run"), service.sv("status")
    launcher = service.pid()
    assert launcher is not None
    workers = _children(launcher)
    assert len(workers) == 2, f"the launcher should have two processes (core, store), has {workers}"

    db = Db(service.db_path)
    uuid = "runit-stream"
    stream = Stream(broker.port, uuid, N, pause_every=100, pause_s=0.03).start()
    try:
        wait_until(lambda: db.count(uuid) >= N // 10, 30, what="the first tenth stored")
        assert not stream.done.is_set(), "the stream ended before the kill"
        os.kill(launcher, signal.SIGKILL)

        # The launcher's processes do not outlive it (they would hold the
        # MQTT session and the database against the new gateway).
        for pid in workers:
            wait_until(lambda pid=pid: not _alive(pid), 5, what=f"process {pid} of the killed launcher to go")
        wait_until(lambda: service.pid() not in (None, launcher), 10, what="runsv to start the gateway again")
        wait_until(lambda: service.count_in_log("ready:") == 2, 20, what="the restarted gateway ready")
        assert "killed by signal 9" in service.log

        stream.wait(60)
        wait_until(lambda: db.count(uuid) >= N, 60, what=f"all {N} messages stored")
        total, distinct = db.rows("SELECT COUNT(*), COUNT(DISTINCT seq) FROM telemetry WHERE device_uuid = ?", uuid)[0]
        assert (total, distinct) == (N, N)
    finally:
        stream.stop()
        db.close()

    # `sv down`: TERM, a clean stop, exit 0.
    assert service.sv("-w", "10", "down").startswith("ok: down"), service.sv("status")
    check = subprocess.run(["sh", "./check"], cwd=service.dir, capture_output=True, timeout=30)
    assert check.returncode != 0  # nothing answers once it is down
    wait_until(lambda: "stopped cleanly" in service.log, 10, what="./finish to log the clean stop")
    assert "Traceback" not in service.log, service.log[-4000:]


def test_the_run_script_makes_the_run_directory_for_the_gateway_user(tmp_path):
    """/run is empty at every boot and a gateway running as GATEWAY_USER
    cannot make /run/autocore itself: ./run makes it and hands it over."""
    import pwd

    service = tmp_path / "autocore-gateway"
    shutil.copytree(SERVICE, service, symlinks=True)
    run_dir = tmp_path / "run" / "autocore"
    (service / "env" / "AUTOCORE_RUN_DIR").write_text(f"{run_dir}\n")
    # /bin/true stands for the gateway: only what ./run does before it counts here.
    (service / "conf").write_text(f"GATEWAY_HOME={ROOT}\nGATEWAY_PYTHON=/bin/true\nGATEWAY_USER=nobody\n")
    done = subprocess.run(["sh", "./run"], cwd=service, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
    assert run_dir.is_dir()
    assert run_dir.stat().st_uid == pwd.getpwnam("nobody").pw_uid
