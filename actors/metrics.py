"""The Prometheus endpoint (`AUTOCORE_METRICS_PORT`, off by default).

Not an actor: prometheus_client serves HTTP on a thread of its own, and each
scrape asks the Inspector for the `inspect stats` answer, so the figures are
the ones `gateway inspect stats` shows, read at the moment of the scrape. The
collector only translates that answer into metric families; nothing here
keeps counts of its own. A scrape is an edge of the actor system, like the
control socket, so it may wait on the Inspector (bounded by its timeouts).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterator

from prometheus_client import start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

logger = logging.getLogger("autocore.metrics")

NS = "autocore"


class GatewayCollector(Collector):
    def __init__(self) -> None:
        self.stats: Callable[[], dict] | None = None  # attached once the Inspector runs

    def collect(self) -> Iterator[Any]:
        try:
            s = self.stats() if self.stats is not None else {}
        except Exception as exc:  # a scrape must never hurt the gateway
            logger.warning("metrics: the Inspector did not answer: %s: %s", type(exc).__name__, exc)
            s = {}
        up = GaugeMetricFamily(f"{NS}_stats_up",
                               "1 if every actor answered for this scrape (0: some families are left out)")
        up.add_metric([], 1.0 if s and not s.get("errors") else 0.0)
        yield up
        if not s:
            return
        # A section whose actor did not answer in time is left out, not
        # exported as zeros: a counter that drops to 0 for one scrape reads
        # as a reset to Prometheus (rate() and increase() would jump).
        sections = ((_mqtt, "mqtt", "received"), (_router, "router", "rejections"),
                    (_devices, "devices", "online"), (_writer, "writer", "batches"),
                    (_durability, "durability", "syncs"),
                    (_commands, "commands", "by_status"), (_uplink, "uplink", "connected"),
                    (_leases, "instance", "leases"))
        for family, key, present in sections:
            section = s.get(key) or {}
            if present in section:
                yield from family(section)
        memory = s.get("memory") or {}
        rss = GaugeMetricFamily(f"{NS}_resident_memory_bytes", "resident memory by process", labels=["process"])
        for process in ("core", "store"):
            mb = memory.get(f"{process}_rss_mb")
            if mb is not None:
                rss.add_metric([process], float(mb) * 1024 * 1024)
        yield rss


def _counter(name: str, doc: str, value: Any) -> CounterMetricFamily:
    return CounterMetricFamily(f"{NS}_{name}", doc, value=float(value or 0))


def _gauge(name: str, doc: str, value: Any) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{NS}_{name}", doc, value=float(value or 0))


def _mqtt(m: dict) -> Iterator[Any]:
    counters = m.get("counters") or {}
    yield _gauge("mqtt_connected", "1 while connected to the broker", 1 if m.get("connected") else 0)
    yield _counter("messages_received", "messages read from the broker", m.get("received"))
    yield _counter("messages_acknowledged", "QoS 1 messages acknowledged to the broker after commit",
                   counters.get("acked"))
    yield _gauge("unacknowledged_messages", "received messages not yet done (committed or rejected)",
                 m.get("unacknowledged"))
    yield _gauge("unacknowledged_messages_max", "the bound: reading pauses at this many", m.get("max_unacknowledged"))
    out = CounterMetricFamily(f"{NS}_messages_published", "messages the gateway published, by kind", labels=["kind"])
    for key, n in sorted(counters.items()):
        if key.startswith("published_"):
            out.add_metric([key[len("published_"):]], float(n))
    yield out
    backlog = m.get("outgoing_backlog") or {}
    yield _gauge("outgoing_backlog", "publications waiting for room in paho",
                 sum(int(v or 0) for v in backlog.values()))


def _router(r: dict) -> Iterator[Any]:
    by_kind = CounterMetricFamily(f"{NS}_messages_routed", "valid messages by kind", labels=["kind"])
    for kind, n in sorted((r.get("messages_by_kind") or {}).items()):
        by_kind.add_metric([kind], float(n))
    yield by_kind
    rejected = CounterMetricFamily(f"{NS}_messages_rejected", "rejected messages by reason", labels=["reason"])
    for reason, n in sorted((r.get("rejections") or {}).items()):
        rejected.add_metric([reason], float(n))
    yield rejected
    sizes = CounterMetricFamily(f"{NS}_read_batches", "passes over the socket by messages read", labels=["size"])
    for size, n in sorted((r.get("batch_sizes") or {}).items()):
        sizes.add_metric([size], float(n))
    yield sizes


def _devices(d: dict) -> Iterator[Any]:
    yield _gauge("devices_online", "devices the gateway holds online", d.get("online"))
    yield _gauge("devices_known", "devices in the registry", d.get("known"))
    yield _gauge("device_actors", "Device actors running", d.get("actors"))
    yield _gauge("device_actors_max", "the bound on Device actors", d.get("max_actors"))


def _writer(w: dict) -> Iterator[Any]:
    store = w.get("store") or {}
    yield _gauge("store_disk_full", "1 while the store waits for disk space", 1 if store.get("state") == "disk_full" else 0)
    yield _gauge("store_database_unreachable", "1 while the store waits for the database server",
                 1 if store.get("state") == "database_unreachable" else 0)
    if store.get("disk_free_mb") is not None:
        yield _gauge("disk_free_bytes", "free space on the database's filesystem",
                     float(store["disk_free_mb"]) * 1024 * 1024)
    yield _counter("rows_inserted", "telemetry rows stored", w.get("rows_inserted"))
    yield _counter("rows_repeated", "telemetry rows refused as repeats of stored ones", w.get("rows_repeated"))
    yield _counter("commits", "store transactions committed", w.get("batches"))
    for key, name, text in (("commit_ms", "commit_seconds", "time of each store transaction"),
                            ("stall_ms", "commit_stall_seconds",
                             "time each store transaction waited at BEGIN (the write lock) and in COMMIT")):
        hist = (w.get(key) or {}).get("histogram")
        if hist:
            yield _histogram_ms(name, text, hist)


def _durability(d: dict) -> Iterator[Any]:
    yield _counter("store_fsyncs", "fsyncs of the write-ahead log by the group commit", d.get("syncs"))
    yield _gauge("store_fsync_waiting", "commits' promises (acknowledgements, publications) waiting for the next fsync",
                 d.get("waiting"))
    for key, name, text in (("sync_ms", "store_fsync_seconds", "time of each group-commit fsync"),
                            ("wait_ms", "store_durable_wait_seconds",
                             "how long a commit's acknowledgements waited for the fsync that made it durable")):
        hist = (d.get(key) or {}).get("histogram")
        if hist:
            yield _histogram_ms(name, text, hist)


def _histogram_ms(name: str, text: str, hist: dict) -> HistogramMetricFamily:
    """A Histogram snapshot in milliseconds as a Prometheus histogram in seconds."""
    family = HistogramMetricFamily(f"{NS}_{name}", text)
    buckets, running = [], 0
    for bound, n in zip([*hist["le"], float("inf")], hist["counts"], strict=True):
        running += n
        buckets.append(("+Inf" if bound == float("inf") else _le(bound / 1000.0), float(running)))
    family.add_metric([], buckets, sum_value=float(hist.get("sum", 0.0)) / 1000.0)
    return family


def _commands(c: dict) -> Iterator[Any]:
    by_status = GaugeMetricFamily(f"{NS}_commands", "commands in the table by state", labels=["status"])
    for status, n in sorted((c.get("by_status") or {}).items()):
        by_status.add_metric([status], float(n))
    yield by_status


def _leases(i: dict) -> Iterator[Any]:
    """Several instances: this instance's bucket leases."""
    leases = i.get("leases") or {}
    yield _gauge("lease_buckets_held", "ownership buckets this instance holds a lease on", leases.get("held"))
    yield _gauge("lease_buckets_acting", "buckets held safely inside their expiry (acted for)", leases.get("acting"))
    yield _gauge("lease_expires_in_seconds", "time left on the soonest lease held", leases.get("expires_in_s"))
    yield _counter("lease_buckets_lost", "buckets that went to another instance while held", leases.get("lost"))
    yield _counter("lease_rounds_failed", "lease rounds that could not reach the table", leases.get("failed_rounds"))


