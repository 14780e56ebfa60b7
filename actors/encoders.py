"""What a command becomes on the wire, by the device's dialect.

The one place above protocol/ that looks at a device's dialect: it picks the
encoder (and the plan that says how the command is confirmed).
"""

from __future__ import annotations

import logging

from actors.rules.commands import DEFAULT_PLAN, Plan
from actors.rules.device import DeviceLogic
from protocol import outbound
from protocol.values import CommandSpec, Encoding, Publication, Rejected

logger = logging.getLogger("autocore.device")


class CommandEncoder:
    """Turns a command into what is published, by the device's dialect."""

    def __init__(self, settings: Any) -> None:
        self.prefix = settings.topic_prefix
        self.gateway_id = settings.gateway_id

    def plan(self, dialect: str, spec: CommandSpec) -> Plan:
        return DEFAULT_PLAN

    def __call__(self, logic: DeviceLogic, spec: CommandSpec, attempt: int, now: float) -> list[Publication]:
        try:
            return [outbound.command_publication(self.prefix, spec, attempt, now, self.gateway_id,
                                                 Encoding(logic.encoding))]
        except Rejected as exc:
            logger.error("command %s for %s cannot be sent: %s", spec.id, spec.device_uuid, exc.detail)
            return []
