"""A throw-away PostgreSQL cluster for the tests and the storage benchmark.

`initdb` in a fresh temporary directory, `pg_ctl start` on a free loopback
port with its unix socket inside that directory, `pg_ctl stop` at the end.
PostgreSQL refuses to run as root, and CI runs as root: then both run as
the `postgres` user (the Debian package creates it), which owns the
directory. Binaries come from /usr/lib/postgresql/<newest>/bin
(`make test` installs the `postgresql` package when they are missing).
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

SUPERUSER = "postgres"


def bin_dir() -> Path:
    """The newest installed server's bin directory."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if not found:
        raise RuntimeError("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): "
                           "run `make system-deps` or `apt-get install postgresql`")
    return Path(found[-1]).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgCluster:
    """One cluster; `url(name)` for a database in it, `create_database()`
    for a fresh, empty one."""

    def __init__(self, *, fsync: bool = False) -> None:
        # fsync off for the tests (a crash of the test machine loses a
        # throw-away cluster); the benchmark turns it on to measure real commits.
        self.fsync = fsync
        self.root: Path | None = None
        self.port: int | None = None
        self.bin = bin_dir()
        self._names = itertools.count(1)
        self._run_as = SUPERUSER if os.geteuid() == 0 else None

    def _cmd(self, *args: str) -> list[str]:
        cmd = [str(self.bin / args[0]), *args[1:]]
        return ["runuser", "-u", self._run_as, "--", *cmd] if self._run_as else cmd

    def start(self) -> "PgCluster":
        # Not under pytest's tmp_path: its parents are private to root, and
        # the server runs as another user who must reach the directory.
        self.root = Path(tempfile.mkdtemp(prefix="autocore-pg-"))
        data, sock = self.root / "data", self.root / "sock"
        sock.mkdir()
        if self._run_as:
            pw = pwd.getpwnam(self._run_as)
            for p in (self.root, sock):
                os.chown(p, pw.pw_uid, pw.pw_gid)
        subprocess.run(self._cmd("initdb", "-D", str(data), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8",
                                 "--no-sync", "--no-instructions"),
                       check=True, capture_output=True, cwd="/")
        self.port = free_port()
        self.start_server()
        return self

    def start_server(self) -> None:
        """Start the server of the cluster (again, after `stop_server`)."""
        assert self.root is not None and self.port is not None
        options = (f"-p {self.port} -k {self.root / 'sock'} -c listen_addresses=127.0.0.1"
                   f" -c fsync={'on' if self.fsync else 'off'} -c max_connections=200")
        result = subprocess.run(self._cmd("pg_ctl", "-D", str(self.root / "data"), "-l", str(self.root / "server.log"),
                                          "-o", options, "-w", "-t", "30", "start"),
                                capture_output=True, text=True, cwd="/")
        if result.returncode != 0:
            log = (self.root / "server.log").read_text(errors="replace") if (self.root / "server.log").exists() else ""
            raise RuntimeError(f"PostgreSQL did not start: {result.stderr.strip()}\n{log[-2000:]}")

    def stop_server(self) -> None:
        """Stop the server as an operator would (`pg_ctl stop -m fast`: every
        session is ended), keeping the cluster for `start_server`."""
        assert self.root is not None
        subprocess.run(self._cmd("pg_ctl", "-D", str(self.root / "data"), "-m", "fast", "-w", "stop"),
                       capture_output=True, cwd="/", check=True)

    def url(self, name: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{name}"

    def admin(self):
        import psycopg

        return psycopg.connect(host="127.0.0.1", port=self.port, user=SUPERUSER, dbname="postgres", autocommit=True)

    def create_database(self, prefix: str = "t") -> str:
        """A new empty database; returns its URL."""
        name = f"{prefix}_{os.getpid()}_{next(self._names)}"
        with self.admin() as conn:
            # From template0: nothing a test left in template1 comes along.
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        with self.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        if self.root is None:
            return
        subprocess.run(self._cmd("pg_ctl", "-D", str(self.root / "data"), "-m", "fast", "-w", "stop"),
                       capture_output=True, cwd="/")
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None