def _uplink(u: dict) -> Iterator[Any]:
    """The fleet uplink (issue 14), when it is on."""
    yield _gauge("uplink_connected", "1 while connected to the fleet broker", 1 if u.get("connected") else 0)
    yield _gauge("uplink_rows_pending", "committed rows not yet acknowledged by the fleet broker",
                 u.get("rows_pending"))
    yield _gauge("uplink_oldest_pending_age_seconds", "age of the oldest telemetry row not yet acknowledged",
                 u.get("oldest_pending_age_s"))
    yield _gauge("uplink_in_flight", "uplink batches awaiting the fleet broker's PUBACK", u.get("in_flight"))
    yield _counter("uplink_dropped_unsent", "rows retention deleted before the fleet had them", u.get("dropped_unsent"))
    acked = CounterMetricFamily(f"{NS}_uplink_rows_acknowledged", "rows the fleet broker acknowledged, by lane",
                                labels=["lane"])
    cursor = GaugeMetricFamily(f"{NS}_uplink_cursor", "every id up to this one is acknowledged, by lane",
                               labels=["lane"])
    for lane, v in sorted((u.get("lanes") or {}).items()):
        acked.add_metric([lane], float(v.get("rows_acked") or 0))
        cursor.add_metric([lane], float(v.get("acked_upto") or 0))
    yield acked
    yield cursor


def _le(seconds: float) -> str:
    return repr(float(seconds))


class MetricsError(RuntimeError):
    """The endpoint cannot listen where it was told to (one line, for the log)."""


class MetricsServer:
    """The HTTP endpoint. Core binds it first thing, so a port that is taken
    stops start-up with one line before any actor runs; the Inspector then
    `attach`es its stats (until then a scrape says autocore_stats_up 0)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.collector = GatewayCollector()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)
        self._server: Any = None
        self._thread: Any = None

    def start(self) -> "MetricsServer":
        try:
            self._server, self._thread = start_http_server(self.port, addr=self.host, registry=self.registry)
        except OSError as exc:
            raise MetricsError(f"cannot serve metrics on {self.host}:{self.port}: {exc.strerror or exc}") from None
        self.port = self._server.server_address[1]
        logger.info("metrics on http://%s:%d/metrics", self.host, self.port)
        return self

    def attach(self, stats: Callable[[], dict]) -> None:
        self.collector.stats = stats

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
