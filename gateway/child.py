"""Entry point of the two gateway processes (started by the launcher)."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys

from actors.logs import setup_logging
from gateway.launcher import LAUNCHER_PID_ENV, SETTINGS_ENV, exit_without_teardown
from gateway.settings import Settings

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_the_launcher(launcher_pid: int | None) -> None:
    """Be killed when the launcher dies, however it dies.

    A launcher killed with SIGKILL cannot stop its processes; left running,
    they would hold the MQTT session and the database against the gateway
    runit starts in its place (the two cores taking the session from each
    other). SIGKILL, not TERM: what a killed gateway had not committed is
    not acknowledged either, so the broker delivers it again (PROTOCOL.md
    "Guarantees"), and a stop in progress could race the new gateway.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: nothing to ask for
        return
    if launcher_pid is not None and os.getppid() != launcher_pid:
        os._exit(1)  # it died before we asked to follow it


def main(argv: list[str]) -> int:
    role, fd = argv[1], int(argv[2])
    launcher_pid = os.environ.get(LAUNCHER_PID_ENV)
    die_with_the_launcher(int(launcher_pid) if launcher_pid else None)
    settings = Settings(**json.loads(os.environ[SETTINGS_ENV]))
    setup_logging(settings.log_level, settings.log_format, role)
    from storage.imports import import_peewee_for

    import_peewee_for(settings.database)
    if role == "core":
        from actors.core import run_core

        return run_core(settings, fd)
    if role == "store":
        from actors.store import run_store

        return run_store(settings, fd)
    print(f"unknown role {role!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    exit_without_teardown(main(sys.argv))
