"""The command lifecycle as a pure table; storage refuses anything else.

    pending -> queued -> sent -> (accepted) -> succeeded | failed
                              \\-> timeout     expired     cancelled
    (queued -> failed when a row can never be sent: its parameters are wrong)

`cancel_requested` is written by the Config App. The gateway answers it
with `cancelled` while the command has not been sent; once sent, the command
runs to its own end (it cannot be unsent), so the gateway writes back the
state it is really in.

Every state has one owner, the only party that moves a command into it
(`OWNER`): the client (the Config App, or `gateway command` in its place)
creates a command and asks to cancel it; the store takes a pending row up
(`queued`, its command feed's claim, so that two polls never take one row
twice); everything after is the device logic's in core, whose transitions
the store writes as they come and refuses into any state it does not own.
"""

from __future__ import annotations

from enum import StrEnum


class CommandStatus(StrEnum):
    PENDING = "pending"
    QUEUED = "queued"
    SENT = "sent"
    ACCEPTED = "accepted"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMEOUT = "timeout"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    CANCEL_REQUESTED = "cancel_requested"


S = CommandStatus

FINAL: frozenset[CommandStatus] = frozenset({S.SUCCEEDED, S.FAILED, S.TIMEOUT, S.EXPIRED, S.CANCELLED})

# Where each state may go next. A sent command is re-sent (sent -> sent)
# on retry and after a restart.
TRANSITIONS: dict[CommandStatus, frozenset[CommandStatus]] = {
    S.PENDING: frozenset({S.QUEUED, S.EXPIRED, S.CANCELLED, S.CANCEL_REQUESTED}),
    # queued -> failed: a row that can never be sent (bad parameters) fails at once.
    S.QUEUED: frozenset({S.SENT, S.FAILED, S.EXPIRED, S.CANCELLED, S.CANCEL_REQUESTED}),
    S.SENT: frozenset({S.SENT, S.ACCEPTED, S.SUCCEEDED, S.FAILED, S.TIMEOUT, S.CANCEL_REQUESTED}),
    S.ACCEPTED: frozenset({S.ACCEPTED, S.SUCCEEDED, S.FAILED, S.TIMEOUT, S.CANCEL_REQUESTED}),
    S.CANCEL_REQUESTED: frozenset(
        {S.CANCELLED, S.QUEUED, S.SENT, S.ACCEPTED, S.SUCCEEDED, S.FAILED, S.TIMEOUT, S.EXPIRED}
    ),
    S.SUCCEEDED: frozenset(),
    S.FAILED: frozenset(),
    S.TIMEOUT: frozenset(),
    S.EXPIRED: frozenset(),
    S.CANCELLED: frozenset(),
}

# States in which the gateway holds a command after a restart.
IN_FLIGHT: frozenset[CommandStatus] = frozenset({S.QUEUED, S.SENT, S.ACCEPTED})


def can_transition(current: CommandStatus | str, new: CommandStatus | str) -> bool:
    return CommandStatus(new) in TRANSITIONS[CommandStatus(current)]


def is_final(status: CommandStatus | str) -> bool:
    return CommandStatus(status) in FINAL


class Owner(StrEnum):
    CLIENT = "client"
    STORE = "store"
    DEVICE = "device"


OWNER: dict[CommandStatus, Owner] = {
    S.PENDING: Owner.CLIENT,
    S.CANCEL_REQUESTED: Owner.CLIENT,
    S.QUEUED: Owner.STORE,
    **{status: Owner.DEVICE for status in (S.SENT, S.ACCEPTED, S.SUCCEEDED, S.FAILED, S.TIMEOUT, S.EXPIRED,
                                           S.CANCELLED)},
}


def owned_by(status: CommandStatus | str, owner: Owner) -> bool:
    """Whether `owner` may move a command into `status` (an unknown status: no one)."""
    try:
        return OWNER[CommandStatus(status)] is owner
    except ValueError:
        return False
