"""Fixtures of the integration tests: a real Mosquitto (the `broker` fixture
of tests/conftest.py), the gateway as a real subprocess, its database file,
and test devices."""

from __future__ import annotations

import itertools

import pytest

from tests.integration.devices import TestDevice, Watcher
from tests.integration.helpers import FAST_SETTINGS, Db
from tests.support.gateway import GatewayProcess

# `make test` installs Mosquitto; without it these tests fail (they do not skip).


class Gateways:
    """Makes gateway processes sharing one work directory (so one database
    across restarts) and cleans up after the test: stops what still runs and
    fails the test if the gateway logged a traceback it did not expect."""

    def __init__(self, broker, workdir) -> None:
        self.broker = broker
        self.workdir = workdir
        self.made: list[GatewayProcess] = []
        self.allow_tracebacks = False

    def __call__(self, start: bool = True, **settings) -> GatewayProcess:
        gw = GatewayProcess(self.workdir, self.broker.port, **{**FAST_SETTINGS, **settings})
        self.made.append(gw)
        if start:
            gw.start()
        return gw

    def close(self) -> None:
        problems = []
        for gw in self.made:
            if gw.proc is not None and gw.proc.poll() is None:
                try:
                    gw.stop()
                except AssertionError as exc:
                    problems.append(str(exc))
            if not self.allow_tracebacks and any("Traceback" in line for line in gw.lines):
                problems.append("the gateway logged a traceback:\n" + "\n".join(gw.lines[-60:]))
        if problems:
            pytest.fail("\n\n".join(problems))


@pytest.fixture
def gateways(broker, tmp_path):
    made = Gateways(broker, tmp_path / "gw")
    yield made
    made.close()


@pytest.fixture
def gateway(gateways) -> GatewayProcess:
    """The gateway with the fast settings, started and ready."""
    return gateways()


@pytest.fixture
def db(tmp_path):
    d = Db(tmp_path / "gw" / "autocore.db")
    yield d
    d.close()


_ids = itertools.count(1)


@pytest.fixture
def devices(broker):
    """devices(uuid=None, **kw) -> a connected TestDevice (disconnected after the test)."""
    made: list[TestDevice] = []

    def make(uuid: str | None = None, *, connect: bool = True, **kw) -> TestDevice:
        dev = TestDevice(broker.port, uuid or f"dev-{next(_ids)}", **kw)
        made.append(dev)
        if connect:
            dev.connect()
        return dev

    yield make
    for dev in made:
        try:
            dev.disconnect()
        except Exception:
            pass


@pytest.fixture
def watcher(broker):
    w = Watcher(broker.port, "autocore/devices/+/availability", "autocore/gateway/status").connect()
    yield w
    w.disconnect()
