"""The Prometheus endpoint (AUTOCORE_METRICS_PORT): off by default; when on,
a scrape shows what `gateway inspect stats` counts, in Prometheus' text
format, parsed here by prometheus_client's own parser."""

from __future__ import annotations

import socket
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from tests.integration.devices import TestDevice
from tests.support.broker import free_port, wait_until

UUID = "metrics-dev-1"


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """(sample name, sorted labels) -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_count_what_the_gateway_did(gateways, broker, db):
    port = free_port()
    gateways(metrics_port=port)
    dev = TestDevice(broker.port, UUID).connect()
    try:
        dev.announce(boot_id=1)
        for seq in range(5):
            dev.telemetry(seq=seq, boot_id=1)
        dev.publish("telemetry", b"{not json")  # one rejection
        command_id = db.insert_command(UUID, "relay_control", {"relay": 1, "state": True})
        dev.wait_commands(1)

        def settled():
            m = scrape(port)
            done = (m.get(("autocore_messages_routed_total", (("kind", "telemetry"),)), 0) >= 5
                    and m.get(("autocore_messages_acknowledged_total", ()), 0) >= 7
                    and sum(v for (name, _), v in m.items() if name == "autocore_messages_rejected_total") >= 1)
            return m if done else None

        m = wait_until(settled, 15, what="the scrape to count the messages")
    finally:
        dev.disconnect()
    assert m[("autocore_stats_up", ())] == 1
    assert m[("autocore_mqtt_connected", ())] == 1
    assert m[("autocore_messages_routed_total", (("kind", "announce"),))] == 1
    assert m[("autocore_messages_rejected_total", (("reason", "bad_encoding"),))] == 1
    assert m[("autocore_rows_inserted_total", ())] >= 5
    assert m[("autocore_devices_online", ())] == 1
    assert m[("autocore_unacknowledged_messages_max", ())] > 0
    # The commit histogram: as many observations as commits, cumulative buckets.
    assert m[("autocore_commit_seconds_count", ())] == m[("autocore_commits_total", ())] >= 1
    assert m[("autocore_commit_seconds_bucket", (("le", "+Inf"),))] == m[("autocore_commit_seconds_count", ())]
    # Its waits at BEGIN and in COMMIT (issue 11's stall), one observation per commit too.
    assert m[("autocore_commit_stall_seconds_count", ())] == m[("autocore_commits_total", ())]
    assert m[("autocore_commit_stall_seconds_sum", ())] <= m[("autocore_commit_seconds_sum", ())]
    # The group commit (issue 22): its fsyncs, one observation each.
    assert m[("autocore_store_fsyncs_total", ())] == m[("autocore_store_fsync_seconds_count", ())] >= 1
    assert m[("autocore_store_durable_wait_seconds_count", ())] >= 1
    # Commands by state: the one sent is somewhere in its lifecycle.
    states = {dict(labels)["status"]: v for (name, labels), v in m.items() if name == "autocore_commands"}
    assert sum(states.values()) == 1 and command_id > 0
    assert m[("autocore_resident_memory_bytes", (("process", "core"),))] > 1e6


def test_metrics_are_off_by_default_and_a_taken_port_stops_start_up(gateways):
    gw = gateways()
    assert not any("metrics on" in line for line in gw.lines)
    gw.stop()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        second = gateways(start=False, metrics_port=port)
        second.start(wait_ready=False)
        assert second.proc.wait(30) != 0
        wait_until(lambda: any(f"core could not start: cannot serve metrics on 127.0.0.1:{port}" in line
                               for line in second.lines), 10, what="the line naming the metrics port")
