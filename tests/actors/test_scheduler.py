"""The Scheduler's actor shell: a message it does not handle is an error
(logged and counted), and it keeps serving the timers it holds."""

import logging
import time

import pykka
import pytest

from actors.messages import GetSnapshot, Schedule
from actors.scheduler import Scheduler
from tests.support.broker import wait_until
from tests.support.recorder import Recorder


@pytest.fixture
def scheduler():
    ref = Scheduler.start()
    yield ref
    pykka.ActorRegistry.stop_all()


def test_an_unknown_message_is_an_error_and_timers_still_fire(scheduler, caplog):
    caplog.set_level(logging.ERROR, logger="autocore.scheduler")
    owner = Recorder()  # told Deadline(key) from the Scheduler's thread
    scheduler.tell({"cancel": "x"})
    scheduler.tell(Schedule("k", time.time() + 0.05, owner))
    wait_until(lambda: [d.key for d in owner.told] == ["k"], 5, what="the deadline fired")
    assert scheduler.ask(GetSnapshot())["counters"]["unknown_messages"] == 1
    assert any("does not handle" in r.getMessage() and "cancel" in r.getMessage() for r in caplog.records)

