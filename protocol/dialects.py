"""What differs between the dialects beyond their topics and payloads: how
often a device reports, which devices refuse the other dialect's messages,
and how a command is planned and encoded for a device of either dialect.

The one module above which nothing branches on a dialect (DESIGN.md): the
device logic and the command encoder call these with the device's dialect
and act on what comes back.
"""

from __future__ import annotations

from collections.abc import Mapping

from protocol import fw22, outbound
from protocol.values import CommandSpec, Dialect, Encoding, Message, Publication

V1_DEFAULT_PERIOD_S = 5.0  # a v1 device that announced no status_interval


def parse_dialect(text: str | None) -> Dialect:
    """A stored dialect; anything unknown is v1, the gateway's own."""
    try:
        return Dialect(text) if text else Dialect.V1
    except ValueError:
        return Dialect.V1


def parse_encoding(text: str | None) -> Encoding:
    try:
        return Encoding(text) if text else Encoding.JSON
    except ValueError:
        return Encoding.JSON


def report_period(dialect: str, device_type: str | None, status_interval: float | None,
                  fw22_periods: Mapping[str, float], fw22_default: float) -> float:
    """How often a device says it is alive: a 2.2 board at the period of its
    type (configured: the boards announce none), a v1 device at the
    status_interval it announced."""
    if dialect == Dialect.FW22:
        return fw22_periods.get(device_type or "", fw22_default)
    return status_interval or V1_DEFAULT_PERIOD_S


def locks_dialect(dialect: str, boot_id: int | None) -> bool:
    """A device that has spoken v1 with a boot_id is not turned into a 2.2
    device by a 2.2 message: the 2.2 boards share one broker account, so
    such a message could come from any of them (PROTOCOL.md, "Firmware 2.2
    dialect"). Only the operator changes its dialect."""
    return may_lock(dialect) and boot_id is not None


def may_lock(dialect: str) -> bool:
    """Whether a device of `dialect` locks it once it has a boot_id."""
    return dialect == Dialect.V1


def refused_when_locked(dialect: str) -> bool:
    """Whether a message of `dialect` is refused by a device that `locks_dialect`."""
    return dialect == Dialect.FW22


def locking_boot_id(msg: Message) -> int | None:
    """The boot_id by which a message locks its device's dialect (a v1
    message's: top level, announce, availability), or None."""
    if msg.dialect != Dialect.V1:
        return None
    if msg.boot_id is not None:
        return msg.boot_id
    if msg.facts is not None and msg.facts.boot_id is not None:
        return msg.facts.boot_id
    return msg.availability.boot_id if msg.availability is not None else None


def command_plan(dialect: str, spec: CommandSpec, prefix: str, gateway_id: str) -> fw22.Fw22Plan | None:
    """How `spec` is carried out on a device of `dialect`: a 2.2 plan (the
    boards never answer, so it says how the command is confirmed), or None
    for a v1 device, which answers. Raises Rejected for a row that can
    never be sent."""
    if dialect == Dialect.FW22:
        return fw22.plan_command(spec)
    outbound.command_publication(prefix, spec, 1, spec.created_at, gateway_id)  # refuses what cannot be sent
    return None


def command_publications(dialect: str, encoding: str, spec: CommandSpec, attempt: int, now: float,
                         prefix: str, gateway_id: str) -> list[Publication]:
    """What the gateway publishes for one attempt of `spec`. Raises Rejected
    or ValueError for a row `command_plan` should have refused."""
    if dialect == Dialect.FW22:
        publication = fw22.plan_command(spec).publication(gateway_id)
        return [publication] if publication is not None else []
    return [outbound.command_publication(prefix, spec, attempt, now, gateway_id, Encoding(encoding))]
