"""Heartbeat: the gateway's own retained status on `{prefix}/gateway/status`.

Published as `online` on every (re)connection — devices re-announce when
they see it — and every `AUTOCORE_HEARTBEAT_S`; its `offline` form is the
MQTT Last Will and the last thing published on a clean stop.

Several instances (a share group): each publishes its own status, Will and
last word on `{prefix}/gateway/{instance_id}/status`, and the instance that
acts for bucket 0 also keeps `{prefix}/gateway/status` online, so that a
killed instance does not tell the devices the whole gateway is gone.
"""

from __future__ import annotations

import time
from importlib import metadata
from typing import Any

from actors.base import GatewayActor, rss_mb
from actors.messages import Connected, Deadline, OnlineCount, Owned, Publish, Schedule, StoreHealth
from actors.settings import GatewaySettings
from protocol.outbound import gateway_status_publication
from protocol.values import Publication


def _version() -> str:
    """The installed package's version (setup.cfg is the one place it is written)."""
    try:
        return metadata.version("autocore-gateway")
    except metadata.PackageNotFoundError:  # run from a checkout that was never pip-installed
        return "unknown"


VERSION = _version()


class Heartbeat(GatewayActor):
    name = "Heartbeat"

    def __init__(self, settings: GatewaySettings, mqtt: Any, scheduler: Any, owned: Any = None) -> None:
        super().__init__()
        self.owned = owned  # several instances: actors.rules.owned.OwnedBuckets; None: one instance
        self.settings = settings
        self.mqtt = mqtt
        self.scheduler = scheduler
        self.devices_online = 0
        self.storage = StoreHealth("ok")
        self.started = time.time()
        self._cpu_mark = (time.time(), time.process_time())

    def status(self, status: str, shared: bool = False) -> Publication:
        """This gateway's status publication; with several instances this
        instance's own, unless `shared` (the topic the devices watch)."""
        now = time.time()
        wall, cpu = self._cpu_mark
        cpu_now = time.process_time()
        cpu_percent = 100.0 * (cpu_now - cpu) / (now - wall) if now > wall else 0.0
        self._cpu_mark = (now, cpu_now)
        s = self.settings
        return gateway_status_publication(
            s.topic_prefix, status, s.gateway_id, now, round(now - self.started, 1), self.devices_online,
            round(rss_mb(), 1), round(cpu_percent, 1), VERSION, self._storage(),
            instance_id=s.instance_id if s.share_group and not shared else None,
        )

    def _storage(self) -> dict:
        h = self.storage
        out: dict = {"state": h.state}
        if h.state != "ok":
            out["since"] = h.since
            out["reason"] = h.reason
        if h.free_bytes is not None:
            out["free_mb"] = round(h.free_bytes / 1048576, 1)
        return out

    def handle(self, message: Any) -> Any:
        if isinstance(message, Connected):
            self._publish()
        elif isinstance(message, Deadline):
            self._publish()
        elif isinstance(message, Owned):
            # Bucket 0 just came to this instance: the shared status is its
            # to keep from now on (its previous keeper may be dead).
            self.mqtt.tell(Publish(self.status("online", shared=True)))
            self.counters["published_shared"] += 1
        elif isinstance(message, OnlineCount):
            self.devices_online = message.devices_online
        elif isinstance(message, StoreHealth):
            changed = message.state != self.storage.state
            self.storage = message
            if changed:
                self._publish()  # at once: whoever watches the gateway should know

        else:
            return super().handle(message)
        return None

    def _publish(self) -> None:
        self.mqtt.tell(Publish(self.status("online")))
        self.counters["published"] += 1
        if self.owned is not None and self.owned.acts_for_bucket(0, time.time()):
            self.mqtt.tell(Publish(self.status("online", shared=True)))
            self.counters["published_shared"] += 1
        self.scheduler.tell(Schedule("heartbeat", time.time() + self.settings.heartbeat_s, self.actor_ref))

    def state(self) -> dict:
        return {"devices_online": self.devices_online, "interval_s": self.settings.heartbeat_s,
                "rss_mb": round(rss_mb(), 1), "storage": self._storage()}
