"""What a command becomes on the wire, and the plan that says how it is
confirmed: protocol/dialects.py does what differs by the device's dialect
(v1 devices answer; firmware 2.2 boards never do, so their commands are
confirmed by the relay states they report, or run as heartbeat holds); this
turns a 2.2 plan into the command window's `Plan`.
"""

from __future__ import annotations

import logging

from actors.rules.commands import DEFAULT_PLAN, Plan
from actors.rules.device import DeviceLogic
from actors.settings import GatewaySettings
from protocol import dialects, fw22
from protocol.values import CommandSpec, Publication, Rejected

logger = logging.getLogger("autocore.device")


class CommandEncoder:
    def __init__(self, settings: GatewaySettings) -> None:
        self.prefix = settings.topic_prefix
        self.gateway_id = settings.gateway_id

    def plan(self, dialect: str, spec: CommandSpec) -> Plan:
        """How `spec` is carried out; a row that cannot be sent fails at once."""
        try:
            planned = dialects.command_plan(dialect, spec, self.prefix, self.gateway_id)
            return DEFAULT_PLAN if planned is None else self._fw22_plan(planned)
        except Rejected as exc:
            return Plan(error=exc.detail or exc.reason)

    @staticmethod
    def _fw22_plan(p: fw22.Fw22Plan) -> Plan:
        channel = p.channel
        if p.kind is fw22.PlanKind.HOLD:
            return Plan(retry=False, hold_s=p.hold_s, hold_channel=_one_relay(channel), silent=True)
        if p.kind is fw22.PlanKind.RELAY_SET and p.command == "toggle":
            return Plan(retry=False, toggle=_one_relay(channel), silent=True)
        if p.kind is fw22.PlanKind.RELAY_SET and channel is not None:
            return Plan(retry=p.retry_allowed, confirm=(channel, bool(p.expected_state)), silent=True)
        return Plan(retry=p.retry_allowed, silent=True)

    def __call__(self, logic: DeviceLogic, spec: CommandSpec, attempt: int, now: float) -> list[Publication]:
        try:
            return dialects.command_publications(logic.dialect, logic.encoding, spec, attempt, now, self.prefix,
                                                 self.gateway_id)
        except (Rejected, ValueError) as exc:
            # plan() let it through, so this is a bug worth a loud line; the
            # command then ends in timeout, never silently.
            logger.error("command %s for %s cannot be encoded: %s", spec.id, spec.device_uuid, exc)
            return []

    def heartbeat(self, spec: CommandSpec, channel: int, sequence: int, now: float) -> Publication:
        return fw22.heartbeat_publication(spec.device_uuid, channel, sequence, self.gateway_id, now)


def _one_relay(channel: int | str | None) -> int:
    """A hold or a toggle names one relay (fw22.plan_command refuses "all" for both)."""
    if not isinstance(channel, int):
        raise ValueError(f"a hold or toggle needs one relay number, got {channel!r}")
    return channel
