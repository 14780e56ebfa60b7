"""The Heartbeat's status names the version of the installed package."""

from importlib import metadata

from actors.heartbeat import VERSION


def test_the_heartbeat_reports_the_installed_version():
    assert VERSION == metadata.version("autocore-gateway") != "unknown"
