"""DeviceLogic's inputs as the tests write them: the logic takes the shapes
the Router sends (`DeviceMessage` around a decoded `Message`, `Seen`) and
starts from a `KnownDevice`; these build them from a few words."""

from __future__ import annotations

from typing import Any

from actors.messages import DeviceMessage, KnownDevice, Seen, Token
from actors.rules.device import DeviceLogic, DeviceRules, DeviceStep
from protocol.values import Dialect, Encoding, Kind, Message

TOKEN = Token(0, 1, 1)


def logic(uuid: str, rules: DeviceRules, *, plan: Any = None, dialect: str | None = None, **known: Any) -> DeviceLogic:
    """A device's logic; given any of KnownDevice's fields (`dialect` for
    its `protocol`), as the database knew it, else never seen."""
    if dialect is not None:
        known["protocol"] = dialect
    record = KnownDevice(uuid, **known) if known else None
    return DeviceLogic(uuid, rules, record, plan=plan)


def message(dev: DeviceLogic, now: float, received_at: float, dialect: str, encoding: str, kind: str, *,
            clock_skew: int = 0, rows: tuple = (), token: Token = TOKEN, **fields: Any) -> DeviceStep:
    msg = Message(dev.uuid, Dialect(dialect), Kind(kind), Encoding(encoding), **fields)
    return dev.message(now, DeviceMessage(msg, received_at, token, rows, clock_skew))


def seen(dev: DeviceLogic, now: float, received_at: float, count: int, dialect: str, encoding: str,
         seqs: tuple = (), relay_states: tuple = (), clock_skew: int = 0,
         protocol_version: str | None = None) -> DeviceStep:
    return dev.seen(now, Seen(received_at, count, dialect, encoding, protocol_version, tuple(seqs),
                              tuple(relay_states), clock_skew))
