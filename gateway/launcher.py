"""The launcher: starts the core and store processes and watches them.

`gateway run` is this. It makes the socket pair the two processes talk
over, starts both, and forwards SIGTERM/SIGINT to core, which stops cleanly
(and then tells store to stop). If either process dies unexpectedly the
launcher stops the other and exits non-zero, so runit restarts the whole.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import NoReturn

from gateway.settings import Settings

logger = logging.getLogger("autocore.launcher")

SETTINGS_ENV = "AUTOCORE__RESOLVED_SETTINGS"
LAUNCHER_PID_ENV = "AUTOCORE__LAUNCHER_PID"  # the children die with this process (gateway.child)
STOP_GRACE_S = 5.0


def _child(role: str, fd: int, settings: Settings) -> subprocess.Popen:
    env = dict(os.environ)
    env[SETTINGS_ENV] = json.dumps(dataclasses.asdict(settings))
    env[LAUNCHER_PID_ENV] = str(os.getpid())
    return subprocess.Popen(
        [sys.executable, "-m", "gateway.child", role, str(fd)],
        pass_fds=(fd,),
        env=env,
    )


def wait_for_a_child() -> None:
    """Until one of this process's children exits (without reaping it, so
    Popen.poll still sees its code) or a signal's handler has run (PEP 475
    resumes the wait after it; the timeout makes the loop look again)."""
    try:
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOWAIT)
    except ChildProcessError:  # none left to wait for: the caller's poll says which
        pass
    except AttributeError:  # no waitid on this platform
        time.sleep(0.05)


def exit_without_teardown(code: int) -> NoReturn:
    """Exit with `code` once a process has stopped, skipping the
    interpreter's teardown (about 0.1 s of freeing modules at every stop
    and restart). Only when nothing else runs: with a non-daemon thread
    still alive this is the ordinary exit, which waits for it."""
    main = threading.main_thread()
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not main):
        sys.exit(code)
    logging.shutdown()  # flushes every handler
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def _terminate(proc: subprocess.Popen, grace: float) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        logger.error("%s did not stop within %.0f s; killing it", proc.args[3], grace)
        proc.kill()
        proc.wait()


def run(settings: Settings) -> int:
    os.makedirs(settings.run_dir, exist_ok=True)
    core_sock, store_sock = socket.socketpair()
    store = _child("store", store_sock.fileno(), settings)
    core = _child("core", core_sock.fileno(), settings)
    core_sock.close()
    store_sock.close()
    stopping = False

    def on_signal(signum, frame):  # noqa: ARG001
        nonlocal stopping
        if not stopping:
            stopping = True
            logger.info("%s received; stopping", signal.Signals(signum).name)
            if core.poll() is None:
                core.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    while True:
        core_rc, store_rc = core.poll(), store.poll()
        if core_rc is not None or store_rc is not None:
            break
        wait_for_a_child()

    if stopping:
        # Stopping as asked. Core tells store to stop once everything is
        # committed and then stops its own actors, so store often exits
        # first: that exit is expected, not a fault (it used to be taken for
        # one, and a clean stop then exited 1). Wait for both, within one grace.
        deadline = time.monotonic() + STOP_GRACE_S
        for proc in (core, store):
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _terminate(proc, 1.0)
        return 0 if core.returncode == 0 and store.returncode == 0 else 1

    which = "core" if core_rc is not None else "store"
    rc = core_rc if core_rc is not None else store_rc
    logger.error("the %s process exited unexpectedly (code %s); stopping the other", which, rc)
    _terminate(core, STOP_GRACE_S)
    _terminate(store, STOP_GRACE_S)
    return 1
