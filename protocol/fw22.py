"""Firmware 2.2 dialect: the AutoCore boards in the field (PROTOCOL.md,
"Firmware 2.2 dialect").

The public surface of the dialect, split in two modules to stay short:
`fw22_inbound` (topics, subscriptions, payload decoding) and `fw22_outbound`
(command planning and the encoders of what the gateway sends to a 2.2
board). Each module's docstring lists the rules it adds where PROTOCOL.md is
silent.
"""

from protocol.fw22_inbound import (
    GATEWAY_USER,
    LEVELS,
    OBSERVED,
    PREFIX,
    RELAY_EVENTS,
    RefusedCommand,
    decode,
    is_own_relay_command,
    level_source,
    parse_topic,
    refused_command,
    subscriptions,
)
from protocol.fw22_outbound import (
    COMMAND_QOS,
    HEARTBEAT_QOS,
    MAX_CHANNEL,
    MAX_PAYLOAD,
    PROTOCOL_VERSION,
    RELAY_CONTROL,
    Fw22Plan,
    PlanKind,
    heartbeat_publication,
    other_command_publication,
    plan_command,
    relay_set_publication,
)

__all__ = [
    "COMMAND_QOS",
    "GATEWAY_USER",
    "HEARTBEAT_QOS",
    "LEVELS",
    "MAX_CHANNEL",
    "MAX_PAYLOAD",
    "OBSERVED",
    "PREFIX",
    "PROTOCOL_VERSION",
    "RELAY_CONTROL",
    "RELAY_EVENTS",
    "Fw22Plan",
    "PlanKind",
    "RefusedCommand",
    "decode",
    "heartbeat_publication",
    "is_own_relay_command",
    "level_source",
    "other_command_publication",
    "parse_topic",
    "plan_command",
    "refused_command",
    "relay_set_publication",
    "subscriptions",
]
