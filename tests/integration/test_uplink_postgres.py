"""The uplink of a gateway whose database is PostgreSQL (a depot): the
same reads, cursor and fleet commands through storage/ on the other engine."""

from __future__ import annotations

import pytest

from protocol.uplink import FleetCommand
from tests.integration.helpers import Stream, inspect
from tests.integration.test_uplink import VEHICLE, collector, fleet, uplink_settings  # noqa: F401 (fixtures)
from tests.integration.uplink_support import send_fleet_command
from tests.support.broker import wait_until

ENGINES = ("postgresql",)
pytestmark = pytest.mark.timeout(120)


def test_on_postgresql_rows_and_command_outcomes_reach_the_fleet_once(gateways, broker, fleet, collector, db, devices):
    gw = gateways(**uplink_settings(fleet))
    Stream(broker.port, "dev-pgu", 1500).start().wait()
    wait_until(lambda: db.one("SELECT COUNT(*) FROM telemetry") == 1500, 30, what="rows stored")
    ids = {r[0] for r in db.rows("SELECT id FROM telemetry")}
    wait_until(lambda: collector.ids("telemetry") >= ids, 30, what="every row at the fleet")
    assert collector.ids("telemetry") == ids
    dev = devices("relay-pgu")
    dev.announce()
    send_fleet_command(fleet.port, VEHICLE, FleetCommand("pgu-1", "relay-pgu", "relay_control", {"relay_id": 1}))
    (sent,) = dev.wait_commands(1)
    dev.respond(sent["command_id"], success=True)
    wait_until(lambda: any(r["origin_id"] == "pgu-1" and r["status"] == "succeeded"
                           for r in collector.lane_rows("commands")), 15, what="the outcome at the fleet")
    assert db.one("SELECT COUNT(*) FROM commands WHERE origin_id = 'pgu-1'") == 1
    assert inspect(gw.socket_path, "uplink")["uplink"]["connected"]
