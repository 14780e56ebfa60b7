"""Settings of several instances (issue 13): instance id, share group, lease
period; the session of each instance; a share group needs PostgreSQL."""

from __future__ import annotations

import socket

import pytest

from actors.mqtt_io import session_client_id
from gateway.settings import Settings, SettingsError, load_settings
from protocol.decode import subscriptions


def test_defaults_are_one_instance_named_after_the_host():
    s = Settings()
    assert s.share_group == ""
    assert s.instance_id == (socket.gethostname() or "gateway")
    assert s.lease_s == 10.0
    assert s.lease_buckets == 256
    # Without a share group: today's client id and today's subscriptions.
    assert session_client_id(s) == s.mqtt_client_id == "autocore-gateway"
    assert subscriptions(s.topic_prefix, s.share_group) == subscriptions(s.topic_prefix)


def test_with_a_share_group_each_instance_has_its_own_session():
    s = load_settings(environ={"AUTOCORE_SHARE_GROUP": "depot", "AUTOCORE_INSTANCE_ID": "gw-2"}).settings
    assert session_client_id(s) == "autocore-gateway-gw-2"
    assert any(t.startswith("$share/depot/") for t, _ in subscriptions(s.topic_prefix, s.share_group))


@pytest.mark.parametrize("env", [{"AUTOCORE_SHARE_GROUP": "a/b"}, {"AUTOCORE_SHARE_GROUP": "a+"},
                                 {"AUTOCORE_INSTANCE_ID": ""}, {"AUTOCORE_INSTANCE_ID": "a b"},
                                 {"AUTOCORE_LEASE_S": "0"}, {"AUTOCORE_LEASE_BUCKETS": "0"}])
def test_bad_values_are_refused(env):
    with pytest.raises(SettingsError):
        load_settings(environ=env)


def test_a_share_group_on_sqlite_is_refused_at_start_with_one_line(cli):
    result = cli("run", env={"AUTOCORE_SHARE_GROUP": "depot"})
    assert result.exit_code == 2  # a bad setting: runit backs off
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: AUTOCORE_SHARE_GROUP=depot needs a PostgreSQL AUTOCORE_DB_URL")
    assert not cli.db_path.exists()  # refused before anything started


def test_the_uplink_with_a_share_group_is_refused_at_start_with_one_line(cli):
    result = cli("run", env={"AUTOCORE_SHARE_GROUP": "depot", "AUTOCORE_DB_URL": "postgresql://gw@127.0.0.1:1/x",
                             "AUTOCORE_UPLINK_URL": "mqtt://127.0.0.1:1"})
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert lines == ["error: AUTOCORE_UPLINK_URL is for one instance (one vehicle); unset it or "
                     "AUTOCORE_SHARE_GROUP=depot"]
