"""Router: the actor shell around `RoutingRules` (actors/rules/routing.py),
which decides topic parsing, decoding, validation, rate limits and routing.

One `InboundBatch` in, at most three messages out: the batch's telemetry rows
to the store (the fast path), one `Route` to the DeviceSupervisor with what
each device saw, and one `Complete` to MqttIO for the messages that need
nothing stored (rejected, rate-limited, or empty of data).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any

from actors.base import GatewayActor
from actors.messages import (
    Complete,
    Deadline,
    DialectLock,
    DialectMark,
    InboundBatch,
    KnownDevice,
    Route,
    TelemetryRows,
    Token,
)
from actors.rules.rate import RateLimiter
from actors.rules.routing import UNSTORABLE_VALUE, RoutingRules
from actors.settings import GatewaySettings
from protocol.values import Rejected, TelemetryRow

logger = logging.getLogger("autocore.router")

REJECTION_LOG_INTERVAL_S = 1.0
MAX_DEVICES_LOGGED = 20000  # devices whose last rejection log time is kept (oldest go first)
# What the channel's msgpack encoding raises for a value it cannot carry (it
# raises before writing a byte, so sending again in smaller pieces is safe).
UNSENDABLE = (TypeError, ValueError, OverflowError)


class Router(GatewayActor):
    name = "Router"

    def __init__(self, settings: GatewaySettings, mqtt: Any, supervisor: Any, store: Any) -> None:
        super().__init__()
        self.mqtt = mqtt
        self.supervisor = supervisor
        self.store = store  # has .send(message): the link to the store process (actors/channel.py StoreLink)
        self.rules = RoutingRules(settings.topic_prefix, settings.max_payload, settings.clock_skew_s,
                                  settings.device_rate, settings.device_burst, counters=self.counters)
        self._last_log: dict[str, float] = {}

    # What the rule counts, for the Inspector and tests.
    @property
    def limiter(self) -> RateLimiter:
        return self.rules.limiter

    @property
    def rejections(self) -> Counter[str]:
        return self.rules.rejections

    @property
    def rejections_by_device(self) -> dict[str, Counter[str]]:
        return self.rules.rejections_by_device

    def load(self, devices: tuple[KnownDevice, ...]) -> None:
        """Start-up: what the database knows."""
        self.rules.load(devices)

    def handle(self, message: Any) -> Any:
        if isinstance(message, InboundBatch):
            self._route(message)
            return None
        if isinstance(message, Deadline):
            # A Device actor's deadline (actors/device.py): on to it through
            # the supervisor, behind every batch this mailbox held when it
            # came, so the device sees what it sent before its time ran out.
            self.supervisor.tell(message)
            return None
        if isinstance(message, DialectMark):
            return self.rules.mark()
        if isinstance(message, DialectLock):
            return self.rules.lock(message.uuid, message.locked, message.after)
        return super().handle(message)

    def _route(self, batch: InboundBatch) -> None:
        out = self.rules.route(batch.messages)
        for uuid, topic, reason, detail in out.refused:
            self._log_rejection(uuid, topic, reason, detail)
        done = out.done
        if out.rows:
            try:
                self.store.send(TelemetryRows(tuple(out.rows), tuple(out.row_tokens)))
                self.counters["rows"] += len(out.rows)
            except UNSENDABLE:
                # A value that cannot cross to the store (an integer past 64
                # bits) used to kill the Router, and with it every device's
                # traffic. Send message by message; reject what cannot go.
                self._send_one_by_one(out.by_message, done)
        if out.seen or out.devices:
            self.supervisor.tell(Route(out.seen, out.devices))
        if done:
            self.mqtt.tell(Complete(tuple(done)))

    def _send_one_by_one(self, by_message: list[tuple[str, str, list[TelemetryRow], Token]], done: list[Token]) -> None:
        for uuid, topic, msg_rows, token in by_message:
            try:
                self.store.send(TelemetryRows(tuple(msg_rows), (token,)))
                self.counters["rows"] += len(msg_rows)
            except UNSENDABLE as exc:
                rejected = Rejected(UNSTORABLE_VALUE, f"{type(exc).__name__}: {exc}")
                self.rules.reject(uuid, rejected)
                self._log_rejection(uuid, topic, rejected.reason, rejected.detail)
                done.append(token)

    def _log_rejection(self, uuid: str, topic: str, reason: str, detail: str) -> None:
        """At most one line per device per REJECTION_LOG_INTERVAL_S."""
        now = time.monotonic()
        if now - self._last_log.get(uuid, -REJECTION_LOG_INTERVAL_S) >= REJECTION_LOG_INTERVAL_S:
            self._last_log[uuid] = now
            if len(self._last_log) > MAX_DEVICES_LOGGED:
                self._last_log.pop(next(iter(self._last_log)))
            logger.warning("rejected a message on %s (device %s): %s: %s", topic[:200], uuid, reason, detail[:300])

    def summary(self) -> str:
        return f"{sum(self.rules.rejections.values())} rejected, {len(self.rules.limiter)} rate buckets"

    def state(self) -> dict:
        rules = self.rules
        return {
            "rejections": dict(rules.rejections),
            "rate_limit": {"rate": rules.limiter.rate, "burst": rules.limiter.burst, "buckets": len(rules.limiter)},
            "batch_sizes": dict(rules.batch_sizes),
            "messages_by_kind": {kind.value: n for kind, n in rules.kinds.items()},
            "v1_boot_devices": len(rules.v1_boot),
        }

    def device_rejections(self, uuid: str) -> dict:
        return dict(self.rules.rejections_by_device.get(uuid, {}))
