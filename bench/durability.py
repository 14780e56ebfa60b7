"""Scenario 12, durability on a power cut (issue 22): what the group commit
costs, against acknowledging at commit (the gateway's default before issue
22, which a power cut breaks) and against an fsync inside every commit
(`AUTOCORE_DB_SYNCHRONOUS=FULL`).

For each of the three: the backlog drain (connect -> every message
acknowledged, so the last sync is inside the figure), then the live rates
(publish -> committed and visible p99, and how long acknowledgements then
waited for their sync), fsyncs per second (the disk's own count of flushes,
and the group commit's) and bytes written per reading. That the group
commit keeps what it acknowledged through a cut is the test's business
(tests/integration/test_power_cut.py), not a figure here.
"""

from __future__ import annotations

from bench.scenarios import Context, Metric, Outcome, drain_gateway, live_phase, publish_backlog, rate_label

SCENARIO = "12 durability"
MODES = (
    ("group commit", {}),
    ("ack at commit", {"db_unsafe_ack_before_sync": 1}),
    ("FULL", {"db_synchronous": "FULL"}),
)
WEAR_RATES = (100, 1000)  # fsyncs/s and bytes per reading are reported at these


def durability(ctx: Context) -> Outcome:
    s = ctx.sizes
    details: dict = {}
    for label, settings in MODES:
        broker = ctx.broker()
        gw = ctx.gateway(broker, **settings)
        gw.start()
        gw.stop()  # its persistent session stays with the broker
        ctx.log(f"durability, {label}: publishing a backlog of {s.backlog} messages")
        _, published = publish_backlog(broker.port, s, f"bench-dur-{len(details)}", boot_id=1)
        drain = drain_gateway(ctx, gw, published, published * 3, broker.proc.pid)
        phases = {rate_label(rate): live_phase(ctx, gw, broker, rate, f"bench-dur{len(details)}-live{rate}")
                  for rate in s.live_rates}
        details[label] = {"drain": drain, "live": phases, "settings": settings}
        gw.stop()
    return Outcome(metrics(details), details)


def metrics(details: dict) -> list[Metric]:
    out: list[Metric] = []
    group, before = details["group commit"], details["ack at commit"]
    ratio = group["drain"]["messages_per_s"] / before["drain"]["messages_per_s"]
    out.append(Metric(SCENARIO, "drain, group commit / ack at commit", round(ratio, 3), "x", None, 0.9, "higher",
                      "issue 22: >= 0.9 x the old default"))
    for label, d in details.items():
        out.append(Metric(SCENARIO, f"{label}: drain", d["drain"]["messages_per_s"], "msg/s", better="higher",
                          note=f"{d['drain']['messages']} msgs"))
    for label, d in details.items():
        for rate, phase in d["live"].items():
            aim = 50.0 if label == "group commit" and rate == "1k/s" else None
            wait = phase.get("durable_wait_p99_ms")
            note = f"{phase['measured_rate']} msg/s measured" + (
                f"; then acknowledgements waited p99 <= {wait:g} ms for their fsync" if wait is not None else "")
            out.append(Metric(SCENARIO, f"{label}: {rate} publish->commit p99", phase["commit_ms"]["p99"], "ms",
                              None, aim, note=note))
    for label, d in details.items():
        for rate in WEAR_RATES:
            phase = d["live"].get(rate_label(rate))
            if phase is None:
                continue
            aim = 20.0 if label == "group commit" else None
            group_note = (f"{phase['group_fsyncs_per_s']:g} of them the group commit's; "
                          if phase.get("group_fsyncs_per_s") is not None else "")
            out.append(Metric(SCENARIO, f"{label}: {rate_label(rate)} disk flushes/s", phase["disk_flushes_per_s"],
                              "/s", None, aim,
                              note=f"{group_note}{phase['commits_per_s']:g} commits/s"))
            out.append(Metric(SCENARIO, f"{label}: {rate_label(rate)} bytes written per reading",
                              phase["bytes_written_per_reading"], "B",
                              note=f"{phase['readings_per_commit']} readings per commit"))
    return out
