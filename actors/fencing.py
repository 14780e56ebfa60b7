"""The link core's actors send to the store through, when several instances
share the devices (issue 13): each device write leaves stamped with the
epoch of its bucket's lease as this instance holds it at that moment (the
moment the device actor decided), so the store applies it only while that
lease still holds (actors/db_writer.py). A write decided while the lease is
not safe to act on carries `NOT_OWNED`, which no lease has: only its rows
and its last_seen (facts any instance may store) are kept."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from actors.channel import Channel, StoreLink
from actors.messages import DeviceWrite
from actors.rules.owned import OwnedBuckets

NOT_OWNED = -1


class FencingStoreLink(StoreLink):
    def __init__(self, channel: Channel, owned: OwnedBuckets) -> None:
        super().__init__(channel)
        self.owned = owned

    def send(self, message: Any) -> None:
        if isinstance(message, DeviceWrite) and message.epoch is None:
            epoch = self.owned.epoch_of(message.uuid, time.time())
            message = dataclasses.replace(message, epoch=NOT_OWNED if epoch is None else epoch)
        super().send(message)
