import pytest

from tests.support.broker import Broker


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path / "broker").start()
    yield b
    b.stop()


@pytest.fixture(scope="session")
def pg_cluster():
    """One throw-away PostgreSQL cluster for the whole session (started
    only if a test asks for it): tests/support/postgres.py."""
    from tests.support.postgres import PgCluster

    cluster = PgCluster().start()
    yield cluster
    cluster.stop()


@pytest.fixture
def pg_url(pg_cluster):
    """A fresh, empty database in the session's cluster."""
    url = pg_cluster.create_database()
    yield url
    pg_cluster.drop_database(url)
