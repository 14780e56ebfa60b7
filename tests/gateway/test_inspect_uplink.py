"""`gateway inspect uplink`'s rendering, the Inspector's uplink section and
the uplink metrics, from snapshots as the store sends them."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from actors.inspector import uplink_section
from actors.metrics import GatewayCollector
from gateway.commands.inspect import render_uplink

STATE = {
    "enabled": True, "url": "mqtts://fleet.example:8883", "vehicle": "car-17", "database_id": "5b0f",
    "topic": "fleet/car-17/data", "connected": False, "connected_for_s": None, "last_error": "cannot connect",
    "retry_in_s": 3.2, "window": 20, "receive_maximum": 20, "in_flight": 0, "rate_rows_per_s": 2000.0,
    "rate_bytes_per_s": None, "acked_rows_per_s": 0.0, "rows_pending": 1234, "oldest_pending_age_s": 3600.0,
    "bytes_sent": 10, "lanes": {"telemetry": {"newest": 5000, "acked_upto": 3766, "acked_ranges": 1, "pending": 1234,
                                              "rows_sent": 3766, "rows_acked": 3766},
                                "events": {"newest": 3, "acked_upto": 3, "acked_ranges": 1, "pending": 0,
                                           "rows_sent": 3, "rows_acked": 3}},
}
STORE = {"Uplink": {"name": "Uplink", "state": STATE, "counters": {"disconnects": 2}},
         "Retention": {"name": "Retention", "state": {"dropped_unsent": 7}}}


def test_the_section_joins_the_actor_and_retention():
    u = uplink_section(STORE)
    assert u["rows_pending"] == 1234 and u["dropped_unsent"] == 7 and u["counters"] == {"disconnects": 2}
    assert uplink_section({"Retention": STORE["Retention"]}) == {"enabled": False, "dropped_unsent": 7}
    assert uplink_section({"Uplink": {"error": "no answer: Timeout"}})["error"] == "no answer: Timeout"


def test_render_says_down_pending_oldest_and_dropped():
    text = render_uplink(uplink_section(STORE))
    assert "DOWN (cannot connect)" in text and "1234 rows" in text and "2000.0 rows/s" in text
    assert "acknowledged up to 3766 of 5000" in text and "dropped unsent" in text
    assert "off (AUTOCORE_UPLINK_URL is not set)" in render_uplink({"enabled": False, "dropped_unsent": 0})


def test_metrics_export_the_uplink():
    collector = GatewayCollector()
    collector.stats = lambda: {"uplink": uplink_section(STORE)}
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    text = generate_latest(registry).decode()
    assert "autocore_uplink_connected 0.0" in text
    assert "autocore_uplink_rows_pending 1234.0" in text
    assert "autocore_uplink_dropped_unsent_total 7.0" in text
    assert 'autocore_uplink_cursor{lane="telemetry"} 3766.0' in text
