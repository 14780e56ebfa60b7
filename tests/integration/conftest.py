"""Fixtures of the integration tests: a real Mosquitto (the `broker` fixture
of tests/conftest.py), the gateway as a real subprocess, its database, and
test devices.

The database is a SQLite file unless a module says otherwise with
`ENGINES = ("sqlite", "postgresql")` (each test then runs on both) or
`ENGINES = ("postgresql",)`: on PostgreSQL every test gets a fresh database
in the session's throw-away cluster, and the gateway AUTOCORE_DB_URL."""

from __future__ import annotations

import itertools

import pytest

from tests.integration.devices import TestDevice, Watcher
from tests.integration.helpers import FAST_SETTINGS, Db, PgDb
from tests.support.gateway import GatewayProcess

# `make test` installs Mosquitto; without it these tests fail (they do not skip).


class Gateways:
    """Makes gateway processes sharing one work directory (so one database
    across restarts) and cleans up after the test: stops what still runs and
    fails the test if the gateway logged a traceback it did not expect."""

    def __init__(self, broker, workdir, db_url: str | None = None) -> None:
        self.broker = broker
        self.workdir = workdir
        self.db_url = db_url
        self.made: list[GatewayProcess] = []
        self.allow_tracebacks = False

    def __call__(self, start: bool = True, **settings) -> GatewayProcess:
        if self.db_url:
            settings.setdefault("db_url", self.db_url)
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


def pytest_generate_tests(metafunc):
    if "engine" in metafunc.fixturenames:
        metafunc.parametrize("engine", getattr(metafunc.module, "ENGINES", ("sqlite",)), indirect=True)


@pytest.fixture
def engine(request):
    return request.param


@pytest.fixture
def db_url(engine, request):
    """None on SQLite (the gateway's file in its work directory); the URL of
    a fresh database on PostgreSQL."""
    return request.getfixturevalue("pg_url") if engine == "postgresql" else None


@pytest.fixture
def gateways(broker, tmp_path, db_url):
    made = Gateways(broker, tmp_path / "gw", db_url)
    yield made
    made.close()


@pytest.fixture
def gateway(gateways) -> GatewayProcess:
    """The gateway with the fast settings, started and ready."""
    return gateways()


@pytest.fixture
def db(tmp_path, db_url):
    d = PgDb(db_url) if db_url else Db(tmp_path / "gw" / "autocore.db")
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
