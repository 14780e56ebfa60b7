"""The gateway's processes exit without the interpreter's teardown once
everything has stopped (gateway.launcher.exit_without_teardown): what they
logged is out, and a thread still at work is waited for as before."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.support.gateway import ROOT


def run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True,
                          timeout=30)


def test_the_last_log_line_and_the_exit_code_get_out():
    done = run("""
        import logging, sys
        from gateway.launcher import exit_without_teardown
        logging.basicConfig(stream=sys.stderr, level=logging.INFO)
        logging.getLogger("autocore.test").info("the last line")
        print("buffered output", end="")
        exit_without_teardown(3)
        """)
    assert done.returncode == 3
    assert "the last line" in done.stderr and done.stdout == "buffered output"


def test_a_thread_still_at_work_is_waited_for(tmp_path):
    marker = tmp_path / "finished"
    done = run(f"""
        import threading, time, pathlib
        from gateway.launcher import exit_without_teardown
        def work():
            time.sleep(0.3)  # a writer finishing its batch
            pathlib.Path({str(marker)!r}).write_text("done")
        threading.Thread(target=work).start()
        exit_without_teardown(0)
        """)
    assert done.returncode == 0, done.stderr
    assert marker.read_text() == "done"
